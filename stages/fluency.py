"""Fluency and completeness screening, LongCat-Flash's second quality step: after the
classifier, drop documents that are cut off, are mostly not prose, or read as
implausible language.

* Perplexity under a character n-gram model fitted on the quality classifier's
  positives (``stages/ngram_lm.py``, written by ``python -m pipeline train-quality``):
  keyword salad, symbol soup and markup debris score far above reference prose.
  The model knows the languages it was fitted on only, so ``languages`` limits it.
* Word-order gain under a word-class n-gram model fitted on the same positives
  (``stages/word_order.py``): bits per token that context saves over no context.
  Spun pages, real words shuffled into sentences, spell every word right and so pass
  the character model; their word order explains less than none (gain below 0).
* Completeness rules: the text must end a sentence (not "... and the process can
  stop once"), hold a few full sentences, and be mostly letters.

Each rule is one threshold, None switches it off; the measured value that failed is
``drop_score``. Code documents pass (``apply_to_formats``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from stages.base import Resources, Stage, StageConfig, set_column, with_reasons
from stages.ngram_lm import CharNgramLM
from stages.quality import locate_model_file
from stages.word_order import WordOrderModel

FLUENCY_PERPLEXITY = "fluency_perplexity"
WORD_ORDER_GAIN = "fluency_word_order_gain"
REASON_WORD_SALAD = "fluency_word_salad"
REASON_HIGH_PERPLEXITY = "fluency_high_perplexity"
REASON_ENDS_MID_SENTENCE = "incomplete_ends_mid_sentence"
REASON_FEW_SENTENCES = "incomplete_few_sentences"
REASON_NOT_PROSE = "not_prose"

# A sentence ends at . ! ? before a space, a closing quote or bracket, or the end; CJK
# full stops need no space. An ellipsis ("Read more...") is not an ending.
_SENTENCE_END = re.compile(r"(?<!\.)[.!?](?=[\s\"'”’»)\]]|$)|[。！？]")
_CLOSERS = "\"'”’»)]》」』"
_TERMINALS = (".", "!", "?", "。", "！", "？")
_MIN_SENTENCE_WORD_CHARS = 2  # a list number ("1.") alone is no sentence


class FluencyConfig(StageConfig):
    """Thresholds of the fluency and completeness rules; None switches a rule off."""

    lm_path: str | None = None
    """Character n-gram model (``fluency_lm.npz`` from train-quality); a relative path is
    relative to the run config's folder. None: no perplexity (rule and column off)."""

    lm_sha256: str | None = None
    """Expected SHA-256 of the model; None: filled in when the run config is loaded."""

    max_perplexity: float | None = Field(default=20.0, gt=1.0)
    """Highest per-character perplexity kept. Under the demo's 4-gram (fitted on its
    STEM notes and books) English prose measures 3-9, keyword spam and bullet lists
    14-24, lorem ipsum 27-32, symbol soup 160-285; the scale is the model's, so retune
    from the held-out medians train-quality prints."""

    perplexity_max_chars: int | None = Field(default=5000, gt=0)
    """Characters of each document the models score (time is linear in it)."""

    word_model_path: str | None = None
    """Word-order model (``fluency_words.npz`` from train-quality); a relative path is
    relative to the run config's folder. None: no word-order gain (rule and column off)."""

    word_model_sha256: str | None = None
    """Expected SHA-256 of the word-order model; None: filled in when the config is loaded."""

    min_word_order_gain: float | None = 0.0
    """Lowest word-order gain kept, in bits per token (n-gram minus unigram log2
    probability). 0 is where word order stops explaining anything. Held-out medians
    (train-quality prints them): reference prose +0.55 on the demo corpus and +2.3 on
    ../shared/data's books and SymPy docs, the same texts with their words shuffled
    -0.95 and -1.36; every kept demo document measured +0.25 or more."""

    word_order_min_tokens: int = Field(default=50, ge=1)
    """Fewer tokens (words and marks) than this: too short to judge, no gain (null)."""

    languages: list[str] | None = None
    """Languages (langid codes) the models were fitted on; other languages get no
    perplexity or gain (null) and skip those rules. A null language is scored. None: all."""

    require_sentence_end: bool = True
    """The text's last character (before closing quotes) must end a sentence."""

    min_sentences: int | None = Field(default=3, ge=1)
    """Fewest full sentences (a terminal mark after at least two letters or digits)."""

    min_letter_fraction: float | None = Field(default=0.5, ge=0.0, le=1.0)
    """Lowest share of letters among non-space characters; below it, not prose."""

    apply_to_formats: list[str] = Field(default_factory=lambda: ["html", "text"])
    """Document formats to screen; others (code) pass with a null perplexity."""

    def resolve_paths(self, base_dir: Path) -> FluencyConfig:
        """Absolute model paths and their digests (called by the run config loader)."""
        update: dict[str, str] = {}
        for path_key, digest_key in (
            ("lm_path", "lm_sha256"),
            ("word_model_path", "word_model_sha256"),
        ):
            if getattr(self, path_key) is not None:
                path, digest = locate_model_file(
                    getattr(self, path_key),
                    base_dir,
                    getattr(self, digest_key),
                    path_key,
                    digest_key,
                )
                update |= {path_key: path, digest_key: digest}
        return self.model_copy(update=update) if update else self


