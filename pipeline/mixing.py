"""Mixing and packing a curriculum: the plain per-phase work that ``token_runner`` runs.

For each phase of a mix file, in order:

1. **Plan** (driver): sample every component from the tokenized document index
   (``stages/mix.py``) and write ``OUT/plans/<phase>.parquet``: one row per unit (a
   document, or a prefix of whole ``seq_len`` pieces of a long one) in training order,
   with its packing window. A pure function of the index, the mix file and the seed.
2. **Slice** (per tokenized shard): cut each planned unit's tokens out of the shard
   (``slice_units``), tagged with its window.
3. **Pack** (per window): best-fit-decreasing into rows of ``seq_len``
   (``stages/pack.py``), written as ``OUT/packed/<phase>/shard-<window>.arrow``.
4. **Manifest**: ``PhaseManifest`` (``model_hooks/shard_format.py``) with the declared
   and realised share of every component, epochs, padding and split fractions.

Steps 2 and 3 are a shuffle by window: on Ray a ``groupby(window)``, here a local loop
(``pack_phase_locally``) that tests and benchmarks use. Both give the same bytes,
because each window's output depends only on its units, sorted by plan position.
A phase whose manifest already carries this configuration's fingerprint is skipped. A
phase cut short by a crash keeps the windows it finished: each packed window leaves a
stats marker (``<phase>/.windows/<window>.json``, written after its shard), and a rerun
with the same fingerprint (``<phase>/.progress.json``) packs only the missing windows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from model_hooks.shard_format import (
    ComponentShare,
    PhaseManifest,
    ShardEntry,
    narrow_tokens,
    read_manifest,
    shard_metadata,
    write_manifest,
    write_shard,
)
from pipeline.config import ConfigError
from pipeline.mix_config import Mix, Phase, check_against_data
from pipeline.safe_paths import delete_owned_files, inside
from pipeline.shards import parquet_bytes, resolve_filesystem, write_json_atomic
from pipeline.tokenizing import read_index, read_tokenized_manifest
from stages.mix import PLAN_SCHEMA, phase_plan, stable_seed
from stages.pack import UNITS_SCHEMA, pack_window, slice_units

log = logging.getLogger(__name__)

PROGRESS_NAME, WINDOWS_DIR = ".progress.json", ".windows"
LOCAL = pafs.LocalFileSystem()  # packed phases are local files (written with pa.OSFile)
SHARE_WARNING = 0.01  # the summary flags a realised share further than this from its weight

WINDOW_STATS_SCHEMA = pa.schema(
    [
        ("phase", pa.string()),
        ("window", pa.int32()),
        ("file", pa.string()),
        ("rows", pa.int64()),
        ("tokens", pa.int64()),
        ("sha256", pa.string()),
        ("padding_tokens", pa.int64()),
        ("documents", pa.int64()),
        ("split_documents", pa.int64()),
    ]
)


@dataclass(frozen=True)
class PhaseJob:
    """Everything a worker needs to slice or pack one phase (small, picklable)."""

    phase: str
    seq_len: int
    pad_id: int
    seed: int
    tokenized_dir: str
    plan_path: str
    phase_dir: str
    done_windows: tuple[int, ...] = ()  # packed before a crash: not sliced or packed again
    vocab_size: int = 2**32  # the shard's token type follows it (uint16 when it fits)
    metadata: tuple[tuple[str, str], ...] = ()  # the shards' schema metadata


def packed_metadata(tokenized: dict, phase: Phase) -> dict[str, str]:
    """The schema metadata of a phase's shards: project version, tokenizer, phase."""
    tokenizer = tokenized.get("tokenizer", "tokenizer.json")
    metadata = shard_metadata(tokenizer, tokenized["tokenizer_sha256"], tokenized["vocab_size"])
    return metadata | {"phase": phase.name, "seq_len": str(phase.seq_len)}


def plan_path(out_dir: str, phase: str) -> str:
    """``OUT/plans/<phase>.parquet``; ValueError if a phase name would leave OUT/plans."""
    return inside(str(Path(out_dir) / "plans"), f"{phase}.parquet")


