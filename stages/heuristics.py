"""Rule-based quality filters for prose: Gopher quality, Gopher repetition, C4 and
FineWeb, with their published default thresholds, applied in FineWeb's order.

LongCat-Flash's web pipeline, like FineWeb's, runs these cheap heuristics before any
model-based scoring. Each rule is one measure (``stages/heuristic_rules.py``) and one
threshold; a document fails on the first rule it breaks, and that rule's reason and
measured value become ``drop_reason`` and ``drop_score``. C4 also removes lines
(navigation, cookie notices, lines without terminal punctuation), so the kept documents
leave this stage with C4's cleaned text, and the presets after C4 judge that text, as in
datatrove's FineWeb pipeline; the line rules before C4 judge only the lines C4 will keep
(``skip_lines_c4_removes``). Dropped documents keep the text they arrived with.

Code documents pass untouched: these rules describe prose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from stages.base import Stage, StageConfig, map_documents, set_column, with_reasons
from stages.heuristic_rules import (
    FINEWEB_RULES,
    GOPHER_QUALITY_RULES,
    GOPHER_REPETITION_RULES,
    STOP_WORD_THRESHOLD,
    DocView,
    Measure,
    RuleSpec,
    c4_clean,
    rule_view,
)

Threshold = float | int | bool | None

PRESETS: dict[str, dict[str, Threshold]] = {
    # Rae et al. 2021, appendix A.1.1.
    "gopher_quality": {
        "min_words": 50,
        "max_words": 100_000,
        "min_mean_word_chars": 3,
        "max_mean_word_chars": 10,
        "max_hash_word_ratio": 0.1,
        "max_ellipsis_word_ratio": 0.1,
        "max_bullet_line_fraction": 0.9,
        "max_ellipsis_line_fraction": 0.3,
        "min_alpha_word_fraction": 0.8,
        "min_stop_words": 2,
    },
    # Rae et al. 2021, table A1.
    "gopher_repetition": {
        "max_dup_paragraph_fraction": 0.3,
        "max_dup_paragraph_char_fraction": 0.2,
        "max_dup_line_fraction": 0.3,
        "max_dup_line_char_fraction": 0.2,
        "max_top_2gram_char_fraction": 0.2,
        "max_top_3gram_char_fraction": 0.18,
        "max_top_4gram_char_fraction": 0.16,
        "max_dup_5gram_char_fraction": 0.15,
        "max_dup_6gram_char_fraction": 0.14,
        "max_dup_7gram_char_fraction": 0.13,
        "max_dup_8gram_char_fraction": 0.12,
        "max_dup_9gram_char_fraction": 0.11,
        "max_dup_10gram_char_fraction": 0.10,
    },
    # Raffel et al. 2020, section 2.2, with TFDS/datatrove's extra line rules, as FineWeb
    # ran it: without the end-of-line punctuation rule (FineWeb's own line rules replace
    # it; on real news it removed every line of pages that break paragraphs with <br>,
    # and of tables). The curly-bracket rule is off too: it drops any page with a "{",
    # which is most technical prose quoting code, and code-heavy STEM prose is what this
    # curriculum's mid-training wants. Set both to true for C4 as published.
    "c4": {
        "remove_citations": True,
        "max_word_chars": 1000,
        "require_terminal_punctuation": False,
        "min_line_words": 3,
        "remove_javascript_lines": True,
        "remove_policy_lines": True,
        "reject_lorem_ipsum": True,
        "reject_curly_bracket": False,
        "min_sentences": 5,
        "keep_blank_lines": False,
    },
    # Penedo et al. 2024, section 3.3.
    "fineweb": {
        "min_line_punctuation_fraction": 0.12,
        "max_short_line_fraction": 0.67,
        "short_line_max_chars": 30,
        # FineWeb published 0.01: one repeated photo credit or "}" line in a short page
        # broke it. On 1,500 genuine pages in 26 languages (bench/filter_recall.py) 0.01
        # kept 88.7% and 0.1 kept 93.2%, with the same 99.6% of the junk rejected
        # (Gopher's 0.2 on the same measure still runs). 0.01 is FineWeb as published.
        "max_dup_line_char_fraction": 0.1,
        "max_newline_word_ratio": 0.3,
    },
}

# Settings that shape a rule rather than switch one; None is not a value for them.
_REQUIRED = {"short_line_max_chars", "keep_blank_lines"}
_RULES: dict[str, tuple[RuleSpec, ...]] = {
    "gopher_quality": GOPHER_QUALITY_RULES,
    "gopher_repetition": GOPHER_REPETITION_RULES,
    "fineweb": FINEWEB_RULES,
}
C4 = "c4"

# lid.176 codes of languages written without spaces between words. Chinese and
# Japanese are judged with one word per Han or kana character (heuristic_rules.DocView);
# the others have no word boundaries we can find without a segmenter of their own.
CJK_LANGUAGES = ("zh", "ja", "wuu", "yue")
UNSEGMENTED_LANGUAGES = ("th", "lo", "km", "my", "bo")
UNSPACED_LANGUAGES = CJK_LANGUAGES + UNSEGMENTED_LANGUAGES
_CJK_OVERRIDES: dict[str, dict[str, Threshold]] = {
    # A character is not an English word: 50 characters is a short paragraph (kept as
    # the minimum), but a mean word length of 3-10 characters can never hold.
    "gopher_quality": {"min_mean_word_chars": None, "max_mean_word_chars": None},
    # FineWeb's short line is 30 characters: about ten Chinese characters.
    "fineweb": {"short_line_max_chars": 10},
}
_GOPHER_RATIOS_OFF: dict[str, Threshold] = {
    "min_words": None,
    "max_words": None,
    "min_mean_word_chars": None,
    "max_mean_word_chars": None,
    "max_hash_word_ratio": None,
    "max_ellipsis_word_ratio": None,
    "min_alpha_word_fraction": None,
}
_UNSEGMENTED_OVERRIDES: dict[str, dict[str, Threshold]] = {
    # Without word boundaries no per-word ratio means anything. The repetition rules stay:
    # their "words" are whitespace-separated phrases, and a phrase repeated is repetition
    # (switching them off let a Thai passage repeated three times through).
    "gopher_quality": _GOPHER_RATIOS_OFF,
    # Thai and Lao end sentences with a space, not a mark.
    "c4": {"min_line_words": None, "min_sentences": None},
    "fineweb": {"min_line_punctuation_fraction": None, "max_newline_word_ratio": None},
}
DEFAULT_LANGUAGE_OVERRIDES = {
    **{lang: _CJK_OVERRIDES for lang in CJK_LANGUAGES},
    **{lang: _UNSEGMENTED_OVERRIDES for lang in UNSEGMENTED_LANGUAGES},
}


def _known(names: Any) -> str:
    return ", ".join(sorted(names))


class HeuristicsConfig(StageConfig):
    """Which rule sets run, in which order, and any thresholds changed from the papers'."""

    presets: list[str] = Field(
        default_factory=lambda: ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
    )
    """Rule sets to apply, in this order (FineWeb's order by default); keys of PRESETS."""

    overrides: dict[str, dict[str, Threshold]] = Field(default_factory=dict)
    """Per preset, thresholds to change from PRESETS, e.g.
    ``{"c4": {"require_terminal_punctuation": False}}``; None switches that rule off."""

    apply_to_formats: list[str] = Field(default_factory=lambda: ["html", "text"])
    """Document formats judged; others (code) pass untouched. A null format is judged."""

    stop_word_languages: list[str] | None = Field(default_factory=lambda: ["en"])
    """Languages (the ``language`` column, lid.176 codes) the English stop-word rule
    applies to; without that column, or for a null language, it applies to every
    document. None applies it everywhere."""

    c4_sentence_languages: list[str] | None = Field(default_factory=lambda: ["en"])
    """Languages (the ``language`` column) C4's minimum of five sentences applies to;
    without that column, or for a null language, it applies to every document. None
    applies it everywhere. C4 and FineWeb are English corpora; FineWeb-2, their
    multilingual successor, runs no C4 rule on other languages, because a sentence
    count is not comparable across them (a Chinese news sentence strings clauses with
    commas, so a complete brief has three). C4's line filter still runs for every
    language."""

    language_overrides: dict[str, dict[str, dict[str, Threshold]]] = Field(
        default_factory=lambda: dict(DEFAULT_LANGUAGE_OVERRIDES)
    )
    """Per language (the ``language`` column), per preset, thresholds that replace the
    ones above for documents of that language (FineWeb-2 sets them per language too).
    The default switches off, for languages written without spaces, the rules whose
    measure has no meaning there: word lengths for Chinese and Japanese (whose words are
    single characters, see ``cjk_languages``), and every per-word ratio for Thai, Lao,
    Khmer, Burmese and Tibetan. ``{}`` applies the thresholds above
    everywhere."""

    table_cells: bool = True
    """Judge each table row (``| a | b |``, as extraction writes tables) cell by cell, each
    cell a line, instead of as one line of pipes that no line rule was written for. The
    kept text keeps its rows as they were."""

    cjk_languages: list[str] = Field(default_factory=lambda: list(CJK_LANGUAGES))
    """Languages whose Han and kana characters are each one word for every rule (ratios
    per character, character n-grams for repetition), instead of whitespace tokens that
    make a whole Chinese clause one "word"."""

    skip_lines_c4_removes: bool = True
    """Gopher's line rules (duplicate lines and paragraphs, bullet and ellipsis lines)
    count only the lines C4's word minimum keeps (``c4.min_line_words``, when the c4
    preset runs): a menu of one- and two-word link lines that extraction left around an
    article, and that C4 then removes from the kept text, no longer drops the article
    as "duplicated lines". False judges every line, as Gopher published."""

    @field_validator("presets")
    @classmethod
    def _check_presets(cls, presets: list[str]) -> list[str]:
        unknown = [name for name in presets if name not in PRESETS]
        if unknown:
            raise ValueError(f"unknown preset(s) {unknown}; known presets: {_known(PRESETS)}")
        if len(set(presets)) != len(presets):
            raise ValueError(f"a preset is listed twice: {presets}")
        return presets

    @model_validator(mode="after")
    def _check_overrides(self) -> HeuristicsConfig:
        _check_override_table("overrides", self.overrides, self.presets)
        for language, table in self.language_overrides.items():
            active = {p: t for p, t in table.items() if p in self.presets}  # others are moot
            _check_override_table(f"language_overrides[{language!r}]", active, self.presets)
        return self

    def thresholds(self, preset: str, language: str | None = None) -> dict[str, Threshold]:
        """The preset's published thresholds with this config's overrides applied (and
        the language's own, when it has some)."""
        merged = {**PRESETS[preset], **self.overrides.get(preset, {})}
        if language is not None:
            merged.update(self.language_overrides.get(language, {}).get(preset, {}))
        return merged


