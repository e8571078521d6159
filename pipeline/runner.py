"""The only module that talks to Ray: it plans, starts or joins Ray, and runs the passes.

* Pass 1 maps ``DocumentPass`` over the pending shards with an actor pool (each actor
  loads the stage models once). A shard's per-document stages run fused inside one
  call, as Ray Data would fuse consecutive CPU maps anyway, which keeps a shard's rows
  together so its outputs can be written atomically and named deterministically.
* Pass 2 groups the exact-dedup digests of all shards with a Ray Data ``groupby``
  (a distributed shuffle of 50-byte rows, never the texts) and writes, per shard, the
  ids to drop.
* Pass 3 maps ``finalize_shard`` over the shards.

Resume: every pass skips what its markers say is finished, so rerunning a command
after a crash finishes only the missing shards and gives the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.config import ConfigError, CurateConfig
from pipeline.curate import (
    DocumentPass,
    GlobalStep,
    RunLayout,
    documents_fingerprint,
    documents_pass_done,
    finalize_shard,
    input_changes,
    step_fingerprints,
)
from pipeline.global_steps import build_global_steps, decision_done
from pipeline.ledger import (
    build_ledger,
    merge_language_counts,
    merge_stage_counts,
    render_funnel,
)
from pipeline.safe_paths import delete_owned_files
from pipeline.shards import (
    Shard,
    list_input,
    plan_shards,
    read_json,
    resolve_filesystem,
    write_bytes_atomic,
    write_json_atomic,
)
from pipeline.task_rounds import cluster_cpus
from stages import STAGES
from stages.base import missing_requirements

log = logging.getLogger("pipeline")


@dataclass
class CurateResult:
    output_dir: str
    ledger: dict[str, Any]
    shards_run: int
    shards_skipped: int
    seconds: float
    input_changes: list[str] = field(default_factory=list)
    """What changed in the input since the shards' done markers were written (those
    shards were run again); empty on a first run or an unchanged rerun."""


def plan(config: CurateConfig) -> list[Shard]:
    """List every input and group the files into shards; fails before Ray starts."""
    listings = []
    for index, spec in enumerate(config.inputs):
        try:
            _, files = list_input(spec.path, spec.name or spec.path, spec.follow_symlinks_outside)
        except (FileNotFoundError, OSError) as exc:
            raise ConfigError(f"inputs[{index}].path: {exc}") from exc
        listings.append(files)
    return plan_shards(listings, config.shard_input_bytes)


def check_requirements(config: CurateConfig) -> None:
    """Name the pip package a stage lacks on the driver, before any worker starts."""
    for name, stage_class in STAGES.items():
        if getattr(config.stages, name) is None:
            continue
        missing = missing_requirements(stage_class)
        if missing:
            raise ConfigError(f"stages.{name} needs: pip install {' '.join(missing)}")


LOOPBACK = "127.0.0.1"
EMBEDDED_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _loopback_only() -> None:
    """Keep an embedded Ray on 127.0.0.1. Ray's servers bind to loopback only when the
    node address is 127.0.0.1, and Ray swaps 127.0.0.1 for the machine's address unless
    multi-node mode is off: its flag is read from the environment when ``ray`` is first
    imported (so the driver's copy is set here too) and by every process Ray starts."""
    from ray._private import ray_constants

    os.environ.update(EMBEDDED_LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False


def init_ray(
    address: str | None,
    num_cpus: int | None = None,
    object_store_memory_bytes: int | None = None,
) -> None:
    """Join the cluster at ``address`` (or $RAY_ADDRESS); otherwise start Ray in-process.
    Every command that uses Ray starts it here."""
    import ray
    from ray.data import DataContext

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's own INFO lines (start-up, each dataset's plan and timing) only at the user's
    # level: the CLI sets WARNING unless -v; its one line per pass stays.
    ray_level = max(logging.INFO, logging.getLogger().getEffectiveLevel())
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            # Under `ray job submit` the job's runtime env (working dir) applies; add nothing.
            ray.init(address=address, logging_level=ray_level)
            log.info("ray: joined the Ray cluster at %s", address)
        else:
            # A token file left by another Ray must not turn auth on for an embedded
            # session, and address="local" keeps a cluster someone started on this
            # machine from being joined by accident (--address / RAY_ADDRESS do that).
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            _loopback_only()
            ray.init(
                address="local",
                num_cpus=num_cpus,
                object_store_memory=object_store_memory_bytes,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                logging_level=ray_level,
            )
            log.info("ray: started a local Ray (%s CPUs)", ray.cluster_resources().get("CPU"))
    logging.getLogger("ray.data").setLevel(ray_level)
    DataContext.get_current().enable_progress_bars = os.environ.get("PIPELINE_PROGRESS", "1") != "0"


def _documents_pass(config: CurateConfig, shards: list[Shard], pending: list[int]) -> None:
    import ray

    if not pending:
        return
    workers = min(len(pending), cluster_cpus())
    started = time.monotonic()
    dataset = ray.data.from_items([{"shard": index} for index in pending])
    summaries = dataset.map_batches(
        DocumentPass,
        fn_constructor_kwargs={"config": config, "shards": shards},
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
        num_cpus=1,
    ).take_all()
    seconds = time.monotonic() - started
    read = sum(row["read"] for row in summaries)
    log.info(
        "documents pass: %d shards, %d documents read, %d kept in %.1f s (%.1f documents/s)",
        len(summaries),
        read,
        sum(row["documents"] for row in summaries),
        seconds,
        read / max(seconds, 1e-9),
    )


DECIDE_ATTEMPTS = 3


def _with_retries(name: str, run_pass: Any) -> None:
    """Run a pass, again if Ray loses it. Ray Data retries lost tasks itself, but a node
    that dies mid-shuffle can also surface as a task error (its log files vanish under a
    running task). Every pass is idempotent (atomic writes, markers, fingerprints) and
    each retry skips what its markers say is done, so running it again is always safe."""
    from ray.exceptions import RayError

    for attempt in range(1, DECIDE_ATTEMPTS + 1):
        try:
            run_pass()
            return
        except RayError as exc:
            if attempt == DECIDE_ATTEMPTS:
                raise
            log.warning("%s: attempt %d failed (%s); retrying", name, attempt, type(exc).__name__)


def _global_steps(
    layout: RunLayout, shards: list[Shard], steps: list[GlobalStep], fingerprints: list[str]
) -> None:
    """Decide each global step in order, on what the steps before it kept."""
    for position, (step, fingerprint) in enumerate(zip(steps, fingerprints, strict=True)):
        if decision_done(layout, step.name, fingerprint):
            continue
        _with_retries(
            step.name,
            lambda step=step, position=position, fingerprint=fingerprint: step.decide(
                layout,
                shards,
                steps[:position],
                fingerprints[:position],
                fingerprint,
                step.settings,
            ),
        )
        summary = read_json(
            layout.filesystem,
            posixpath.join(layout.decision_dir(step.name, fingerprint), "_SUCCESS"),
        )
        log.info("%s: decided (%s)", step.name, summary)


def _finalize_pass(
    layout: RunLayout,
    pending: list[int],
    steps: list[GlobalStep],
    fingerprints: list[str],
    run_fingerprint: str,
) -> None:
    import ray

    if not pending:
        return

    def finalize(batch: pa.Table) -> pa.Table:
        stats = [
            finalize_shard(layout, index, steps, fingerprints, run_fingerprint)
            for index in batch["shard"].to_pylist()
        ]
        return pa.table({"shard": [s["shard"] for s in stats]})

    ray.data.from_items([{"shard": index} for index in pending]).map_batches(
        finalize, batch_size=1, batch_format="pyarrow", num_cpus=0.5
    ).take_all()


def _finalized(layout: RunLayout, shard: int, fingerprint: str | None) -> bool:
    stats = read_json(layout.filesystem, layout.stats(shard))
    if stats is None or stats.get("fingerprint") != fingerprint:
        return False
    if stats["docs"]["rows"] == 0:  # every document dropped: no zero-row file written
        return True
    return layout.filesystem.get_file_info(layout.docs(shard)).type == pafs.FileType.File


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dumps, e.g. ``stages.langid.
    min_score: 0.65 -> 0.5``, so a refusal says which key to look at."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        nested = (config_differences(old.get(k), new.get(k), f"{prefix}{k}.") for k in keys)
        return [difference for part in nested for difference in part]
    if old == new:
        return []
    return [f"{prefix.rstrip('.')}: {json.dumps(old)} -> {json.dumps(new)}"]


def _claim_output_dir(layout: RunLayout, config: CurateConfig, overwrite: bool) -> None:
    """A folder belongs to one configuration: refuse to mix outputs of two. With
    ``overwrite``, only the files a curation run writes are deleted (RunLayout.owns);
    anything else in the folder stays, and is named in the log."""
    fs = layout.filesystem
    run_file = layout.path("run.json")
    previous = read_json(fs, run_file)
    fingerprint = config.fingerprint()
    if previous is not None and previous.get("config_fingerprint") != fingerprint:
        if not overwrite:
            differences = config_differences(previous.get("config"), config.model_dump(mode="json"))
            shown = ", ".join(differences[:5]) + (" ..." if len(differences) > 5 else "")
            which = f" (differs in {shown})" if differences else " (an input it names changed)"
            raise ConfigError(
                f"output_dir {config.output_dir} holds a run of another configuration{which}; "
                "choose a new output_dir or pass --overwrite"
            )
        deleted, foreign = delete_owned_files(fs, layout.root, RunLayout.owns)
        log.info("--overwrite: deleted %d files of the previous run", deleted)
        if foreign:
            log.warning(
                "--overwrite kept %d files this project did not write: %s",
                len(foreign),
                ", ".join(foreign[:10]),
            )
    try:
        write_json_atomic(
            fs,
            run_file,
            {"config_fingerprint": fingerprint, "config": config.portable_dump()},
        )
    except OSError as exc:  # a file in the way, no permission: a config problem, pre-Ray
        raise ConfigError(f"output_dir: cannot write to {config.output_dir}: {exc}") from exc


_SHARD_FILE = re.compile(r"(?:[a-z_]+-)?(?:shard-)?(\d{5})\.(?:parquet|json)")


def _invalidate_changed_shards(
    layout: RunLayout, config: CurateConfig, shards: list[Shard]
) -> list[str]:
    """Compare each done shard's recorded input files with the plan: a shard whose files
    were added, removed or modified loses its pass-1 marker (it runs again, and every
    global decision and final shard after it, through the fingerprint chain); the
    files of shards the plan no longer has are deleted. Returns what changed."""
    listing_path = layout.path("work", "inputs.json")  # source -> mtime_ns, last run's
    listed_before = read_json(layout.filesystem, listing_path)
    listed_now = {file.source: file.mtime_ns for shard in shards for file in shard.files}
    changes: list[str] = []
    if listed_before is not None:
        changes += [f"added {s}" for s in sorted(set(listed_now) - set(listed_before))]
        changes += [f"removed {s}" for s in sorted(set(listed_before) - set(listed_now))]
    for shard in shards:
        stats = documents_pass_done(layout, shard.index)
        if stats is None:
            continue
        filesystem, _ = resolve_filesystem(config.inputs[shard.input_index].path)
        found = input_changes(stats.get("inputs"), shard, filesystem, listed_before or {})
        if found:  # added and removed files are named above, once, not per shard
            changes += [c for c in found if not c.startswith(("added ", "removed "))]
            changes.append(f"shard {shard.index}: its input files changed, run again")
            layout.filesystem.delete_file(layout.work_stats(shard.index))
    dropped = set()
    for folder in ("docs", "stats", "rejects", "work/documents"):
        selector = pafs.FileSelector(layout.path(folder), allow_not_found=True)
        for entry in layout.filesystem.get_file_info(selector):
            match = _SHARD_FILE.fullmatch(posixpath.basename(entry.path))
            relative = posixpath.relpath(entry.path, layout.root)
            if match and int(match.group(1)) >= len(shards) and RunLayout.owns(relative):
                layout.filesystem.delete_file(entry.path)
                dropped.add(int(match.group(1)))
    changes.extend(
        f"shard {index}: no longer planned, its files deleted" for index in sorted(dropped)
    )
    for change in changes:
        log.warning("input changed since the last run: %s", change)
    write_json_atomic(layout.filesystem, listing_path, dict(sorted(listed_now.items())))
    return changes


def run_curate(
    config: CurateConfig, address: str | None = None, overwrite: bool = False
) -> CurateResult:
    """Plan, then run the three passes; returns the ledger (also written to disk)."""
    started = time.monotonic()
    problem = config.placement_problem()  # load_curate_config checks too; library callers
    if problem is not None:
        raise ConfigError(f"output_dir: {problem}")
    check_requirements(config)
    shards = plan(config)
    layout = RunLayout.for_output(config.output_dir)
    _claim_output_dir(layout, config, overwrite)
    changes = _invalidate_changed_shards(layout, config, shards)
    init_ray(address, config.ray.num_cpus, config.ray.object_store_memory_bytes)

    pending = [s.index for s in shards if documents_pass_done(layout, s.index) is None]
    log.info(
        "plan: %d input files in %d shards; %d to run, %d already done",
        sum(len(s.files) for s in shards),
        len(shards),
        len(pending),
        len(shards) - len(pending),
    )
    _with_retries(
        "documents pass",
        lambda: _documents_pass(
            config, shards, [i for i in pending if documents_pass_done(layout, i) is None]
        ),
    )
    pass_stats = [documents_pass_done(layout, s.index) for s in shards]
    if any(stats is None for stats in pass_stats):
        raise RuntimeError("documents pass finished without writing every shard")
    steps = build_global_steps(config)
    fingerprints = step_fingerprints(documents_fingerprint(pass_stats), steps)
    _global_steps(layout, shards, steps, fingerprints)
    final = fingerprints[-1] if fingerprints else documents_fingerprint(pass_stats)
    to_finalize = [s.index for s in shards if not _finalized(layout, s.index, final)]
    _with_retries(
        "finalize",
        lambda: _finalize_pass(
            layout,
            [i for i in to_finalize if not _finalized(layout, i, final)],
            steps,
            fingerprints,
            final,
        ),
    )
    log.info(
        "finalize: %d shards written, %d already done",
        len(to_finalize),
        len(shards) - len(to_finalize),
    )

    final_stats = [read_json(layout.filesystem, layout.stats(s.index)) for s in shards]
    stages = merge_stage_counts(
        (stats["stages"] for stats in final_stats), final_stats[0]["stage_order"]
    )
    written = sum(stats["docs"]["rows"] for stats in final_stats)
    ledger = build_ledger(stages, written)
    ledger["shards"] = len(shards)
    ledger["languages"] = merge_language_counts(stats.get("languages", {}) for stats in final_stats)
    for step, fingerprint in zip(steps, fingerprints, strict=True):
        # A step's own figures (template lines: the top removed lines) go under its entry.
        marker = posixpath.join(layout.decision_dir(step.name, fingerprint), "_SUCCESS")
        summary = read_json(layout.filesystem, marker) or {}
        if "report" in summary:
            ledger["stages"][step.name]["report"] = summary["report"]
    write_json_atomic(layout.filesystem, layout.path("ledger.json"), ledger)
    manifest = {
        "config_fingerprint": config.fingerprint(),
        "shards": [
            {"file": f"docs/shard-{s['shard']:05d}.parquet", **s["docs"]}
            for s in final_stats
            if s["docs"]["rows"]  # a shard that kept nothing has no file
        ],
        "documents": written,
    }
    write_json_atomic(layout.filesystem, layout.path("manifest.json"), manifest)
    write_bytes_atomic(layout.filesystem, layout.path("funnel.txt"), render_funnel(ledger).encode())
    return CurateResult(
        config.output_dir,
        ledger,
        len(pending),
        len(shards) - len(pending),
        time.monotonic() - started,
        changes,
    )
