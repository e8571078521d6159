"""Where every document went: per-shard counts, merged into the run's ledger.

The ledger is the proof that nothing was lost: for every stage, what came in, what
went on, what was rejected (by reason) and what failed (``error:`` reasons), and for
the run as a whole ``input = kept + rejected + errors``, checked exactly.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from stages.base import DROP_REASON, DROP_STAGE, ERROR_PREFIX


def stage_counts(batch: pa.Table, stage_order: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Counts per stage for one shard whose rows carry ``drop_stage``/``drop_reason``.

    A stage's input is what the stages before it kept, so the counts chain.
    """
    dropped_at = batch.column(DROP_STAGE).to_pylist()
    reasons = batch.column(DROP_REASON).to_pylist()
    by_stage: dict[str, Counter[str]] = {stage: Counter() for stage in stage_order}
    for stage, reason in zip(dropped_at, reasons, strict=True):
        if reason is None:
            continue
        if stage not in by_stage:
            raise ValueError(f"row dropped by unknown stage {stage!r}")
        by_stage[stage][reason] += 1
    counts: dict[str, dict[str, Any]] = {}
    remaining = batch.num_rows
    for stage in stage_order:
        counts[stage] = _stage_entry(remaining, by_stage[stage])
        remaining = counts[stage]["kept"]
    return counts


def dedup_counts(candidates: int, reasons: Counter[str]) -> dict[str, Any]:
    """Counts for a global stage that only drops (dedup): input = candidates."""
    return _stage_entry(candidates, reasons)


def _stage_entry(input_rows: int, reasons: Counter[str]) -> dict[str, Any]:
    rejected = {r: n for r, n in sorted(reasons.items()) if not r.startswith(ERROR_PREFIX)}
    errors = {r: n for r, n in sorted(reasons.items()) if r.startswith(ERROR_PREFIX)}
    dropped = sum(rejected.values()) + sum(errors.values())
    return {
        "input": input_rows,
        "kept": input_rows - dropped,
        "rejected": rejected,
        "errors": errors,
    }


