"""Ray wiring of the template-lines step (the pure halves are in ``stages/template_lines.py``).

1. From the documents that survived the earlier steps, one row per (document, distinct
   normalised line): 8-byte line hash, host, id, position, line indices; never the text.
2. ``groupby(line_hash)``: each group holds every document with that line, from every
   shard, so the per-host and corpus-wide document counts are global. A group returns
   the rows whose line is a template.
3. ``groupby(shard)``: per shard, read the shard's texts once, turn its removals into a
   decision (lines to remove, characters left), write it, and return the shard's most
   often removed lines for the summary.

The ``_SUCCESS`` summary carries a ``report`` that the runner copies into the ledger
under the step, and the funnel prints: ``documents_changed`` and ``lines_removed``
count the documents that stay (rewritten), ``template_only`` and
``template_only_lines`` the documents rejected because nothing real was left, and
``top_lines`` the most often removed lines with their text.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import pyarrow as pa

from pipeline.curate import GlobalStep, RunLayout, apply_steps
from pipeline.shards import Shard, write_parquet_atomic
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


def _write_shard_decision(
    group: pa.Table,
    layout: RunLayout,
    earlier: list[GlobalStep],
    fingerprints: list[str],
    fingerprint: str,
) -> pa.Table:
    shard = group.column("shard")[0].as_py()
    texts = apply_steps(layout, shard, earlier, fingerprints, ["id", "text"])[0]
    decision, counts, examples = shard_decision(group, texts)
    write_parquet_atomic(layout.filesystem, layout.decision(STEP, fingerprint, shard), decision)
    top = [[str(h), examples[h], n] for h, n in counts.most_common(SHARD_TOP_LINES)]
    return pa.table(
        {
            "shard": [shard],
            "lines": [[len(r) for r in decision.column("remove_lines").to_pylist()]],
            "remaining_chars": [decision.column("remaining_chars").to_pylist()],
            "top": [json.dumps(top, ensure_ascii=False)],
        }
    )


def _count_considered(batch: pa.Table, settings: TemplateLinesConfig) -> pa.Table:
    return pa.table({"documents": [considered_documents(batch, settings)]})


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
    from pipeline.global_steps import mark_decision_done, surviving

    columns = ["id", "shard", "ordinal", "url", "format", "text"]
    documents = surviving(layout, shards, earlier, fingerprints, columns)
    considered = 0  # the corpus-wide fraction's denominator, counted only when needed
    if settings.min_corpus_fraction is not None:
        considered = sum(
            row["documents"]
            for row in surviving(layout, shards, earlier, fingerprints, ["format"])
            .map_batches(
                _count_considered, fn_kwargs={"settings": settings}, batch_format="pyarrow"
            )
            .take_all()
        )
    pairs = documents.map_batches(line_pairs, fn_kwargs={"cfg": settings}, batch_format="pyarrow")
    # A partition per shard (Ray's default is 200): small runs do not pay for empty ones.
    partitions = min(max(len(shards), 1), 200)
    removals = pairs.groupby("line_hash", num_partitions=partitions).map_groups(
        template_removals,
        fn_kwargs={"cfg": settings, "total_documents": considered},
        batch_format="pyarrow",
    )
    rows = (
        removals.groupby("shard", num_partitions=partitions)
        .map_groups(
            _write_shard_decision,
            fn_kwargs={
                "layout": layout,
                "earlier": earlier,
                "fingerprints": fingerprints,
                "fingerprint": fingerprint,
            },
            batch_format="pyarrow",
        )
        .take_all()
    )
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