def _check_override_table(
    label: str, overrides: dict[str, dict[str, Threshold]], presets: list[str]
) -> None:
    for preset, changes in overrides.items():
        if preset not in presets:
            raise ValueError(f"{label} names preset {preset!r}, which is not in presets {presets}")
        defaults = PRESETS[preset]
        for name, value in changes.items():
            where = f"{label}[{preset!r}][{name!r}]"
            if name not in defaults:
                raise ValueError(
                    f"{where}: no such rule in preset {preset!r}; known rules: {_known(defaults)}"
                )
            _check_value(where, name, defaults[name], value)


def _check_value(where: str, name: str, default: Threshold, value: Threshold) -> None:
    if value is None:
        if name in _REQUIRED:
            raise ValueError(f"{where} cannot be None: it is a setting, not a rule")
        return
    if isinstance(default, bool) != isinstance(value, bool):
        kind = "true/false" if isinstance(default, bool) else "a number"
        raise ValueError(f"{where} must be {kind} or None, got {value!r}")
    if not isinstance(value, bool) and value < 0:
        raise ValueError(f"{where} must not be negative, got {value!r}")


class _Rule:
    """A RuleSpec bound to its threshold."""

    __slots__ = ("is_max", "limit", "measure", "params", "reason", "stop_words")

    def __init__(self, spec: RuleSpec, params: Mapping[str, Threshold]) -> None:
        self.reason = spec.reason
        self.measure: Measure = spec.measure
        self.params = params
        self.limit = float(params[spec.threshold])  # type: ignore[arg-type]
        self.is_max = spec.threshold.startswith("max_")
        self.stop_words = spec.threshold == STOP_WORD_THRESHOLD