def phase_dir(out_dir: str, phase: str) -> str:
    """``OUT/packed/<phase>``; ValueError if a phase name would leave OUT/packed."""
    return inside(str(Path(out_dir) / "packed"), phase)


def write_plan(path: str, plan: pa.Table) -> None:
    """Deterministic bytes: the same plan is the same file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_bytes(parquet_bytes(plan))
    temporary.replace(target)


def build_plan(
    mix: Mix, phase: Phase, index: pa.Table, masks: list[np.ndarray], seed: int
) -> pa.Table:
    components = [(c.config, m) for c, m in zip(phase.components, masks, strict=True)]
    window_tokens = mix.config.packing.window_sequences * phase.seq_len
    return phase_plan(
        index, components, phase.budget_tokens, phase.seq_len, window_tokens, seed, phase.name
    )


def slice_shard(jobs: list[PhaseJob], shard: int, file: str) -> pa.Table:
    """The units every phase of ``jobs`` takes from one tokenized shard, read once
    (``UNITS_SCHEMA`` plus a ``phase`` column)."""
    filesystem, root = resolve_filesystem(jobs[0].tokenized_dir) if jobs else (None, "")
    tokens = None
    tables = [UNITS_SCHEMA.append(pa.field("phase", pa.string())).empty_table()]
    for job in jobs:
        filters = [("shard", "=", shard)]
        if job.done_windows:
            filters.append(("window", "not in", list(job.done_windows)))
        plan = pq.read_table(job.plan_path, filters=filters, schema=PLAN_SCHEMA)
        if plan.num_rows == 0:
            continue
        if tokens is None:
            path = posixpath.join(root, file)
            tokens = pq.read_table(path, columns=["tokens"], filesystem=filesystem)["tokens"]
        units = slice_units(tokens, plan)
        tables.append(units.append_column("phase", pa.array([job.phase] * units.num_rows)))
    return pa.concat_tables(tables)


def pack_and_write(jobs: list[PhaseJob], units: pa.Table) -> pa.Table:
    """Pack one window of one phase and write its shard; one ``WINDOW_STATS_SCHEMA`` row."""
    job = next(j for j in jobs if j.phase == units.column("phase")[0].as_py())
    window = int(units.column("window")[0].as_py())
    seed = stable_seed(job.seed, job.phase, "rows", window)
    table, stats = pack_window(units.drop_columns(["phase"]), job.seq_len, job.pad_id, seed)
    table = narrow_tokens(table, job.vocab_size, dict(job.metadata))
    entry = write_shard(Path(job.phase_dir) / f"shard-{window:05d}.arrow", table)
    values = [
        job.phase, window, entry.file, entry.rows, entry.tokens, entry.sha256,
        stats.padding_tokens, stats.documents, stats.split_documents,
    ]  # fmt: skip
    row = dict(zip(WINDOW_STATS_SCHEMA.names, values, strict=True))
    write_json_atomic(LOCAL, str(window_marker(job.phase_dir, window)), row)  # "done"
    return pa.table([[v] for v in values], schema=WINDOW_STATS_SCHEMA)


def window_marker(directory: str, window: int) -> Path:
    return Path(directory) / WINDOWS_DIR / f"{window:05d}.json"


def finished_windows(directory: str, fingerprint: str) -> dict[int, dict[str, Any]]:
    """The windows a crashed run of this same configuration packed, by window; empty
    when the folder was started by another configuration (or never)."""
    try:
        progress = json.loads((Path(directory) / PROGRESS_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    if progress.get("fingerprint") != fingerprint:
        return {}
    found = {}
    for marker in sorted((Path(directory) / WINDOWS_DIR).glob("[0-9]*.json")):
        row = json.loads(marker.read_text())
        if (Path(directory) / row["file"]).is_file():
            found[int(row["window"])] = row
    return found


def pack_locally(jobs: list[PhaseJob], shards: list[dict[str, Any]]) -> pa.Table:
    """Slice every shard and pack every window in this process (tests, benchmarks)."""
    units = pa.concat_tables([slice_shard(jobs, s["shard"], s["file"]) for s in shards])
    keys = sorted(set(zip(units["phase"].to_pylist(), units["window"].to_pylist(), strict=True)))
    stats = [
        pack_and_write(
            jobs,
            units.filter(pc.and_(pc.equal(units["phase"], p), pc.equal(units["window"], w))),
        )
        for p, w in keys
    ]
    return pa.concat_tables([WINDOW_STATS_SCHEMA.empty_table(), *stats])


@dataclass(frozen=True)
class PhaseWork:
    """One phase being packed: its plan, selections and fingerprint."""

    phase: Phase
    job: PhaseJob
    plan: pa.Table
    masks: list[np.ndarray]
    fingerprint: str
    resumed: dict[int, dict[str, Any]]  # windows packed before a crash: their stats rows

    @property
    def pending(self) -> bool:
        windows = set(pc.unique(self.plan.column("window")).to_pylist())
        return bool(windows - set(self.resumed))


def phase_manifest(
    mix: Mix, work: PhaseWork, windows: pa.Table, prepared: Prepared
) -> PhaseManifest:
    """Declared against realised shares, epochs, padding and split fractions."""
    phase, plan, tokenized = work.phase, work.plan, prepared.tokenized
    stats = windows.filter(pc.equal(windows["phase"], phase.name)).sort_by("window").to_pydict()
    lengths = prepared.index.column("n_tokens").to_numpy().astype(np.int64)
    used = plan.column("token_end").to_numpy() - plan.column("token_start").to_numpy()
    total = max(1, int(used.sum()))
    components = []
    for component, mask in zip(phase.components, work.masks, strict=True):
        mine = pc.equal(plan.column("component"), component.config.name).to_numpy(
            zero_copy_only=False
        )
        tokens = int(used[mine].sum())
        components.append(
            ComponentShare(
                name=component.config.name,
                declared_share=round(component.config.weight, 9),
                realised_share=round(tokens / total, 9),
                tokens=tokens,
                documents=int(mine.sum()),
                epochs=round(tokens / max(1, int(lengths[mask].sum())), 6),
            )
        )
    rows = sum(stats["rows"])
    documents = max(1, sum(stats["documents"]))
    truncated = int((used < plan.column("doc_tokens").to_numpy()).sum())
    return PhaseManifest(
        phase=phase.name,
        seq_len=phase.seq_len,
        rope_theta=phase.rope_theta,
        pad_id=tokenized["pad_id"],
        eos_id=tokenized["eos_id"],
        vocab_size=tokenized["vocab_size"],
        seed=work.job.seed,
        shards=[
            ShardEntry(f, r, t, h)
            for f, r, t, h in zip(
                stats["file"], stats["rows"], stats["tokens"], stats["sha256"], strict=True
            )
        ],
        components=components,
        domains=sorted(set(plan.column("domain").to_pylist())),
        padding_fraction=round(sum(stats["padding_tokens"]) / max(1, rows * phase.seq_len), 9),
        split_document_fraction=round(sum(stats["split_documents"]) / documents, 9),
        extra={
            "fingerprint": work.fingerprint,
            "mix_file": mix.path.name,
            "budget_tokens": phase.budget_tokens,
            "scale": mix.scale,
            "window_sequences": mix.config.packing.window_sequences,
            "plan": f"../../plans/{phase.name}.parquet",
            "tokenized_fingerprint": tokenized["fingerprint"],
            "truncated_document_fraction": round(truncated / documents, 9),
        },
    )


def is_done(directory: str, fingerprint: str) -> bool:
    try:
        return read_manifest(directory).extra.get("fingerprint") == fingerprint
    except (FileNotFoundError, ValueError, KeyError):
        return False


# What the packer writes in a phase folder, relative to it: shards (and their
# temporaries), the manifest (and its temporary), the progress marker and the window
# markers under .windows/ (with the atomic writer's hidden temporaries).
_PACKER_PATH = re.compile(
    r"shard-\d{5}\.arrow(\.tmp)?|\.?manifest\.json(\.tmp)?|\.\.?progress\.json(\.tmp-[0-9a-f]+)?"
    r"|\.windows/\.?\d{5}\.json(\.tmp-[0-9a-f]+)?"
)


def reset_phase_dir(directory: str) -> None:
    """A phase folder holds one configuration's shards: remove what the packer wrote
    there before, and nothing else (``delete_owned_files``), so a user's file or link in
    the folder survives and is named in the log."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    _, foreign = delete_owned_files(
        LOCAL, directory, lambda path: bool(_PACKER_PATH.fullmatch(path))
    )
    if foreign:
        log.warning("phase folder %s: kept %d files the packer did not write: %s",
                    directory, len(foreign), ", ".join(foreign[:10]))  # fmt: skip


