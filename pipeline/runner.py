"""Curation on Ray: plan the shards, then run the three passes through ``ray_exec``.

* Pass 1 runs ``DocumentPass`` on every pending shard, largest first, as Ray tasks
  (``ray_exec.map_items``): each worker process builds the stages once (models load
  once per process) and runs a shard's per-document stages on its main thread, then
  writes the shard's outputs atomically under deterministic names.
* Pass 2 decides the global steps (exact dedup, MinHash, template lines) in rounds of
  tasks (declared in ``pipeline/global_steps.py``, run by ``pipeline/round_driver.py``),
  on digests and signatures, never the texts; small ones meet in the driver.
* Pass 3 runs ``finalize_shard`` per shard on the same worker processes.

Resume: every pass skips what its markers say is finished, so rerunning a command
after a crash finishes only the missing shards and gives the same bytes.

An embedded one-CPU run (``ray.executor: auto``) starts no Ray: ``ray_exec`` runs the
same three passes in this process, with the same outputs.
"""

from __future__ import annotations

import functools
import json
import logging
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from pipeline import ray_exec
from pipeline.config import ConfigError, CurateConfig, without_run_settings
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
from pipeline.global_steps import build_global_steps
from pipeline.ledger import (
    build_ledger,
    merge_language_counts,
    merge_stage_counts,
    render_funnel,
)
from pipeline.ray_exec import init_ray, map_items
from pipeline.round_driver import decision_done, decision_summary
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
    listings, filesystems = [], []
    for index, spec in enumerate(config.inputs):
        try:
            filesystem, files = list_input(
                spec.path, spec.name or spec.path, spec.follow_symlinks_outside
            )
        except (FileNotFoundError, OSError) as exc:
            raise ConfigError(f"inputs[{index}].path: {exc}") from exc
        listings.append(files)
        filesystems.append(filesystem)
    return plan_shards(
        listings,
        config.shard_input_bytes,
        filesystems,
        config.min_piece_bytes,
        config.lead_shard_bytes,
    )


def check_requirements(config: CurateConfig) -> None:
    """Name the pip package a stage lacks on the driver, before any worker starts."""
    for name, stage_class in STAGES.items():
        if getattr(config.stages, name) is None:
            continue
        missing = missing_requirements(stage_class)
        if missing:
            raise ConfigError(f"stages.{name} needs: pip install {' '.join(missing)}")


def documents_pass_resources(config: CurateConfig) -> tuple[float, int | None]:
    """(CPUs, memory bytes) of one documents-pass task: the most any enabled stage
    declares, since the stages of a shard run one after another in the task; at least
    one CPU (the reader and writer are in the task too)."""
    enabled = [name for name in STAGES if getattr(config.stages, name) is not None]
    declared = [STAGES[name].resources for name in enabled]
    memory = max((r.memory_bytes for r in declared if r.memory_bytes), default=None)
    return max([1.0, *(r.cpus for r in declared)]), memory


def document_worker(config: CurateConfig, shards: list[Shard]) -> Callable[[int], dict]:
    """Built once per worker process: the stages (and their models) for every shard."""
    return DocumentPass(config, shards).run


def _documents_pass(config: CurateConfig, shards: list[Shard], pending: list[int]) -> None:
    if not pending:
        return
    started = time.monotonic()
    by_index = {shard.index: shard for shard in shards}
    cpus, memory = documents_pass_resources(config)
    summaries = map_items(
        "documents pass",
        pending,
        factory=functools.partial(document_worker, config, shards),
        cpus=cpus,
        memory=memory,
        sizes=[by_index[index].size_bytes for index in pending],
        count_key="read",
        count_label="documents",
    )
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
    """Run a pass, again if Ray loses it. Ray retries lost tasks itself, but a node
    that dies mid-shuffle can also surface as a task error (its log files vanish under a
    running task). Every pass is idempotent (atomic writes, markers, fingerprints) and
    each retry skips what its markers say is done, so running it again is always safe."""
    for attempt in range(1, DECIDE_ATTEMPTS + 1):
        try:
            run_pass()
            return
        except Exception as exc:
            if attempt == DECIDE_ATTEMPTS or not ray_exec.is_ray_error(exc):
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
        log.info("%s: decided (%s)", step.name, decision_summary(layout, step.name, fingerprint))


FINALIZE_CPUS = 1.0  # a whole CPU: the documents pass's worker processes take it, none new


def _finalize_pass(
    layout: RunLayout,
    pending: list[int],
    steps: list[GlobalStep],
    fingerprints: list[str],
    run_fingerprint: str,
) -> None:
    """Pass 3 on the worker processes the documents pass started (same task pool)."""
    finalize = functools.partial(
        finalize_shard, layout, steps=steps, fingerprints=fingerprints,
        run_fingerprint=run_fingerprint,
    )  # fmt: skip
    map_items("finalize", pending, function=finalize, cpus=FINALIZE_CPUS)


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
            old_settings = without_run_settings(previous.get("config") or {})
            differences = config_differences(old_settings, config.output_settings())
            shown = ", ".join(differences[:5]) + (" ..." if len(differences) > 5 else "")
            # Model and eval file digests are in the dump, so equal settings mean the
            # fingerprint was made another way: by another version of this project.
            which = (
                f" (differs in {shown})"
                if differences
                else " (the same settings, fingerprinted by another version of this project)"
            )
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
    """Plan, then run the three passes; returns the ledger (also written to disk). On Ray
    or in this process, as ``ray.executor`` says (``ray_exec.init_ray``)."""
    with ray_exec.executor_scope():
        return _run_curate(config, address, overwrite)


def _run_curate(config: CurateConfig, address: str | None, overwrite: bool) -> CurateResult:
    started = time.monotonic()
    problem = config.placement_problem()  # load_curate_config checks too; library callers
    if problem is not None:
        raise ConfigError(f"output_dir: {problem}")
    check_requirements(config)
    shards = plan(config)
    layout = RunLayout.for_output(config.output_dir)
    _claim_output_dir(layout, config, overwrite)
    changes = _invalidate_changed_shards(layout, config, shards)
    init_ray(
        address,
        config.ray.num_cpus,
        config.ray.object_store_memory_bytes,
        config.ray.executor,
    )

    pending = [s.index for s in shards if documents_pass_done(layout, s.index) is None]
    log.info(
        "plan: %d input files in %d shards; %d to run, %d already done",
        len({file.source for shard in shards for file in shard.files}),
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
