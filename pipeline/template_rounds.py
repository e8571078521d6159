"""The template-lines global step, declared as rounds (``pipeline/round_driver.py`` runs
them; the pure halves are in ``stages/template_lines.py``).

1. **lines** (map, per shard): from the documents that survived the earlier steps, one
   row per (document, distinct normalised line): 8-byte line hash, host, id, position,
   line indices; never the text. Keyed by the line hash; the map also counts the
   documents considered (the corpus-wide fraction's denominator).
2. **templates**, per line partition: each holds every document with its lines, from
   every shard, so the per-host and corpus-wide document counts are global. It keeps
   the rows whose line is a template, sent to their shard's run.
3. **write**, per shard: read the shard's texts once, turn its removals into a decision
   (lines to remove, characters left), write it, and return the shard's most often
   removed lines for the summary.

The ``_SUCCESS`` summary carries a ``report`` that the runner copies into the ledger
under the step, and the funnel prints: ``documents_changed`` and ``lines_removed``
count the documents that stay (rewritten), ``template_only`` and
``template_only_lines`` the documents rejected because nothing real was left, and
``top_lines`` the most often removed lines with their text.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa

from pipeline.round_step import (
    Outcome,
    Plan,
    Round,
    RoundStep,
    StepInputs,
    partitions_for,
    to_shard_run,
)
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


def line_rows(inputs: StepInputs, documents: pa.Table) -> tuple[dict, pa.Table]:
    """Map: the shard's (document, line) rows, keyed by the line hash."""
    pairs = line_pairs(documents, inputs.settings)
    stats = {"considered": considered_documents(documents, inputs.settings)}
    return stats | {"line_rows": pairs.num_rows}, pairs


def templates(inputs: StepInputs, plan: Plan, pairs: pa.Table) -> tuple[dict, pa.Table]:
    """Round: whole line groups in, the rows whose line is a template out."""
    removals = template_removals(pairs, inputs.settings, plan.totals["considered"])
    return {"template_rows": removals.num_rows}, removals


def write_shard(inputs: StepInputs, shard: int, removals: pa.Table) -> pa.Table:
    """The shard's decision from its removals and its texts, written; a summary row
    (lines removed and characters left per document, top lines). The removals are put
    in document order first, so a line's example text is the same however they were
    cut."""
    removals = removals.sort_by([("ordinal", "ascending"), ("line_hash", "ascending")])
    texts = inputs.documents(shard, ["id", "text"])
    decision, counts, examples = shard_decision(removals, texts)
    inputs.write_decision(shard, decision)
    top = [[str(h), examples[h], n] for h, n in counts.most_common(SHARD_TOP_LINES)]
    row = {
        "shard": shard,
        "lines": [len(r) for r in decision.column("remove_lines").to_pylist()],
        "remaining_chars": decision.column("remaining_chars").to_pylist(),
        "top": json.dumps(top, ensure_ascii=False),
    }
    return pa.Table.from_pylist([row], schema=SUMMARY_SCHEMA)


def summarize(settings: TemplateLinesConfig, outcome: Outcome) -> dict:
    """The ``_SUCCESS`` summary from the per-shard rows: totals and the top lines."""
    rows = outcome.summary.to_pylist()
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


TEMPLATE_LINES = RoundStep(
    name=STEP,
    decision_schema=DECISION_SCHEMA,
    apply=apply_template_decision,
    columns=lambda settings: COLUMNS,
    map_name="lines",
    map_shard=line_rows,
    key="line_hash",
    partitions=lambda settings, documents: partitions_for(documents, PARTITION_DOCUMENTS),
    rounds=lambda settings: [Round("templates", templates, to_shard_run("shard"))],
    write_shard=write_shard,
    summary_schema=SUMMARY_SCHEMA,
    summarize=summarize,
)