def claim_mix_out(out_dir: str | Path, mix: Mix, overwrite: bool) -> None:
    """An ``--out`` holds one mix file's curriculum: refuse another mix's folder (its
    phases would be repacked or left beside the new ones) unless ``overwrite``, which
    removes the other curriculum's packed phases and plans first."""
    path = Path(out_dir) / "curriculum.json"
    if not path.is_file():
        return
    previous = json.loads(path.read_text())
    if previous.get("mix_file") == mix.path.name:
        return  # the same mix again (another seed or scale repacks what changed)
    if not overwrite:
        raise ConfigError(
            f"--out {out_dir} holds the curriculum of {previous.get('mix_file')} "
            f"(curriculum.json), not {mix.path.name}: choose another --out or pass --overwrite"
        )
    for phase in previous.get("phases", []):
        folder = Path(out_dir) / "packed" / phase["phase"]
        if folder.is_dir():
            reset_phase_dir(str(folder))
            with contextlib.suppress(OSError):
                folder.rmdir()  # gone unless a user's file is in it
        Path(plan_path(str(out_dir), phase["phase"])).unlink(missing_ok=True)
    path.unlink()


def write_curriculum(out_dir: str, mix: Mix, manifests: list[PhaseManifest]) -> None:
    """``OUT/curriculum.json``: the phases in training order, for the trainer."""
    phases = [
        {
            "phase": m.phase,
            "dir": f"packed/{m.phase}",
            "seq_len": m.seq_len,
            "rope_theta": m.rope_theta,
            "rows": m.rows,
            "tokens": m.tokens,
        }
        for m in manifests
    ]
    text = json.dumps({"mix_file": mix.path.name, "phases": phases}, indent=2) + "\n"
    path = Path(out_dir) / "curriculum.json"
    path.with_suffix(".json.tmp").write_text(text)
    path.with_suffix(".json.tmp").replace(path)


