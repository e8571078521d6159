"""The curation passes as plain per-shard functions; ``runner.py`` distributes them.

Pass 1, ``DocumentPass``: read a shard, run the per-document stages in order, write
the surviving documents (with their exact-dedup digest) to ``work/documents/`` and
every dropped row to ``rejects/documents-NNNNN.parquet``.
Pass 2 (runner): group digests across all shards and decide which copies are dropped.
Pass 3, ``finalize_shard``: remove the dropped copies, write ``docs/shard-NNNNN.parquet``
and the shard's stats, which double as its "done" marker.

Nothing here imports Ray, so a whole run can be exercised shard by shard in a test.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from pipeline.config import CurateConfig
from pipeline.ledger import dedup_counts, stage_counts
from pipeline.shards import (
    Shard,
    read_json,
    read_parquet,
    resolve_filesystem,
    shard_name,
    write_json_atomic,
    write_parquet_atomic,
)
from stages import STAGES
from stages.base import DROP_REASON, DROP_SCORE, DROP_STAGE, Stage, apply_to_live_rows
from stages.exact_dedup import (
    DIGEST_COLUMN,
    DUPLICATE_SCHEMA,
    REASON_EXACT_DUPLICATE,
    ExactDedupConfig,
    text_digests,
)
from stages.readers import read_shard

READ_STAGE = "read"
EXACT_DEDUP_STAGE = "exact_dedup"
REJECT_SNIPPET_CHARS = 500

# Columns of a curated document shard, in order (later stages append theirs).
OUTPUT_DROP_COLUMNS = ("html", DROP_REASON, DROP_SCORE, DROP_STAGE, "shard", "ordinal")

REJECTS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("shard", pa.int32()),
        ("ordinal", pa.int64()),
        ("source", pa.string()),
        ("record", pa.string()),
        ("url", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("score", pa.float64()),
        ("duplicate_of", pa.string()),
        ("snippet", pa.string()),
    ]
)


@dataclass(frozen=True)
class RunLayout:
    """Where each pass puts its files under the output directory."""

    filesystem: pafs.FileSystem
    root: str

    @classmethod
    def for_output(cls, output_dir: str) -> RunLayout:
        filesystem, root = resolve_filesystem(output_dir)
        return cls(filesystem, root.rstrip("/"))

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def work_documents(self, shard: int) -> str:
        return self.path("work", "documents", f"{shard_name(shard)}.parquet")

    def work_stats(self, shard: int) -> str:
        return self.path("work", "documents", f"{shard_name(shard)}.json")

    def drops_dir(self, fingerprint: str) -> str:
        return self.path("work", "exact_dedup", fingerprint)

    def drops(self, fingerprint: str, shard: int) -> str:
        return posixpath.join(self.drops_dir(fingerprint), f"drops-{shard_name(shard)}.parquet")

    def docs(self, shard: int) -> str:
        return self.path("docs", f"shard-{shard_name(shard)}.parquet")

    def rejects(self, pass_name: str, shard: int) -> str:
        return self.path("rejects", f"{pass_name}-{shard_name(shard)}.parquet")

    def stats(self, shard: int) -> str:
        return self.path("stats", f"{shard_name(shard)}.json")


def document_stage_names(config: CurateConfig) -> list[str]:
    """The enabled per-document stages, in run order."""
    return [name for name in STAGES if getattr(config.stages, name) is not None]


def build_stages(config: CurateConfig) -> list[Stage]:
    return [STAGES[name](getattr(config.stages, name)) for name in document_stage_names(config)]


def rejects_table(rows: pa.Table) -> pa.Table:
    """The rejects sink's view of dropped rows: where from, which stage, why, a snippet."""

    def column(name: str) -> pa.ChunkedArray | pa.Array:
        if name in rows.column_names:
            return rows.column(name)
        return pa.nulls(rows.num_rows, pa.string())

    snippet = pc.utf8_slice_codeunits(
        pc.coalesce(column("text"), column("html")), 0, REJECT_SNIPPET_CHARS
    )
    duplicate_of = column("duplicate_of")
    columns = {
        "id": rows.column("id"),
        "shard": rows.column("shard"),
        "ordinal": rows.column("ordinal"),
        "source": rows.column("source"),
        "record": rows.column("record"),
        "url": rows.column("url"),
        "stage": rows.column(DROP_STAGE),
        "reason": rows.column(DROP_REASON),
        "score": rows.column(DROP_SCORE).cast(pa.float64()),
        "duplicate_of": duplicate_of,
        "snippet": snippet,
    }
    return pa.table(columns, schema=REJECTS_SCHEMA)