def letter_fraction(text: str) -> float | None:
    """Letters / non-space characters; None for text with no visible characters."""
    visible = [c for c in text if not c.isspace()]
    if not visible:
        return None
    return sum(c.isalpha() for c in visible) / len(visible)


def count_sentences(text: str) -> int:
    """Sentence endings with at least two word characters since the previous one."""
    count, start = 0, 0
    for match in _SENTENCE_END.finditer(text):
        if sum(c.isalnum() for c in text[start : match.start()]) >= _MIN_SENTENCE_WORD_CHARS:
            count += 1
        start = match.end()
    return count


def ends_sentence(text: str) -> bool:
    stripped = text.rstrip().rstrip(_CLOSERS).rstrip()
    return stripped.endswith(_TERMINALS) and not stripped.endswith("..")


class Fluency(Stage):
    """Adds ``fluency_perplexity``; drops incomplete, non-prose and implausible text."""

    name: ClassVar[str] = "fluency"
    resources: ClassVar[Resources] = Resources(cpus=0.5)
    config_class: ClassVar[type[StageConfig]] = FluencyConfig

    def __init__(self, cfg: FluencyConfig) -> None:
        super().__init__(cfg)
        self.cfg: FluencyConfig = cfg
        self.lm = None if cfg.lm_path is None else CharNgramLM.load(cfg.lm_path)
        self.words = (
            None if cfg.word_model_path is None else WordOrderModel.load(cfg.word_model_path)
        )
        self.formats = frozenset(cfg.apply_to_formats)
        self.languages = None if cfg.languages is None else frozenset(cfg.languages)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        texts = _column(batch, "text", n)
        formats = _column(batch, "format", n)
        languages = _column(batch, "language", n)
        perplexities: list[float | None] = [None] * n
        gains: list[float | None] = [None] * n
        reasons: list[str | None] = [None] * n
        scores: list[float | None] = [None] * n
        for i, (text, fmt, language) in enumerate(zip(texts, formats, languages, strict=True)):
            if fmt is not None and fmt not in self.formats:
                continue
            text = text or ""
            if self._scores_language(language):
                perplexities[i], gains[i] = self._measure(text)
            reasons[i], scores[i] = self._reason(text, perplexities[i], gains[i])
        batch = set_column(batch, FLUENCY_PERPLEXITY, pa.array(perplexities, pa.float32()))
        batch = set_column(batch, WORD_ORDER_GAIN, pa.array(gains, pa.float32()))
        return with_reasons(batch, reasons, scores)

    def _scores_language(self, language: str | None) -> bool:
        return self.languages is None or language is None or language in self.languages

    def _measure(self, text: str) -> tuple[float | None, float | None]:
        """(character perplexity, word-order gain) of the document's first characters."""
        limit = self.cfg.perplexity_max_chars
        sample = text if limit is None else text[:limit]
        perplexity = None if self.lm is None else self.lm.perplexity(sample)
        gain = None
        if self.words is not None:
            gain = self.words.order_gain(sample, self.cfg.word_order_min_tokens)
        return perplexity, gain

    def _reason(
        self, text: str, perplexity: float | None, gain: float | None
    ) -> tuple[str | None, float | None]:
        """The first rule the document breaks, cheapest and most telling first."""
        cfg = self.cfg
        letters = letter_fraction(text)
        if _below(letters, cfg.min_letter_fraction):
            return REASON_NOT_PROSE, letters
        if cfg.min_sentences is not None:
            sentences = count_sentences(text)
            if sentences < cfg.min_sentences:
                return REASON_FEW_SENTENCES, float(sentences)
        if cfg.require_sentence_end and not ends_sentence(text):
            return REASON_ENDS_MID_SENTENCE, None
        if _below(cfg.max_perplexity, perplexity):
            return REASON_HIGH_PERPLEXITY, perplexity
        if _below(gain, cfg.min_word_order_gain):
            return REASON_WORD_SALAD, gain
        return None, None


def _below(value: float | None, threshold: float | None) -> bool:
    """A rule with no threshold, or nothing measured, does not fire."""
    return value is not None and threshold is not None and value < threshold


def _column(batch: pa.Table, name: str, rows: int) -> list[str | None]:
    return batch.column(name).to_pylist() if name in batch.column_names else [None] * rows