MapWindows = Callable[[list[PhaseJob], list[dict[str, Any]]], pa.Table]


@dataclass(frozen=True)
class MixResult:
    out_dir: str
    manifests: list[PhaseManifest]
    skipped: list[str]  # phases already packed with this exact configuration
    windows_resumed: int = 0  # windows a crashed run had packed, not packed again


@dataclass(frozen=True)
class Prepared:
    """The tokenized data a mix runs on, already checked against the mix file."""

    tokenized_dir: str
    tokenized: dict[str, Any]  # its manifest
    index: pa.Table
    masks: dict[str, list[np.ndarray]]  # per phase, per component: selected documents


def prepare_mix(mix: Mix, tokenized_dir: str) -> Prepared:
    """Read the tokenized manifest and index, check the mix against them: every
    data-dependent error surfaces here, before any packing starts."""
    tokenized = read_tokenized_manifest(tokenized_dir)
    index = read_index(tokenized_dir, tokenized)
    return Prepared(tokenized_dir, tokenized, index, check_against_data(mix, index))


def _start_phase(mix: Mix, phase: Phase, prepared: Prepared, out_dir: str, seed: int):
    """The phase's fingerprint and job, its plan written, and the windows a crashed run
    of the same configuration already packed; None when the phase is complete."""
    tokenized = prepared.tokenized
    fingerprint = phase.fingerprint(
        seed, mix.config.packing.window_sequences, tokenized["fingerprint"]
    )
    directory = phase_dir(out_dir, phase.name)
    if is_done(directory, fingerprint):
        return None
    masks = prepared.masks[phase.name]
    plan = build_plan(mix, phase, prepared.index, masks, seed)
    write_plan(plan_path(out_dir, phase.name), plan)
    resumed = finished_windows(directory, fingerprint)
    if not resumed:
        reset_phase_dir(directory)
        write_json_atomic(LOCAL, str(Path(directory) / PROGRESS_NAME), {"fingerprint": fingerprint})
    job = PhaseJob(
        phase.name, phase.seq_len, tokenized["pad_id"], seed, prepared.tokenized_dir,
        plan_path(out_dir, phase.name), directory, tuple(sorted(resumed)),
        tokenized["vocab_size"], tuple(packed_metadata(tokenized, phase).items()),
    )  # fmt: skip
    return PhaseWork(phase, job, plan, masks, fingerprint, resumed)