def merge_stage_counts(
    per_shard: Iterable[dict[str, dict[str, Any]]], stage_order: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Sum per-shard stage counts, in funnel order."""
    merged: dict[str, dict[str, Any]] = {
        stage: {"input": 0, "kept": 0, "rejected": {}, "errors": {}} for stage in stage_order
    }
    for counts in per_shard:
        if set(counts) != set(stage_order):
            raise ValueError(f"shard counts for {sorted(counts)}, expected {list(stage_order)}")
        for stage, entry in counts.items():
            total = merged[stage]
            total["input"] += entry["input"]
            total["kept"] += entry["kept"]
            for kind in ("rejected", "errors"):
                for reason, n in entry[kind].items():
                    total[kind][reason] = total[kind].get(reason, 0) + n
    for entry in merged.values():
        for kind in ("rejected", "errors"):
            entry[kind] = dict(sorted(entry[kind].items()))
    return merged


def build_ledger(stages: dict[str, dict[str, Any]], documents_written: int) -> dict[str, Any]:
    """The run's ledger, with the accounting identity checked against what was written."""
    order = list(stages)
    total_input = stages[order[0]]["input"] if order else 0
    rejected = sum(sum(entry["rejected"].values()) for entry in stages.values())
    errors = sum(sum(entry["errors"].values()) for entry in stages.values())
    kept = stages[order[-1]]["kept"] if order else 0
    chained = all(stages[a]["kept"] == stages[b]["input"] for a, b in itertools.pairwise(order))
    return {
        "stages": stages,
        "totals": {"input": total_input, "kept": kept, "rejected": rejected, "errors": errors},
        "documents_written": documents_written,
        "identity_holds": chained
        and total_input == kept + rejected + errors
        and kept == documents_written,
    }


def stage_changes(entry: dict[str, Any]) -> tuple[int, int] | None:
    """(documents kept but rewritten, lines removed from them) for a stage that edits
    text and reports it under ``report`` (template lines); None for the others. A stage
    that only edits drops nothing, so without this its funnel line would read as idle."""
    report = entry.get("report") or {}
    changed, lines = report.get("documents_changed"), report.get("lines_removed")
    if not isinstance(changed, int) or not isinstance(lines, int):
        return None
    return changed, lines


UNKNOWN_LANGUAGE = "und"  # ISO 639 "undetermined": dropped before language id, or code


def language_counts(batch: pa.Table) -> dict[str, dict[str, Any]]:
    """Per language (the ``language`` column; ``und`` where there is none), the rows
    kept and the rows dropped by ``stage:reason``: a filter that eats one language shows
    here even when the corpus-wide counts look normal."""
    n = batch.num_rows
    if "language" in batch.column_names:
        languages = batch.column("language").to_pylist()
    else:
        languages = [None] * n
    stages = (
        batch.column(DROP_STAGE).to_pylist() if DROP_STAGE in batch.column_names else [None] * n
    )
    reasons = batch.column(DROP_REASON).to_pylist()
    counts: dict[str, dict[str, Any]] = {}
    for language, stage, reason in zip(languages, stages, reasons, strict=True):
        entry = counts.setdefault(language or UNKNOWN_LANGUAGE, {"kept": 0, "dropped": {}})
        if reason is None:
            entry["kept"] += 1
        else:
            key = f"{stage}:{reason}"
            entry["dropped"][key] = entry["dropped"].get(key, 0) + 1
    return counts


def move_to_dropped(
    counts: dict[str, dict[str, Any]], dropped: pa.Table, stage: str
) -> dict[str, dict[str, Any]]:
    """``counts`` after a global step dropped ``dropped`` (rows kept until then)."""
    batch = dropped.select([c for c in ("language", DROP_REASON) if c in dropped.column_names])
    for language, entry in language_counts(
        batch.append_column(DROP_STAGE, pa.array([stage] * batch.num_rows, pa.string()))
    ).items():
        total = counts.setdefault(language, {"kept": 0, "dropped": {}})
        for key, n in entry["dropped"].items():
            total["kept"] -= n
            total["dropped"][key] = total["dropped"].get(key, 0) + n
    return counts


def merge_language_counts(per_shard: Iterable[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Sum per-shard language counts; languages ordered by documents in, most first."""
    merged: dict[str, dict[str, Any]] = {}
    for counts in per_shard:
        for language, entry in counts.items():
            total = merged.setdefault(language, {"kept": 0, "dropped": {}})
            total["kept"] += entry["kept"]
            for key, n in entry["dropped"].items():
                total["dropped"][key] = total["dropped"].get(key, 0) + n

    def documents_in(item: tuple[str, dict[str, Any]]) -> tuple[int, str]:
        return -(item[1]["kept"] + sum(item[1]["dropped"].values())), item[0]

    return {
        language: {"kept": entry["kept"], "dropped": dict(sorted(entry["dropped"].items()))}
        for language, entry in sorted(merged.items(), key=documents_in)
    }


def render_languages(languages: dict[str, dict[str, Any]], top: int = 12) -> str:
    """Kept and dropped per language, the largest first, with the top reasons."""
    lines = [f"{'language':<14}{'input':>10}{'kept':>10}{'dropped':>10}{'kept %':>9}  top reasons"]
    for language, entry in list(languages.items())[:top]:
        dropped = sum(entry["dropped"].values())
        total = entry["kept"] + dropped
        reasons = Counter(entry["dropped"]).most_common(3)
        lines.append(
            f"{language:<14}{total:>10}{entry['kept']:>10}{dropped:>10}"
            f"{100 * entry['kept'] / total if total else 0:>8.1f}%  "
            + ", ".join(f"{reason}={n}" for reason, n in reasons)
        )
    if len(languages) > top:
        rest = list(languages.values())[top:]
        kept = sum(e["kept"] for e in rest)
        dropped = sum(sum(e["dropped"].values()) for e in rest)
        lines.append(f"{f'{len(rest)} more':<14}{kept + dropped:>10}{kept:>10}{dropped:>10}")
    return "\n".join(lines)


def render_funnel(ledger: dict[str, Any]) -> str:
    """The funnel as the CLI prints it: one line per stage, then the identity. The
    ``changed`` column counts kept documents a stage rewrote (and the lines it took
    out), which are neither rejected nor untouched."""
    lines = [
        f"{'stage':<14}{'input':>10}{'kept':>10}{'rejected':>10}{'errors':>8}{'changed':>9}"
        "  top reasons"
    ]
    for stage, entry in ledger["stages"].items():
        reasons = Counter({**entry["rejected"], **entry["errors"]}).most_common(3)
        shown = [f"{reason}={n}" for reason, n in reasons]
        changes = stage_changes(entry)
        if changes is not None:
            shown.append(f"lines_removed={changes[1]} from {changes[0]} kept documents")
        lines.append(
            f"{stage:<14}{entry['input']:>10}{entry['kept']:>10}"
            f"{sum(entry['rejected'].values()):>10}{sum(entry['errors'].values()):>8}"
            f"{'' if changes is None else changes[0]:>9}  {', '.join(shown)}"
        )
    totals = ledger["totals"]
    verdict = "holds" if ledger["identity_holds"] else "DOES NOT HOLD"
    lines.append(
        f"input {totals['input']} = kept {totals['kept']} + rejected {totals['rejected']}"
        f" + errors {totals['errors']}: {verdict}"
    )
    if ledger.get("languages"):
        lines += ["", render_languages(ledger["languages"])]
    return "\n".join(lines)
