"""The report's drill-downs: example documents per reject reason, kept and rejected per
source, host and language, and every scored rule's distribution against its threshold.

Why collapsible blocks and not more plots: the question after "16 documents were
dropped for quality" is "which ones?", answered by reading a few of them; ``<details>``
keeps those pages of text one click away without burying the numbers.
"""

from __future__ import annotations

import html

from report import plots
from report.data import RunData
from report.markup import Num, Text, details, figure, missing, note, table
from report.rejects import (
    DIMENSIONS,
    NO_LANGUAGE,
    NOT_RECORDED,
    Drilldown,
    GroupCounts,
    sorted_groups,
    top_reasons,
)
from report.scores import RuleScores, ScoredRule

SHOWN_GROUPS = 20  # rows of a breakdown table before the rest fold away
BAR_GROUPS = 15
DIMENSION_TITLES = {"source": "input", "host": "host", "language": "language"}
EXAMPLE_HEADERS = ["id", "source", "URL", "language", "score", "threshold", "snippet"]


def _threshold_cell(value: float | None) -> Num:
    """A whole-number threshold (200 characters) shows as one, not as 200.0000."""
    if value is None:
        return Num(None)
    return Num(int(value)) if float(value).is_integer() else Num(value)


def _documents(n: int) -> str:
    return f"{n:,} document{'' if n == 1 else 's'}"


def _threshold(rules: list[ScoredRule], stage: str, reason: str) -> ScoredRule | None:
    return next((r for r in rules if r.matches(stage, reason)), None)


def example_table(name: str, rows: list[dict], rule: ScoredRule | None) -> str:
    cells = [
        [
            Text(row["id"] or "–", "id"),
            row["source"] or "–",
            Text(row["url"] or "–", "url"),
            row["language"] or "–",
            Num(row["score"]),
            _threshold_cell(rule.threshold_for(row["language"])) if rule else Num(None),
            Text(row["snippet"], "snippet"),
        ]
        for row in rows
    ]
    return table(name, EXAMPLE_HEADERS, cells)


def reason_examples(data: RunData) -> str:
    """One collapsed block per reject reason: its count, its share, its first documents."""
    drill, funnel = data.drilldown, data.funnel
    if drill is None or not drill.rows or funnel is None:
        return missing("No rejects sink (curated/rejects/) in this run: no examples to show.")
    stages, run_input = funnel.ledger["stages"], funnel.ledger["stages"][funnel.order[0]]["input"]
    blocks = []
    for stage in funnel.order:
        entry = stages[stage]
        for reason, count in sorted(
            {**entry["rejected"], **entry["errors"]}.items(), key=lambda item: -item[1]
        ):
            rows = drill.examples.get((stage, reason), [])
            rule = _threshold(data.rules, stage, reason)
            limit = (
                f"; kept when {rule.measure} {'≥' if rule.keeps_above else '≤'} {rule.threshold:g}"
                if rule
                else ""
            )
            summary = (
                f"{stage}: {reason} — {_documents(count)}, {count / max(entry['input'], 1):.1%} "
                f"of the stage's input, {count / max(run_input, 1):.1%} of the run's{limit}"
            )
            body = (
                example_table(f"examples-{stage}-{reason}", rows, rule)
                if rows
                else note("The rejects sink holds no row for this reason.")
            )
            blocks.append(details(summary, body, f"reason-{stage}-{reason}"))
    shown = f"first {min(5, max(len(v) for v in drill.examples.values()))}"
    return (
        "<h3>Rejected documents by reason</h3>"
        + note(
            f"Click a reason for its {shown} documents (id, source, URL, the recorded score "
            "against the threshold, the first characters of the text)."
        )
        + "\n".join(blocks)
    )


# -- per source, host and language ----------------------------------------------------


def _group_rows(groups: list[tuple[str, GroupCounts]]) -> list[list]:
    return [
        [
            value,
            Num(g.kept),
            Num(g.rejected),
            Num(g.rejected / (g.kept + g.rejected) if g.kept + g.rejected else None, 3),
            top_reasons(g) or "–",
        ]
        for value, g in groups
    ]


def _dimension_table(drill: Drilldown, dimension: str) -> str:
    groups = sorted_groups(drill.groups[dimension])
    headers = [DIMENSION_TITLES[dimension], "kept", "rejected", "rejected share", "top reasons"]
    rows = _group_rows(groups)
    if dimension == "language" and drill.language_source == "ledger":
        headers.append("rows in rejects/")
        for row, (value, _) in zip(rows, groups, strict=True):
            row.append(Num(drill.sink_language_rows.get(value, 0)))
    parts = [table(f"by-{dimension}", headers, rows[:SHOWN_GROUPS])]
    if len(groups) > SHOWN_GROUPS:
        rest = table(f"by-{dimension}-more", headers, rows[SHOWN_GROUPS:])
        parts.append(details(f"{len(groups) - SHOWN_GROUPS:,} more {dimension}s", rest))
    return "\n".join(parts)


