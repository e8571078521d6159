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

import contextlib
import hashlib
import json
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from pipeline.config import CurateConfig
from pipeline.ledger import dedup_counts, language_counts, move_to_dropped, stage_counts
from pipeline.safe_paths import inside
from pipeline.shards import (
    FilePiece,
    InputFile,
    Shard,
    read_json,
    read_parquet,
    resolve_filesystem,
    shard_name,
    write_json_atomic,
    write_parquet_atomic,
    write_parquet_if_rows,
)
from stages import STAGES
from stages.base import (
    DOCUMENT_SCHEMA,
    DROP_REASON,
    DROP_SCORE,
    DROP_STAGE,
    Stage,
    StageConfig,
    apply_to_live_rows,
    set_column,
)
from stages.byte_streams import span_digest
from stages.exact_dedup import DIGEST_COLUMN, text_digests
from stages.readers import ReadInput, document_id, read_pieces

READ_STAGE = "read"
REJECT_SNIPPET_CHARS = 500

# Columns of a curated document shard, in order (later stages append theirs).
OUTPUT_DROP_COLUMNS = ("html", DROP_REASON, DROP_SCORE, DROP_STAGE, "shard", "ordinal")
# Columns only the global steps need (dropped before the curated shards are written).
WORK_COLUMNS = (DIGEST_COLUMN,)

REJECTS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("shard", pa.int32()),
        ("ordinal", pa.int64()),
        ("source", pa.string()),
        ("record", pa.string()),
        ("url", pa.string()),
        ("language", pa.string()),  # null when dropped before language id
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("score", pa.float64()),
        ("duplicate_of", pa.string()),
        ("cluster_id", pa.string()),
        ("snippet", pa.string()),
    ]
)


# Every name a curation run writes under its output_dir (see RunLayout), and the hidden
# temporary a crash may leave beside one: what `--overwrite` may delete, and nothing else.
_OWNED_PATH = re.compile(
    r"""(?:run|ledger|manifest)\.json | funnel\.txt
    | docs/shard-\d{5}\.parquet
    | rejects/[a-z_]+-\d{5}\.parquet
    | stats/\d{5}\.json
    | work/documents/\d{5}\.(?:parquet|json) | work/inputs\.json
    | work/[a-z_]+/[0-9a-f]{16}/(?:\d{5}\.parquet|_SUCCESS)""",
    re.VERBOSE,
)
_TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.tmp-[0-9a-f]{32}")


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
        """``root/parts``, checked to stay inside the root once resolved: a symlink in
        the output folder pointing elsewhere is refused, never written through."""
        local = isinstance(self.filesystem, pafs.LocalFileSystem)
        return inside(self.root, *parts, local=local)

    @staticmethod
    def owns(relative: str) -> bool:
        """Whether ``relative`` (a path under the output root) is a name a curation run
        writes, or the temporary of one: ``--overwrite`` deletes these files only."""
        folder, name = posixpath.split(relative)
        temporary = _TEMPORARY_NAME.fullmatch(name)
        if temporary is not None:
            relative = posixpath.join(folder, temporary.group("name"))
        return _OWNED_PATH.fullmatch(relative) is not None

    def work_documents(self, shard: int) -> str:
        return self.path("work", "documents", f"{shard_name(shard)}.parquet")

    def work_stats(self, shard: int) -> str:
        return self.path("work", "documents", f"{shard_name(shard)}.json")

    def decision_dir(self, step: str, fingerprint: str) -> str:
        return self.path("work", step, fingerprint)

    def decision(self, step: str, fingerprint: str, shard: int) -> str:
        return posixpath.join(self.decision_dir(step, fingerprint), f"{shard_name(shard)}.parquet")

    def docs(self, shard: int) -> str:
        return self.path("docs", f"shard-{shard_name(shard)}.parquet")

    def rejects(self, pass_name: str, shard: int) -> str:
        return self.path("rejects", f"{pass_name}-{shard_name(shard)}.parquet")

    def stats(self, shard: int) -> str:
        return self.path("stats", f"{shard_name(shard)}.json")