class DocumentPass:
    """Pass 1 for one shard at a time. Built once per worker: stage models load once."""

    def __init__(self, config: CurateConfig, shards: list[Shard]) -> None:
        self.config = config
        self.shards = {shard.index: shard for shard in shards}
        self.layout = RunLayout.for_output(config.output_dir)
        self.stages = build_stages(config)
        self.stage_order = [READ_STAGE] + [stage.name for stage in self.stages]
        self.dedup = config.stages.exact_dedup

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Ray Data entry point: a batch of ``shard`` indices in, one summary row each out."""
        summaries = [self.run(index) for index in batch.column("shard").to_pylist()]
        return pa.table(
            {
                "shard": [s["shard"] for s in summaries],
                "documents": [s["documents"] for s in summaries],
            }
        )

    def run(self, shard_index: int) -> dict[str, Any]:
        shard = self.shards[shard_index]
        files = [(f.path, f.source) for f in shard.files]
        input_filesystem, _ = resolve_filesystem(self.config.inputs[shard.input_index].path)
        batch = read_shard(files, shard.index, input_filesystem, self.config.reader)
        for stage in self.stages:
            batch = apply_to_live_rows(stage, batch)
        return self.write(shard.index, batch)

    def write(self, shard_index: int, batch: pa.Table) -> dict[str, Any]:
        live = pc.is_null(batch.column(DROP_REASON))
        kept = batch.filter(live)
        kept = kept.drop_columns([c for c in OUTPUT_DROP_COLUMNS[:4] if c in kept.column_names])
        if self.dedup is not None:
            kept = kept.append_column(DIGEST_COLUMN, text_digests(kept.column("text"), self.dedup))
        layout = self.layout
        docs_entry = write_parquet_atomic(
            layout.filesystem, layout.work_documents(shard_index), kept
        )
        write_parquet_atomic(
            layout.filesystem,
            layout.rejects("documents", shard_index),
            rejects_table(batch.filter(pc.invert(live))),
        )
        stats = {
            "shard": shard_index,
            "documents": docs_entry,
            "stage_order": self.stage_order,
            "stages": stage_counts(batch, self.stage_order),
        }
        write_json_atomic(layout.filesystem, layout.work_stats(shard_index), stats)
        return {"shard": shard_index, "documents": kept.num_rows}


def documents_pass_done(layout: RunLayout, shard_index: int) -> dict[str, Any] | None:
    """The pass-1 stats of a finished shard (its marker), or None."""
    return read_json(layout.filesystem, layout.work_stats(shard_index))


def dedup_fingerprint(pass_stats: list[dict[str, Any]], dedup: ExactDedupConfig | None) -> str:
    """Names the dedup decision: the exact pass-1 outputs plus the dedup settings."""
    material = {
        "documents": [stats["documents"]["sha256"] for stats in pass_stats],
        "dedup": dedup.model_dump(mode="json") if dedup else None,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _duplicates_as_rejects(dropped: pa.Table, drops: pa.Table) -> pa.Table:
    """Rejects rows for dropped copies, each naming the id of the copy that was kept."""
    kept_copy = dict(
        zip(drops.column("id").to_pylist(), drops.column("duplicate_of").to_pylist(), strict=True)
    )
    n = dropped.num_rows
    rows = dropped
    for name, values in (
        ("duplicate_of", pa.array([kept_copy[i] for i in dropped.column("id").to_pylist()])),
        (DROP_STAGE, pa.array([EXACT_DEDUP_STAGE] * n, pa.string())),
        (DROP_REASON, pa.array([REASON_EXACT_DUPLICATE] * n, pa.string())),
        (DROP_SCORE, pa.nulls(n, pa.float64())),
    ):
        rows = rows.append_column(name, values)
    return rejects_table(rows)


def finalize_shard(
    layout: RunLayout, shard_index: int, fingerprint: str, dedup_enabled: bool
) -> dict[str, Any]:
    """Pass 3: drop the exact duplicates of one shard and write its curated documents."""
    fs = layout.filesystem
    documents = read_parquet(fs, layout.work_documents(shard_index))
    pass_stats = read_json(fs, layout.work_stats(shard_index))
    stage_order = list(pass_stats["stage_order"])
    stages = {name: pass_stats["stages"][name] for name in stage_order}
    drops = read_parquet(fs, layout.drops(fingerprint, shard_index), DUPLICATE_SCHEMA)
    if dedup_enabled:
        is_dropped = pc.is_in(documents.column("id"), value_set=drops.column("id"))
        dropped = documents.filter(is_dropped)
        documents = documents.filter(pc.invert(is_dropped))
        rejected = _duplicates_as_rejects(dropped, drops)
        write_parquet_atomic(fs, layout.rejects(EXACT_DEDUP_STAGE, shard_index), rejected)
        kept_before = stages[stage_order[-1]]["kept"]
        reasons = Counter({REASON_EXACT_DUPLICATE: dropped.num_rows} if dropped.num_rows else {})
        stages[EXACT_DEDUP_STAGE] = dedup_counts(kept_before, reasons)
        stage_order.append(EXACT_DEDUP_STAGE)
    documents = documents.drop_columns(
        [c for c in (*OUTPUT_DROP_COLUMNS, DIGEST_COLUMN) if c in documents.column_names]
    )
    entry = write_parquet_atomic(fs, layout.docs(shard_index), documents)
    stats = {
        "shard": shard_index,
        "dedup_fingerprint": fingerprint,
        "docs": entry,
        "stage_order": stage_order,
        "stages": stages,
    }
    write_json_atomic(fs, layout.stats(shard_index), stats)
    return stats
