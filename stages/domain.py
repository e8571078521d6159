"""Domain tags for the mixes: every document leaves this stage with ``domain`` (one of
``DOMAINS``) and ``domain_score``, the confidence in that tag.

LongCat-Flash's mid-training raises STEM and code to 70% of the tokens and its
long-context phases add books and repository code, so a mix must be able to select
by these tags. The tagger is a set of transparent rules, measured against labelled
folders in ``bench/quality.py``, rather than a model: it needs no training data, and
a wrong tag can be traced to the feature that caused it.

* ``code``: by source format (the reader knows source files by their extension).
* ``stem``: a STEM score from three densities, each divided by the density that counts
  as full evidence, summed into ``1 - exp(-sum)``: science and mathematics vocabulary
  (``resources/stem_terms.txt``), LaTeX (``\\command``, ``$``) and mathematical notation
  (``= < > ^``, operators between digits, symbols such as ``∑ ∫ ≤``). Words are read
  the way documentation writes them too: ``TensorIndexType`` and ``riemann_cyclic`` are
  split into their words, and a plural matches its listed singular. Markup is not
  text: reStructuredText directives and field lines (``.. autoclass::``,
  ``:members:``) do not count as words, and a ``<word>`` in angle brackets (a title
  in Korean or Chinese typography, a leftover tag) is no comparison, and a ``$ `` that
  opens a line is a shell prompt, not LaTeX.
* ``books``: long-form text of at least ``min_book_chars`` that is not STEM.
* ``web``: everything else (general prose, wherever it came from).

The stage never rejects a document.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from stages.base import Resources, Stage, StageConfig, set_column, with_reasons

DOMAIN = "domain"
DOMAIN_SCORE = "domain_score"
DOMAINS = ("web", "stem", "code", "books")
STEM_TERMS_PATH = Path(__file__).parent / "resources" / "stem_terms.txt"

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
# "$" before a digit is a price; "-" and "/" between digits are dates, scores, ranges.
_LATEX = re.compile(r"\\[A-Za-z]+|\$(?!\s?\d)")
# "$ make install" at the start of a line is a shell prompt, not mathematics.
_SHELL_PROMPT = re.compile(r"^[ \t]*\$[ \t]", re.M)
_MATH = re.compile(r"[=<>^≤≥≠±×÷∑∏∫√∞∂∇∈∉⊂⊆∀∃↦≈≡]|\d\s*[+*]\s*\d")
# Rules and underlines ("=====", "^^^^", "----") are layout, not mathematics.
_MARK_RUN = re.compile(r"([^\w\s])\1{2,}")
# "<title>" quotes a name or is a leftover tag; "a < b" and "x<2" stay comparisons.
_ANGLE_QUOTE = re.compile(r"<[^\W\d_][^<>=$\\\n]{0,40}?[^\s<>=$\\]>")
# reStructuredText markup: ".. autoclass::" directive names, ":members:" field lines.
_RST_DIRECTIVE = re.compile(r"^\s*\.\.\s+[\w:-]+::|^\s*:[\w -]+:(?=\s|$)", re.M)
# camelCase and PascalCase boundaries: "TensorIndexType" -> "Tensor Index Type".
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


class DomainConfig(StageConfig):
    """Where the rules draw their lines; defaults measured by bench/quality.py."""

    min_stem_score: float = Field(default=0.5, ge=0.0, le=1.0)
    """A document scoring at least this is ``stem`` (the score is 1 - exp(-evidence))."""

    stem_terms_share: float = Field(default=0.03, gt=0.0)
    """Share of words from the STEM vocabulary that counts as one unit of evidence."""

    latex_per_kchar: float = Field(default=8.0, gt=0.0)
    """LaTeX commands and ``$`` per 1,000 visible characters for one unit of evidence."""

    math_per_kchar: float = Field(default=12.0, gt=0.0)
    """Mathematical marks per 1,000 visible characters for one unit of evidence."""

    min_book_chars: int | None = Field(default=150_000, gt=0)
    """Non-STEM text at least this long is ``books``: about 32k tokens, enough to fill a
    32k context alone (LongCat-Flash's first long-context phase). None: no books tag."""

    max_chars: int | None = Field(default=20_000, gt=0)
    """Characters the STEM features read (length is always the full text)."""

    stem_terms_path: str | None = None
    """A vocabulary file (one word a line, ``#`` comments); None: the shipped list."""


def load_terms(path: str | Path) -> frozenset[str]:
    lines = Path(path).read_text("utf-8").splitlines()
    return frozenset(w.strip().casefold() for w in lines if w.strip() and w[0] != "#")


def words_of(text: str) -> list[str]:
    """Case-folded words, identifiers split at camelCase and underscores, markup out."""
    text = _RST_DIRECTIVE.sub(" ", text)
    return [part.casefold() for word in _WORD.findall(text) for part in _CAMEL.split(word) if part]


def is_term(word: str, terms: frozenset[str]) -> bool:
    """A listed word, or the plural of one ("theorems", "matrices" are listed)."""
    if word in terms:
        return True
    if not word.endswith("s"):
        return False
    stems = (word[:-1], word[:-2] if word.endswith("es") else "", word[:-3] + "y")
    return any(stem in terms for stem in stems[:2]) or (word.endswith("ies") and stems[2] in terms)


def stem_evidence(text: str, terms: frozenset[str], cfg: DomainConfig) -> dict[str, float]:
    """The three densities, each in units of ``cfg``'s full-evidence levels."""
    words = words_of(text)
    marks = _ANGLE_QUOTE.sub(" ", _SHELL_PROMPT.sub(" ", _MARK_RUN.sub(" ", text)))
    visible = max(sum(not c.isspace() for c in text), 1)
    share = sum(is_term(w, terms) for w in words) / max(len(words), 1)
    return {
        "terms": share / cfg.stem_terms_share,
        "latex": len(_LATEX.findall(marks)) * 1000 / visible / cfg.latex_per_kchar,
        "math": len(_MATH.findall(marks)) * 1000 / visible / cfg.math_per_kchar,
    }


def stem_score(text: str, terms: frozenset[str], cfg: DomainConfig) -> float:
    return 1.0 - math.exp(-sum(stem_evidence(text, terms, cfg).values()))


def tag_document(
    text: str | None, fmt: str | None, terms: frozenset[str], cfg: DomainConfig
) -> tuple[str, float]:
    """(domain, confidence): 1 for code, the STEM score for stem, 1 - it otherwise."""
    if fmt == "code":
        return "code", 1.0
    text = text or ""
    sample = text if cfg.max_chars is None else text[: cfg.max_chars]
    score = stem_score(sample, terms, cfg)
    if score >= cfg.min_stem_score:
        return "stem", score
    if cfg.min_book_chars is not None and len(text) >= cfg.min_book_chars:
        return "books", 1.0 - score
    return "web", 1.0 - score


class Domain(Stage):
    """Adds ``domain`` and ``domain_score``; keeps every row."""

    name: ClassVar[str] = "domain"
    resources: ClassVar[Resources] = Resources(cpus=0.5)
    config_class: ClassVar[type[StageConfig]] = DomainConfig

    def __init__(self, cfg: DomainConfig) -> None:
        super().__init__(cfg)
        self.cfg: DomainConfig = cfg
        self.terms = load_terms(cfg.stem_terms_path or STEM_TERMS_PATH)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        rows = zip(_column(batch, "text", n), _column(batch, "format", n), strict=True)
        tags = [tag_document(text, fmt, self.terms, self.cfg) for text, fmt in rows]
        batch = set_column(batch, DOMAIN, pa.array([d for d, _ in tags], pa.string()))
        batch = set_column(batch, DOMAIN_SCORE, pa.array([s for _, s in tags], pa.float32()))
        return with_reasons(batch, [None] * n)


def _column(batch: pa.Table, name: str, rows: int) -> list[str | None]:
    return batch.column(name).to_pylist() if name in batch.column_names else [None] * rows
