"""Every scored rule of the run: its scores, its threshold, and which side was dropped.

Why: a threshold is a guess until it is drawn on the distribution it cuts. A rule whose
line sits in the middle of the kept documents' scores throws away ordinary documents;
one far in the tail only removes outliers. The report draws, per rule, the scores of the
documents it dropped (``score`` in the rejects sink) and, where the curated documents
carry the same score as a column (language score, quality, fluency), the kept ones.

Where a score is not recorded the report says so and draws only what exists: the
heuristic rules, MinHash and template lines record the measured value of the documents
they drop, never of those they keep. Thresholds come from the run's own configuration
(``curated/run.json``, written by ``curate`` before it starts), with the heuristic
presets' published values under the run's overrides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from stages.heuristic_rules import FINEWEB_RULES, GOPHER_QUALITY_RULES, GOPHER_REPETITION_RULES
from stages.heuristics import PRESETS

MAX_KEPT_VALUES = 200_000
TAIL_SHARE = 0.05  # a threshold with fewer scored documents beyond it removes only outliers
HEURISTIC_RULES = {
    "gopher_quality": GOPHER_QUALITY_RULES,
    "gopher_repetition": GOPHER_REPETITION_RULES,
    "fineweb": FINEWEB_RULES,
}
# C4's one counted rule (its other reasons record 1.0 or 0.0: a yes/no, not a score).
C4_COUNTED = (("min_sentences", "c4_too_few_sentences"),)


@dataclass(frozen=True)
class ScoredRule:
    """One rule that compares a recorded score with a threshold from the config."""

    stage: str
    reason: str  # the reject reason; a trailing ":" matches every "reason:<name>"
    measure: str  # what the score is, in words
    threshold_name: str
    threshold: float
    keeps_above: bool  # True: documents scoring at or above the threshold are kept
    kept_column: str | None = None  # the curated documents' column with the same score
    # (language, its own threshold; None: the rule is off for it), where the config sets one
    by_language: tuple[tuple[str, float | None], ...] = ()

    def threshold_for(self, language: str | None) -> float | None:
        """The threshold a document of this language met (None: not judged by the rule)."""
        return dict(self.by_language).get(language or "", self.threshold)

    def thresholds_for(self, languages: list[str | None]) -> np.ndarray:
        """Per document, its threshold (NaN where the rule is off for its language)."""
        own = dict(self.by_language)
        return np.array(
            [np.nan if (t := own.get(lang or "", self.threshold)) is None else t
             for lang in languages], dtype=float,
        )  # fmt: skip

    def language_note(self, present: set[str]) -> str:
        """The per-language thresholds of the languages this run holds, in words."""
        own = [(lang, t) for lang, t in self.by_language if lang in present]
        return ", ".join(f"{lang} {'off' if t is None else f'{t:g}'}" for lang, t in sorted(own))

    def matches(self, stage: str, reason: str) -> bool:
        if stage != self.stage:
            return False
        return (
            reason.startswith(self.reason) if self.reason.endswith(":") else reason == self.reason
        )


@dataclass
class RuleScores:
    rule: ScoredRule
    kept: np.ndarray | None  # None: not recorded for kept documents
    dropped: np.ndarray
    kept_languages: list[str | None] = field(default_factory=list)  # parallel to kept
    dropped_languages: list[str | None] = field(default_factory=list)  # parallel to dropped

    def dropped_side_share(self) -> float | None:
        """Share of all recorded scores on the dropped side of their document's threshold
        (its language's own, where the config sets one)."""
        if self.kept is None:
            return None
        values = np.concatenate([self.kept, self.dropped])
        if not values.size:
            return None
        languages = _padded(self.kept_languages, self.kept.size)
        languages += _padded(self.dropped_languages, self.dropped.size)
        limits = self.rule.thresholds_for(languages)
        judged = np.isfinite(limits)
        if not judged.any():
            return None
        below = values[judged] < limits[judged]
        above = values[judged] > limits[judged]
        return float(np.mean(below if self.rule.keeps_above else above))

    def languages(self) -> set[str]:
        return {lang for lang in (*self.kept_languages, *self.dropped_languages) if lang}

    def verdict(self) -> str:
        """Whether the threshold cuts into the bulk of the distribution, in words."""
        if self.kept is None:
            return "kept side not recorded: cannot tell"
        values = np.concatenate([self.kept, self.dropped])
        if values.size < 4:
            return "too few scored documents to judge"
        low, high = np.quantile(values, [0.25, 0.75])
        share = self.dropped_side_share() or 0.0
        if low <= self.rule.threshold <= high:
            where = "cuts into the bulk"
        elif share >= TAIL_SHARE:
            where = "cuts into the edge of the bulk"
        else:
            where = "sits in the tail"
        return f"{where} (middle half of the scores: {low:.3g} to {high:.3g})"


def _padded(languages: list[str | None], size: int) -> list[str | None]:
    """The languages of ``size`` values; unknown (None) where none were recorded."""
    return list(languages[:size]) + [None] * max(0, size - len(languages))


def read_run_config(curated: Path) -> dict[str, Any] | None:
    """The curation config as the run recorded it, or None for a run without one."""
    path = curated / "run.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("config")


def scored_rules(stages: dict[str, Any]) -> list[ScoredRule]:
    """The rules of the configured stages whose threshold is a number (None: rule off)."""
    candidates: list[tuple[str, str, str, str, bool, str | None, Any, tuple]] = []

    def add(stage, reason, measure, name, keeps_above, column=None, settings=None, own=()):
        settings = stages.get(stage) if settings is None else settings
        if isinstance(settings, dict):
            candidates.append(
                (stage, reason, measure, name, keeps_above, column, settings.get(name), own)
            )

    add("extract", "no_extractable_text", "extracted characters", "min_text_chars", True)
    langid = stages.get("langid") if isinstance(stages.get("langid"), dict) else {}
    add(
        "langid",
        "language_score_below_min",
        "language-id probability",
        "min_score",
        True,
        "language_score",
        own=tuple(sorted((langid.get("min_score_by_language") or {}).items())),
    )
    add(
        "quality",
        "quality_below_min",
        "quality P(reference-like)",
        "min_score",
        True,
        "quality_score",
    )
    add(
        "fluency",
        "fluency_high_perplexity",
        "char 4-gram perplexity",
        "max_perplexity",
        False,
        "fluency_perplexity",
    )
    add(
        "fluency",
        "fluency_word_salad",
        "word-order gain (bits/token)",
        "min_word_order_gain",
        True,
        "fluency_word_order_gain",
    )
    add("fluency", "incomplete_few_sentences", "sentences", "min_sentences", True)
    add("fluency", "not_prose", "letter fraction", "min_letter_fraction", True)
    add(
        "decontaminate",
        "contaminated:",
        "n-grams shared with an eval set",
        "min_matched_ngrams",
        False,
    )
    add(
        "minhash_dedup",
        "near_duplicate",
        "Jaccard similarity to a kept document",
        "threshold",
        False,
    )
    add(
        "template_lines",
        "template_only",
        "characters left after template lines",
        "min_remaining_chars",
        True,
    )
    heuristics = stages.get("heuristics")
    if isinstance(heuristics, dict):
        overrides = heuristics.get("overrides") or {}
        per_language = heuristics.get("language_overrides") or {}
        for preset in heuristics.get("presets") or []:
            limits = {**PRESETS.get(preset, {}), **overrides.get(preset, {})}
            specs = [(s.threshold, s.reason) for s in HEURISTIC_RULES.get(preset, ())]
            for name, reason in specs if preset != "c4" else C4_COUNTED:
                own = tuple(
                    sorted(
                        (language, table[preset][name])
                        for language, table in per_language.items()
                        if name in (table.get(preset) or {})
                    )
                )
                add(
                    "heuristics",
                    reason,
                    name.split("_", 1)[1].replace("_", " "),
                    name,
                    name.startswith("min_"),
                    settings=limits,
                    own=own,
                )
    return [
        ScoredRule(stage, reason, measure, name, float(value), keeps_above, column, own)
        for stage, reason, measure, name, keeps_above, column, value, own in candidates
        if _number(value)
    ]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def kept_values(
    docs: list[Path], columns: list[str]
) -> dict[str, tuple[np.ndarray, list[str | None]]]:
    """The curated documents' score columns with each value's language (the first
    MAX_KEPT_VALUES finite values of each column)."""
    values: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    languages: dict[str, list[str | None]] = {c: [] for c in columns}
    for path in docs:
        names = pq.read_schema(path).names
        present = [c for c in columns if c in names]
        if not present:
            continue
        table = pq.read_table(path, columns=present + (["language"] if "language" in names else []))
        language = table.column("language").to_pylist() if "language" in names else None
        for name in present:
            column = table.column(name).to_numpy(zero_copy_only=False).astype(float)
            finite = np.isfinite(column)
            values[name].append(column[finite])
            if language is not None:
                languages[name].extend(lang for lang, f in zip(language, finite, strict=True) if f)
            else:
                languages[name].extend([None] * int(finite.sum()))
    joined = {
        c: (np.concatenate(v)[:MAX_KEPT_VALUES], languages[c][:MAX_KEPT_VALUES])
        for c, v in values.items()
        if v
    }
    return {c: v for c, v in joined.items() if v[0].size}


def rule_scores(
    rules: list[ScoredRule],
    dropped: dict[tuple[str, str], list[tuple[float, str | None]]],
    docs: list[Path],
) -> list[RuleScores]:
    """Per rule: the kept scores (when a column records them) and the dropped ones, each
    with its document's language. Rules with nothing recorded on either side are left
    out (they never fired and keep no score)."""
    columns = sorted({r.kept_column for r in rules if r.kept_column})
    kept = kept_values(docs, columns) if columns else {}
    result = []
    for rule in rules:
        pairs = [
            (v, lang)
            for (stage, reason), values in dropped.items()
            if rule.matches(stage, reason)
            for v, lang in values
            if v is not None and np.isfinite(v)
        ]
        scores = np.array([v for v, _ in pairs], dtype=float)
        kept_side, kept_languages = (
            kept.get(rule.kept_column, (None, [])) if rule.kept_column else (None, [])
        )
        if rule.kept_column and kept_side is None:
            kept_side = np.empty(0)  # recorded as a column, but no kept document has one
        if scores.size or (kept_side is not None and kept_side.size):
            result.append(
                RuleScores(rule, kept_side, scores, kept_languages, [lang for _, lang in pairs])
            )
    return result


def unscored_rules(rules: list[ScoredRule], shown: list[RuleScores]) -> list[ScoredRule]:
    """Configured rules that dropped nothing and record no score for kept documents."""
    drawn = {s.rule for s in shown}
    return [r for r in rules if r not in drawn]