def _applies(languages: frozenset[str] | None, language: str | None) -> bool:
    """Whether a rule limited to ``languages`` (None: every language) judges a document
    in ``language``; a document without a language is judged by every rule."""
    return languages is None or language is None or language in languages


class Heuristics(Stage):
    """Drops prose that fails a Gopher, C4 or FineWeb rule; applies C4's line removal."""

    name: ClassVar[str] = "heuristics"
    config_class: ClassVar[type[StageConfig]] = HeuristicsConfig

    def __init__(self, cfg: HeuristicsConfig) -> None:
        super().__init__(cfg)
        self.cfg: HeuristicsConfig = cfg
        self.steps = self._build_steps(None)
        self.steps_by_language = {lang: self._build_steps(lang) for lang in cfg.language_overrides}
        self.line_min_words = self._line_min_words(self.steps)
        self.line_min_words_by_language = {
            lang: self._line_min_words(steps) for lang, steps in self.steps_by_language.items()
        }
        self.formats = frozenset(cfg.apply_to_formats)
        self.cjk = frozenset(cfg.cjk_languages)
        self.stop_languages = (
            None if cfg.stop_word_languages is None else frozenset(cfg.stop_word_languages)
        )
        self.sentence_languages = (
            None if cfg.c4_sentence_languages is None else frozenset(cfg.c4_sentence_languages)
        )

    def _build_steps(self, language: str | None) -> list[list[_Rule] | dict[str, Threshold]]:
        """One step per preset: a list of bound rules, or C4's parameters for c4_clean."""
        steps: list[list[_Rule] | dict[str, Threshold]] = []
        for preset in self.cfg.presets:
            params = self.cfg.thresholds(preset, language)
            if preset == C4:
                steps.append({**params, "table_cells": self.cfg.table_cells})
            else:
                specs = [s for s in _RULES[preset] if params[s.threshold] is not None]
                steps.append([_Rule(spec, params) for spec in specs])
        return steps

    def _line_min_words(self, steps: list[list[_Rule] | dict[str, Threshold]]) -> int | None:
        """The words a line needs to be judged by the line rules: C4's line minimum when
        the c4 step runs (and skip_lines_c4_removes is on), else None (every line)."""
        if not self.cfg.skip_lines_c4_removes:
            return None
        minimum = next((step["min_line_words"] for step in steps if isinstance(step, dict)), None)
        return None if minimum is None else int(minimum)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        columns = batch.column_names
        texts = batch.column("text").to_pylist() if "text" in columns else [None] * n
        formats = batch.column("format").to_pylist() if "format" in columns else [None] * n
        languages = batch.column("language").to_pylist() if "language" in columns else [None] * n

        results, errors = map_documents(self._judge, zip(texts, formats, languages, strict=True))
        reasons: list[str | None] = []
        scores: list[float | None] = []
        new_texts = list(texts)
        for i, (result, error) in enumerate(zip(results, errors, strict=True)):
            if error is not None:
                reasons.append(error)
                scores.append(None)
                continue
            reason, score, kept_text = result
            reasons.append(reason)
            scores.append(score)
            if kept_text is not None:
                new_texts[i] = kept_text
        if new_texts != texts:
            text_type = batch.schema.field("text").type
            batch = set_column(batch, "text", pa.array(new_texts, text_type))
        return with_reasons(batch, reasons, scores)

    def _judge(
        self, row: tuple[str | None, str | None, str | None]
    ) -> tuple[str | None, float | None, str | None]:
        """``(reason, score, kept_text)`` for one document; kept_text is None when the
        text stays as it was."""
        text, fmt, language = row
        if fmt is not None and fmt not in self.formats:
            return None, None, None
        check_stop_words = _applies(self.stop_languages, language)
        count_sentences = _applies(self.sentence_languages, language)
        words = "cjk" if language in self.cjk else "whitespace"
        current = text or ""  # the text as the user gets it: tables stay rows
        view = rule_view if self.cfg.table_cells else str
        steps = self.steps_by_language.get(language, self.steps)
        min_line_words = self.line_min_words_by_language.get(language, self.line_min_words)
        doc = DocView(view(current), words, min_line_words)  # the text as the rules see it
        for step in steps:
            if isinstance(step, dict):
                params = step if count_sentences else {**step, "min_sentences": None}
                cleaned, reason, score = c4_clean(current, params, words == "cjk")
                if reason is not None:
                    return reason, score, None
                if cleaned != current:
                    current = cleaned
                    doc = DocView(view(current), words, min_line_words)
                continue
            for rule in step:
                if rule.stop_words and not check_stop_words:
                    continue
                value = rule.measure(doc, rule.params)
                if value > rule.limit if rule.is_max else value < rule.limit:
                    return rule.reason, value, None
        return None, None, (current if current != (text or "") else None)
