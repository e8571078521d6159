"""Ray wiring of the template-lines step (the pure halves are in ``stages/template_lines.py``):
three rounds of Ray tasks (``pipeline/task_rounds.py``).

1. **Lines**, one task per run of consecutive shards: from the documents that survived
   the earlier steps, one row per (document, distinct normalised line): 8-byte line
   hash, host, id, position, line indices; never the text. Split by a partition of the
   line hash; the task also counts the documents considered (the corpus-wide
   fraction's denominator).
2. **Templates**, one task per line partition: each holds every document with its lines,
   from every shard, so the per-host and corpus-wide document counts are global. It
   keeps the rows whose line is a template, sent to the run of their shard.
3. **Decide**, one task per run: per shard, read the shard's texts once, turn its
   removals into a decision (lines to remove, characters left), write it, and return
   the shard's most often removed lines for the summary.

The ``_SUCCESS`` summary carries a ``report`` that the runner copies into the ledger
under the step, and the funnel prints: ``documents_changed`` and ``lines_removed``
count the documents that stay (rewritten), ``template_only`` and
``template_only_lines`` the documents rejected because nothing real was left, and
``top_lines`` the most often removed lines with their text.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pipeline import ray_exec
from pipeline.curate import GlobalStep, RunLayout
from pipeline.shards import Shard, write_parquet_atomic
from pipeline.task_rounds import (
    Survivors,
    by_shard,
    document_counts,
    mark_decision_done,
    received,
    releases_freed_memory,
    shard_runs,
    split_rows,
)
from stages.minhash_lsh import partition_of
from stages.template_lines import (
    DECISION_SCHEMA,
    TemplateLinesConfig,
    apply_template_decision,
    considered_documents,
    line_pairs,
    shard_decision,
    template_removals,
)

STEP = "template_lines"
# Removed lines each shard reports for the summary; the top lines of the whole run are
# exact unless a shard removes more distinct lines than this (the demo removes ~20).
SHARD_TOP_LINES = 200


SUMMARY_SCHEMA = pa.schema(
    [
        ("shard", pa.int64()),
        ("lines", pa.list_(pa.int64())),
        ("remaining_chars", pa.list_(pa.int64())),
        ("top", pa.string()),
    ]
)
COLUMNS = ["id", "shard", "ordinal", "url", "format", "text"]
PARTITION_DOCUMENTS = 20_000  # documents' line rows per templates task (~1M rows)


@releases_freed_memory
def line_run(
    survivors: Survivors, shards: list[int], cfg: TemplateLinesConfig, partitions: int
) -> tuple:
    """Round 1: (stats, one table of line rows per partition) for these shards."""
    tables, considered = [], 0
    for shard in shards:
        documents = survivors.documents(shard, COLUMNS)
        considered += considered_documents(documents, cfg)
        tables.append(line_pairs(documents, cfg))
    pairs = pa.concat_tables(tables)
    route = partition_of(pairs.column("line_hash").to_numpy(), partitions)
    stats = {"considered": considered, "line_rows": pairs.num_rows}
    return stats, *split_rows(pairs, route, partitions)


@releases_freed_memory
def template_partition(
    group_of_shard: np.ndarray,
    groups: int,
    cfg: TemplateLinesConfig,
    total_documents: int,
    *parts: pa.Table,
) -> tuple:
    """Round 2, one line partition: the template rows, one table per run of shards."""
    removals = template_removals(pa.concat_tables(parts), cfg, total_documents)
    route = group_of_shard[removals.column("shard").to_numpy()]
    return {"template_rows": removals.num_rows}, *split_rows(removals, route, groups)


@releases_freed_memory
def decide_run(survivors: Survivors, fingerprint: str, *parts: pa.Table) -> tuple:
    """Round 3, one run of shards: each shard with removals gets its decision written,
    and a summary row (lines removed and characters left per document, top lines)."""
    rows = []
    for shard, mine in by_shard(pa.concat_tables(parts)):
        texts = survivors.documents(shard, ["id", "text"])
        decision, counts, examples = shard_decision(mine, texts)
        layout = survivors.layout
        write_parquet_atomic(layout.filesystem, layout.decision(STEP, fingerprint, shard), decision)
        top = [[str(h), examples[h], n] for h, n in counts.most_common(SHARD_TOP_LINES)]
        rows.append(
            {
                "shard": shard,
                "lines": [len(r) for r in decision.column("remove_lines").to_pylist()],
                "remaining_chars": decision.column("remaining_chars").to_pylist(),
                "top": json.dumps(top, ensure_ascii=False),
            }
        )
    summary = pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)
    return {"shards_with_decisions": len(rows)}, summary


def summarize(rows: list[dict], settings: TemplateLinesConfig) -> dict:
    """The ``_SUCCESS`` summary from the per-shard rows: totals and the top lines."""
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for row in rows:
        for digest, text, n in json.loads(row["top"]):
            counts[digest] += n
            examples.setdefault(digest, text)
    # One entry per document with a template line: (lines removed, characters left).
    changed = [
        (int(lines), int(left))
        for row in rows
        for lines, left in zip(row["lines"], row["remaining_chars"], strict=True)
    ]
    kept = [lines for lines, left in changed if left >= settings.min_remaining_chars]
    dropped = [lines for lines, left in changed if left < settings.min_remaining_chars]
    top = sorted(counts.items(), key=lambda item: (-item[1], examples[item[0]]))
    return {
        "shards_with_decisions": len(rows),
        "report": {
            "documents_changed": len(kept),
            "lines_removed": sum(kept),
            "template_only": len(dropped),
            "template_only_lines": sum(dropped),
            "top_lines": [
                {"line": examples[digest], "documents": n}
                for digest, n in top[: settings.top_lines]
            ],
        },
    }


def decide_template_lines(
    layout: RunLayout,
    shards: Sequence[Shard],
    earlier: list[GlobalStep],
    fingerprints: list[str],
    fingerprint: str,
    settings: TemplateLinesConfig,
) -> None:
    """Count every line's documents across the corpus; per shard, write what to remove."""

    rows: list[dict] = []
    if shards:
        counts = document_counts(layout, shards)
        partitions = max(1, math.ceil(sum(counts) / PARTITION_DOCUMENTS))
        survivors = ray_exec.put(Survivors(layout, earlier, fingerprints))
        runs, group_of_shard = shard_runs(counts, shards, partitions)
        calls = [(survivors, run, settings, partitions) for run in runs]
        lined, lines = ray_exec.run_round(STEP, "lines", line_run, calls, partitions)
        considered = sum(entry["considered"] for entry in lined)
        calls = [
            (group_of_shard, len(runs), settings, considered, *received(lines, p))
            for p in range(partitions)
        ]
        _, removals = ray_exec.run_round(STEP, "templates", template_partition, calls, len(runs))
        calls = [(survivors, fingerprint, *received(removals, g)) for g in range(len(runs))]
        _, summaries = ray_exec.run_round(STEP, "decide", decide_run, calls, 1)
        rows = pa.concat_tables(ray_exec.get(received(summaries, 0))).to_pylist()
    rows.sort(key=lambda row: row["shard"])
    mark_decision_done(layout, STEP, fingerprint, summarize(rows, settings))


def template_lines_step(settings: TemplateLinesConfig) -> GlobalStep:
    return GlobalStep(
        name=STEP,
        settings=settings,
        decision_schema=DECISION_SCHEMA,
        apply=apply_template_decision,
        decide=decide_template_lines,
    )