def _language_examples(drill: Drilldown, rules: list[ScoredRule]) -> str:
    """Per language with rejects: its top reasons, each with a few of its documents."""
    blocks = []
    for language, group in sorted_groups(drill.groups["language"]):
        if not group.rejected:
            continue
        inner = []
        for (stage, reason), n in group.reasons.most_common(3):
            rows = drill.language_examples.get((language, stage, reason), [])
            inner.append(f"<p>{html.escape(f'{stage}: {reason} — {_documents(n)}')}</p>")
            rule = _threshold(rules, stage, reason)
            inner.append(example_table(f"lang-examples-{language}-{stage}-{reason}", rows, rule))
        (stage, reason), n = group.reasons.most_common(1)[0]
        summary = (
            f"{language}: {group.rejected:,} rejected of {group.kept + group.rejected:,}; "
            f"most by {stage}: {reason} ({n:,})"
        )
        blocks.append(details(summary, "\n".join(inner), f"language-{language}"))
    return "\n".join(blocks)


def breakdown_section(data: RunData) -> str:
    drill = data.drilldown
    if drill is None or not any(drill.groups[d] for d in DIMENSIONS):
        return missing("No curated documents or rejects in this run: nothing to break down.")
    panels = [
        (
            f"by {DIMENSION_TITLES[d]}",
            [(v, g.kept, g.rejected) for v, g in sorted_groups(drill.groups[d])[:BAR_GROUPS]],
        )
        for d in ("language", "source", "host")
    ]
    parts = [
        note(
            "Kept: documents in the curated set. Rejected: rows of the rejects sink, by the "
            f"stage and reason that dropped them. Language {NO_LANGUAGE!r}: dropped before "
            "language identification ran; 'code': source files, which language id leaves alone."
        ),
        figure(
            plots.kept_rejected_bars(panels),
            "Kept and rejected documents per language, "
            f"input and host (the {BAR_GROUPS} largest of each)",
        ),
    ]
    if not drill.rejects_have_language:
        parts.append(
            missing(
                "The rejects of this run carry no language column (written before the "
                f"pipeline recorded one): rejected documents are counted as {NOT_RECORDED!r}."
            )
        )
    for dimension in ("language", "source", "host"):
        parts.append(f"<h3>By {DIMENSION_TITLES[dimension]}</h3>")
        if dimension == "language" and drill.language_source == "ledger":
            parts.append(
                note(
                    "Counts from the ledger's per-language record (the pipeline's own "
                    "count); the last column counts the rows of the rejects sink per language."
                )
            )
        parts.append(_dimension_table(drill, dimension))
        if dimension == "language":
            parts.append(_language_examples(drill, data.rules))
    return "\n".join(parts)


# -- scores against thresholds --------------------------------------------------------


def scores_section(data: RunData) -> str:
    if data.run_config is None:
        return missing(
            "No curated/run.json in this run: the thresholds the rules used are unknown."
        )
    scored = data.rule_scores
    if not scored:
        return missing("No rule of this run recorded a score (none dropped a document).")
    panels = [
        (
            f"{s.rule.stage}: {s.rule.reason.rstrip(':')}",
            s.kept,
            s.dropped,
            s.rule.threshold,
            s.rule.measure,
        )
        for s in scored
    ]
    rows = [_score_row(s) for s in scored]
    parts = [
        note(
            "Blue: curated documents' scores, where the documents carry the score as a "
            "column; red: the scores the rejects sink recorded for the documents this rule "
            "dropped. The dashed line is the run's threshold (curated/run.json); where a "
            "language has its own (language id, heuristics for unspaced scripts), the table "
            "lists those of the languages in this run, and the dropped side counts each "
            "document against its own language's threshold."
        ),
        figure(plots.score_distributions(panels), "Scores of each rule against its threshold"),
        table(
            "scores",
            [
                "stage",
                "rule",
                "threshold",
                "value",
                "kept (recorded)",
                "dropped",
                "on the dropped side",
                "own thresholds of this run's languages",
                "verdict",
            ],
            rows,
        ),
    ]
    if data.unscored_rules:
        names = ", ".join(f"{r.stage}: {r.reason.rstrip(':')}" for r in data.unscored_rules)
        parts.append(
            details(
                f"{len(data.unscored_rules)} more configured rules dropped no document and "
                "record no score for kept ones",
                note(names),
            )
        )
    return "\n".join(parts)


def _score_row(scores: RuleScores) -> list:
    """One rule: its threshold, how many scores each side recorded, the share of scored
    documents beyond the threshold, and where the threshold sits, in words."""
    rule = scores.rule
    kept = None if scores.kept is None else int(scores.kept.size)
    return [
        rule.stage,
        rule.reason.rstrip(":"),
        f"{rule.threshold_name} (keeps {'≥' if rule.keeps_above else '≤'})",
        _threshold_cell(rule.threshold),
        Num(kept) if kept is not None else "not recorded",
        Num(int(scores.dropped.size)),
        Num(scores.dropped_side_share(), 3),
        rule.language_note(scores.languages()) or "–",
        scores.verdict(),
    ]
