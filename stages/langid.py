"""Language identification with fastText's ``lid.176`` model, as in FineWeb and
LongCat-Flash's web pipeline: label every prose document, keep the languages a mix
wants, and drop documents the model is unsure about.

The model (``resources/lid.176.ftz``, CC BY-SA 3.0, see ``resources/NOTICE.md``)
ships with the package so that nothing downloads at run time. fastText models
cannot be pickled, so each actor loads its own copy in ``__init__``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from stages.base import Resources, Stage, StageConfig, set_column, with_reasons

DEFAULT_MODEL_PATH = Path(__file__).parent / "resources" / "lid.176.ftz"
LABEL_PREFIX = "__label__"

REASON_EMPTY = "empty_text"
REASON_LANGUAGE = "language_not_selected"
REASON_LOW_SCORE = "language_score_below_min"

LANGUAGE = "language"
LANGUAGE_SCORE = "language_score"

# Codes people write that lid.176 spells otherwise: it has one label for Norwegian
# Bokmål, "no" (and "nn" for Nynorsk).
LANGUAGE_ALIASES = {"nb": "no"}

# Thresholds below min_score for languages whose genuine text lid.176 scores low, set
# from bench/filter_recall.py (real news, the Debian handbook in 26 locales, Leipzig
# sentences): each is at or just below the lowest score of a genuine document of that
# language. lid.176 splits its probability between close neighbours (Norwegian and
# Danish, Croatian, Serbian and Bosnian, Indonesian and Malay), and technical prose that
# quotes commands loses probability to English in every language.
MIN_SCORE_BY_LANGUAGE: dict[str, float] = {
    "af": 0.6, "ar": 0.3, "bs": 0.3, "ca": 0.25, "cs": 0.5, "de": 0.4, "es": 0.5, "fa": 0.45,
    "fr": 0.3, "ga": 0.5, "hr": 0.3, "id": 0.45, "ja": 0.3, "la": 0.45, "ms": 0.45, "nl": 0.35,
    "nn": 0.5, "no": 0.25, "pl": 0.5, "ru": 0.5, "sh": 0.3, "sl": 0.5, "sr": 0.3, "sv": 0.3,
    "sw": 0.4, "tr": 0.5, "vi": 0.45, "zh": 0.4,
}  # fmt: skip


class LangIdConfig(StageConfig):
    """Which languages to keep and how sure the model must be."""

    languages: list[str] | None = None
    """Codes to keep, as lid.176 names them (ISO 639-1 where one exists: "en", "zh");
    None keeps every language."""

    min_score: float | None = Field(default=0.65, ge=0.0, le=1.0)
    """Lowest top-label probability kept for a language without its own entry in
    ``min_score_by_language``; 0.65 is FineWeb's English threshold. None switches the
    rule off."""

    min_score_by_language: dict[str, float] = Field(
        default_factory=lambda: dict(MIN_SCORE_BY_LANGUAGE)
    )
    """Per predicted language, the lowest probability kept instead of ``min_score``
    (FineWeb-2 sets one per language too). The defaults (``MIN_SCORE_BY_LANGUAGE``) are
    measured; ``{}`` uses ``min_score`` for every language."""

    model_path: str | None = None
    """A fastText language-id model; None uses the shipped lid.176.ftz."""

    apply_to_formats: list[str] = Field(default_factory=lambda: ["html", "text"])
    """Document formats to identify; others (code) keep a null language and pass."""

    max_chars: int | None = Field(default=2000, gt=0)
    """Characters of each document the model reads. Longer inputs cost time linearly
    and, on measured documents, barely change the label (bench/langid.py); None
    reads everything."""

    @field_validator("min_score_by_language")
    @classmethod
    def _check_scores(cls, scores: dict[str, float]) -> dict[str, float]:
        for language, score in scores.items():
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"{language!r}: a probability must be in [0, 1], got {score}")
        return {LANGUAGE_ALIASES.get(lang, lang): score for lang, score in scores.items()}

    @field_validator("languages")
    @classmethod
    def _aliases(cls, languages: list[str] | None) -> list[str] | None:
        if languages is None:
            return None
        return [LANGUAGE_ALIASES.get(lang, lang) for lang in languages]


class LangId(Stage):
    """Adds ``language`` and ``language_score``; drops unwanted or uncertain text."""

    name: ClassVar[str] = "langid"
    requires: ClassVar[tuple[str, ...]] = ("fasttext:fasttext-numpy2",)
    # One model per actor; half a core leaves the readers room on a small machine.
    resources: ClassVar[Resources] = Resources(cpus=0.5)
    config_class: ClassVar[type[StageConfig]] = LangIdConfig

    def __init__(self, cfg: LangIdConfig) -> None:
        import fasttext  # a stage module must import without its optional packages

        super().__init__(cfg)
        self.cfg: LangIdConfig = cfg
        self.model = fasttext.load_model(str(cfg.model_path or DEFAULT_MODEL_PATH))
        known = {label.removeprefix(LABEL_PREFIX) for label in self.model.get_labels()}
        self.keep = None if cfg.languages is None else frozenset(cfg.languages)
        unknown = sorted((self.keep or frozenset()) - known)
        if unknown:
            # A code the model never predicts would drop every document silently.
            raise ValueError(f"languages not in the model: {unknown}")

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = self._model_inputs(batch)
        todo = [i for i, text in enumerate(texts) if text]
        labels, probs = self.model.predict([texts[i] for i in todo], k=1)

        n = batch.num_rows
        languages: list[str | None] = [None] * n
        scores = np.full(n, np.nan, dtype=np.float32)
        for i, label, prob in zip(todo, labels, probs, strict=True):
            languages[i] = label[0].removeprefix(LABEL_PREFIX)
            scores[i] = prob[0]
        # The quantized model's softmax can overshoot 1 slightly (1.00003 seen).
        np.minimum(scores, 1.0, out=scores)

        reasons: list[str | None] = [None] * n
        drop_scores: list[float | None] = [None] * n
        for i, text in enumerate(texts):
            reason = self._reason(text, languages[i], float(scores[i]))
            if reason is not None:
                reasons[i] = reason
                drop_scores[i] = None if reason == REASON_EMPTY else float(scores[i])

        batch = set_column(batch, LANGUAGE, pa.array(languages, pa.string()))
        batch = set_column(
            batch, LANGUAGE_SCORE, pa.array(scores, pa.float32(), mask=np.isnan(scores))
        )
        return with_reasons(batch, reasons, drop_scores)

    def _model_inputs(self, batch: pa.Table) -> list[str | None]:
        """One line per document for fastText, "" for a document with no text, None
        for a document this stage leaves alone."""
        if "text" in batch.column_names:
            text = batch.column("text")
        else:  # nothing extracted: every row is rejected as empty, visibly
            text = pa.nulls(batch.num_rows, pa.string())
        # Trim first so that leading blank lines do not use up max_chars.
        text = pc.utf8_trim_whitespace(text)
        if self.cfg.max_chars is not None:
            text = pc.utf8_slice_codeunits(text, 0, self.cfg.max_chars)
        # fastText predicts one line; the whole document is one prediction.
        text = pc.replace_substring(text, "\n", " ")
        inputs = [t or "" for t in text.to_pylist()]
        if "format" in batch.column_names:
            wanted = set(self.cfg.apply_to_formats)
            # A null format is treated as text: better identified than passed unseen.
            for i, fmt in enumerate(batch.column("format").to_pylist()):
                if fmt is not None and fmt not in wanted:
                    inputs[i] = None
        return inputs

    def _reason(self, text: str | None, language: str | None, score: float) -> str | None:
        if text is None:
            return None
        if text == "":
            return REASON_EMPTY
        if self.keep is not None and language not in self.keep:
            return REASON_LANGUAGE
        minimum = self.cfg.min_score_by_language.get(language or "", self.cfg.min_score)
        if minimum is not None and score < minimum:
            return REASON_LOW_SCORE
        return None