def run_mix(
    mix: Mix, prepared: Prepared, out_dir: str, seed: int, map_windows: MapWindows
) -> MixResult:
    """Plan every phase, slice and pack all of them in one pass over the tokenized
    shards (``map_windows``), then write each phase's manifest."""
    started = {p.name: _start_phase(mix, p, prepared, out_dir, seed) for p in mix.phases}
    work = [w for w in started.values() if w is not None and w.pending]
    packed = [
        map_windows([w.job for w in work], prepared.tokenized["shards"])
        if work
        else WINDOW_STATS_SCHEMA.empty_table()
    ]
    for item in started.values():
        if item is not None and item.resumed:
            rows = [item.resumed[w] for w in sorted(item.resumed)]
            packed.append(pa.Table.from_pylist(rows, schema=WINDOW_STATS_SCHEMA))
    windows = pa.concat_tables(packed)
    manifests = []
    for phase in mix.phases:
        item = started[phase.name]
        if item is None:
            manifests.append(read_manifest(phase_dir(out_dir, phase.name)))
            continue
        manifest = phase_manifest(mix, item, windows, prepared)
        used = item.plan["token_end"].to_numpy() - item.plan["token_start"].to_numpy()
        if manifest.tokens != int(used.sum()):
            raise RuntimeError(
                f"{phase.name}: packed {manifest.tokens} of {int(used.sum())} tokens"
            )
        write_manifest(item.job.phase_dir, manifest)
        manifests.append(manifest)
    write_curriculum(out_dir, mix, manifests)
    resumed = sum(len(w.resumed) for w in started.values() if w is not None)
    skipped = [name for name, w in started.items() if w is None]
    return MixResult(out_dir, manifests, skipped, resumed)


def render_summary(result: MixResult) -> str:
    """One block per phase: rows, tokens, padding, and declared vs realised shares."""
    lines = []
    for m in result.manifests:
        state = " (already packed)" if m.phase in result.skipped else ""
        lines.append(
            f"{m.phase}{state}: {m.rows} rows x {m.seq_len} = {m.tokens:,} tokens in"
            f" {len(m.shards)} shard(s); padding {m.padding_fraction:.2%},"
            f" split documents {m.split_document_fraction:.2%}, rope_theta {m.rope_theta}"
        )
        for c in m.components:
            off = abs(c.realised_share - c.declared_share) > SHARE_WARNING
            lines.append(
                f"  {c.name:<16} declared {c.declared_share:7.2%}  realised {c.realised_share:7.2%}"
                f"  {c.tokens:>12,} tokens  {c.epochs:.3f} epochs"
                + ("  <- off by over a point: budget small next to the documents?" if off else "")
            )
    if result.windows_resumed:
        lines.append(f"({result.windows_resumed} windows packed by an earlier run kept)")
    return "\n".join(lines)