def unreadable_rows(files: list[InputFile], shard_index: int, first_ordinal: int) -> pa.Table:
    """One rejected ``read`` row per entry planning listed but would not open (a FIFO,
    a dangling or outside link, a name that is not UTF-8), after the shard's read rows:
    the ledger then counts every entry that looked like input."""
    count = len(files)
    columns: dict[str, Any] = {
        name: pa.nulls(count, field.type) for name, field in zip(
            DOCUMENT_SCHEMA.names, DOCUMENT_SCHEMA, strict=True
        )
    }  # fmt: skip
    columns["id"] = pa.array([document_id(f.source, "file", b"") for f in files], pa.string())
    columns["shard"] = pa.array([shard_index] * count, pa.int32())
    columns["ordinal"] = pa.array(range(first_ordinal, first_ordinal + count), pa.int64())
    columns["source"] = pa.array([f.source for f in files], pa.string())
    columns["record"] = pa.array(["file"] * count, pa.string())
    columns[DROP_REASON] = pa.array([f.problem for f in files], pa.string())
    columns[DROP_STAGE] = pa.array([READ_STAGE] * count, pa.string())
    return pa.table(columns, schema=DOCUMENT_SCHEMA)


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
    columns = {
        "id": rows.column("id"),
        "shard": rows.column("shard"),
        "ordinal": rows.column("ordinal"),
        "source": rows.column("source"),
        "record": rows.column("record"),
        "url": rows.column("url"),
        "language": column("language"),
        "stage": rows.column(DROP_STAGE),
        "reason": rows.column(DROP_REASON),
        "score": rows.column(DROP_SCORE).cast(pa.float64()),
        "duplicate_of": column("duplicate_of"),
        "cluster_id": column("cluster_id"),
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

    def run(self, shard_index: int) -> dict[str, Any]:
        """Read the shard's files and pieces of files in order, run the stages, write.
        Each piece's bytes are hashed as they are read, for the done marker."""
        shard = self.shards[shard_index]
        readable = [piece for piece in shard.pieces if piece.file.problem is None]
        items = [(piece.file.path, piece.file.source, piece.part) for piece in readable]
        input_filesystem, _ = resolve_filesystem(self.config.inputs[shard.input_index].path)
        batch, read = read_pieces(
            items, shard.index, input_filesystem, self.config.reader, with_inputs=True
        )
        unreadable = [piece.file for piece in shard.pieces if piece.file.problem is not None]
        if unreadable:
            batch = pa.concat_tables(
                [batch, unreadable_rows(unreadable, shard.index, batch.num_rows)]
            )
        for stage in self.stages:
            batch = apply_to_live_rows(stage, batch)
        inputs = input_records(shard, input_filesystem, dict(zip(readable, read, strict=True)))
        return self.write(shard.index, batch, inputs)

    def write(
        self, shard_index: int, batch: pa.Table, inputs: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        live = pc.is_null(batch.column(DROP_REASON))
        kept = batch.filter(live)
        kept = kept.drop_columns([c for c in OUTPUT_DROP_COLUMNS[:4] if c in kept.column_names])
        if self.dedup is not None:
            kept = kept.append_column(DIGEST_COLUMN, text_digests(kept.column("text"), self.dedup))
        layout = self.layout
        docs_entry = write_parquet_atomic(
            layout.filesystem, layout.work_documents(shard_index), kept
        )
        write_parquet_if_rows(
            layout.filesystem,
            layout.rejects("documents", shard_index),
            rejects_table(batch.filter(pc.invert(live))),
        )
        stats = {
            "shard": shard_index,
            "documents": docs_entry,
            "stage_order": self.stage_order,
            "stages": stage_counts(batch, self.stage_order),
            "languages": language_counts(batch),
            "inputs": inputs,
        }
        write_json_atomic(layout.filesystem, layout.work_stats(shard_index), stats)
        return {"shard": shard_index, "documents": kept.num_rows, "read": batch.num_rows}


def documents_pass_done(layout: RunLayout, shard_index: int) -> dict[str, Any] | None:
    """The pass-1 stats of a finished shard (its marker), or None."""
    return read_json(layout.filesystem, layout.work_stats(shard_index))


def file_digest(filesystem: pafs.FileSystem, path: str) -> str:
    """sha256 of a file, streamed in 1 MiB pieces."""
    digest = hashlib.sha256()
    with filesystem.open_input_stream(path, compression=None) as stream:
        while piece := stream.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def input_records(
    shard: Shard,
    filesystem: pafs.FileSystem,
    read: Mapping[FilePiece, ReadInput | None] | None = None,
) -> list[dict[str, Any]]:
    """What the shard was made of, for its done marker, one record per file or piece:
    source, size, the reason it was not read, and the content digest (so a copy with
    new mtimes, as a job's working directory unpacked after a cluster restart, still
    counts as unchanged). A whole file's digest is the file's sha256; a piece's is that
    of the bytes it was read from (``spans``), so a split file is hashed once in all,
    not once per piece. ``read`` holds what reading hashed; a piece missing there is
    read again to find its bytes. No mtime: the marker is the same bytes on every run;
    the runner keeps the mtimes apart (``work/inputs.json``) to skip hashing files
    that were not touched."""
    records = []
    for piece in shard.pieces:
        file = piece.file
        record: dict[str, Any] = {
            "source": file.source,
            "bytes": file.size_bytes,
            "problem": file.problem,
            "sha256": None,
        }
        if file.problem is None and read is not None and piece in read:
            found = read[piece]  # None: the file did not open; its error row says so
            if found is not None:
                record["sha256"] = found.sha256
                if piece.part is not None:
                    record["spans"] = [list(span) for span in found.spans]
        elif file.problem is None and piece.part is None:
            with contextlib.suppress(OSError):  # the reader reports the file's own error
                record["sha256"] = file_digest(filesystem, file.path)
        if piece.part is not None:
            record["piece"] = piece.describe()
        records.append(record)
    return records


def input_changes(
    recorded: list[dict[str, Any]] | None,
    shard: Shard,
    filesystem: pafs.FileSystem,
    mtimes: dict[str, int],
) -> list[str]:
    """How the shard's files now differ from those its done marker recorded (empty:
    the marker still holds). A file of the same size whose mtime is not the one
    ``mtimes`` (the last run's) holds is read and compared by digest, so touching or
    copying a file does not re-run its shard; for a piece of a split file only the
    bytes the piece was read from are compared. A file now cut into other pieces (or
    no longer cut) changes the shard too."""
    if recorded is None:
        return ["the done marker does not record its input files (an older run)"]
    before: dict[str, list[dict[str, Any]]] = {}
    for record in recorded:
        before.setdefault(record["source"], []).append(record)
    now: dict[str, list[FilePiece]] = {}
    for piece in shard.pieces:
        now.setdefault(piece.file.source, []).append(piece)
    changes = [f"added {source}" for source in sorted(now.keys() - before.keys())]
    changes += [f"removed {source}" for source in sorted(before.keys() - now.keys())]
    for source in sorted(now.keys() & before.keys()):
        olds, pieces = before[source], now[source]
        old, new = olds[0], pieces[0].file
        if old["problem"] != new.problem:
            changes.append(f"modified {source} ({old['problem'] or 'readable'} -> "
                           f"{new.problem or 'readable'})")  # fmt: skip
        elif old["bytes"] != new.size_bytes:
            changes.append(f"modified {source} ({old['bytes']} -> {new.size_bytes} bytes)")
        elif [o.get("piece") for o in olds] != [p.describe() for p in pieces]:
            changes.append(f"modified {source} (read in other pieces)")
        elif (
            new.problem is None
            and mtimes.get(source) != new.mtime_ns
            and not all(_same_bytes(filesystem, new, o) for o in olds)
        ):
            changes.append(f"modified {source} (same size, other content)")
    return changes


def _same_bytes(filesystem: pafs.FileSystem, file: InputFile, record: dict[str, Any]) -> bool:
    """Whether the bytes a marker record was hashed from are still the same."""
    try:
        if record.get("spans") is None:
            return file_digest(filesystem, file.path) == record["sha256"]
        with filesystem.open_input_file(file.path) as raw:
            return span_digest(raw, record["spans"]) == record["sha256"]
    except OSError:
        return False


@dataclass(frozen=True)
class GlobalStep:
    """A step that needs the whole corpus to decide (deduplication, template lines).

    ``decide`` (a declared step run by ``pipeline/round_driver.py``) reads the documents
    that survived the earlier steps and writes one decision table per shard;
    ``apply`` (pure) turns a shard's documents and its decision into kept and dropped
    rows. Decisions live under a fingerprint of everything they depend on, so a rerun
    reuses them exactly when nothing upstream changed.
    """

    name: str
    settings: StageConfig
    decision_schema: pa.Schema
    apply: Callable[[pa.Table, pa.Table, StageConfig], tuple[pa.Table, pa.Table]]
    decide: Callable[..., None]


def documents_fingerprint(pass_stats: list[dict[str, Any]]) -> str:
    """Names the exact pass-1 outputs every global decision is computed from."""
    material = [stats["documents"]["sha256"] for stats in pass_stats]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:16]


def step_fingerprints(base: str, steps: list[GlobalStep]) -> list[str]:
    """One fingerprint per step, chained: a change upstream renames every later decision."""
    fingerprints = []
    previous = base
    for step in steps:
        material = {
            "previous": previous,
            "step": step.name,
            "settings": step.settings.model_dump(mode="json"),
        }
        previous = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
        fingerprints.append(previous)
    return fingerprints


def apply_steps(
    layout: RunLayout,
    shard_index: int,
    steps: list[GlobalStep],
    fingerprints: list[str],
    columns: list[str] | None = None,
) -> tuple[pa.Table, list[tuple[str, pa.Table]]]:
    """The shard's pass-1 documents with the given steps' decisions applied in order:
    (surviving documents, [(step name, dropped rows)]). ``columns`` limits what is read."""
    fs = layout.filesystem
    documents = read_parquet(fs, layout.work_documents(shard_index), columns=columns)
    dropped_by_step = []
    for step, fingerprint in zip(steps, fingerprints, strict=True):
        decision = read_parquet(
            fs, layout.decision(step.name, fingerprint, shard_index), step.decision_schema
        )
        documents, dropped = step.apply(documents, decision, step.settings)
        dropped_by_step.append((step.name, dropped))
    return documents, dropped_by_step


def finalize_shard(
    layout: RunLayout,
    shard_index: int,
    steps: list[GlobalStep],
    fingerprints: list[str],
    run_fingerprint: str,
) -> dict[str, Any]:
    """Pass 3: apply every global decision to one shard; write its documents, its
    rejects per step, and its stats (the shard's done marker, written last)."""
    fs = layout.filesystem
    pass_stats = read_json(fs, layout.work_stats(shard_index))
    stage_order = list(pass_stats["stage_order"])
    stages = {name: pass_stats["stages"][name] for name in stage_order}
    documents, dropped_by_step = apply_steps(layout, shard_index, steps, fingerprints)
    languages = pass_stats.get("languages", {})
    for name, dropped in dropped_by_step:
        languages = move_to_dropped(languages, dropped, name)
        dropped = set_column(dropped, DROP_STAGE, pa.array([name] * dropped.num_rows, pa.string()))
        write_parquet_if_rows(fs, layout.rejects(name, shard_index), rejects_table(dropped))
        kept_before = stages[stage_order[-1]]["kept"]
        reasons = Counter(dropped.column(DROP_REASON).to_pylist())
        stages[name] = dedup_counts(kept_before, reasons)
        stage_order.append(name)
    documents = documents.drop_columns(
        [c for c in (*OUTPUT_DROP_COLUMNS, *WORK_COLUMNS) if c in documents.column_names]
    )
    entry = write_parquet_if_rows(fs, layout.docs(shard_index), documents)
    stats = {
        "shard": shard_index,
        "fingerprint": run_fingerprint,
        "docs": entry,
        "stage_order": stage_order,
        "stages": stages,
        "languages": languages,
    }
    write_json_atomic(fs, layout.stats(shard_index), stats)
    return stats
