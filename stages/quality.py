"""Model-based quality filtering, the first of LongCat-Flash's two quality steps: a
fastText classifier scores how much a document looks like reference-quality text, and
documents below a threshold are dropped (DCLM's recipe: positives are curated
reference text, negatives random crawl).

The classifier is trained by the project (``python -m pipeline train-quality``,
``pipeline/train_quality.py``); no pretrained quality model is downloaded. Training
and scoring share ``model_text`` so the model sees the same kind of input in both.
fastText models cannot be pickled, so each actor loads its own copy in ``__init__``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from stages.base import Resources, Stage, StageConfig, set_column, with_reasons

LABEL_POSITIVE = "__label__positive"
LABEL_NEGATIVE = "__label__negative"
QUALITY_SCORE = "quality_score"
REASON_BELOW_MIN = "quality_below_min"

_TOKEN = re.compile(r"\w+|[^\w\s]")


class QualityConfig(StageConfig):
    """Which model scores the documents and where the threshold lies."""

    model_path: str
    """fastText model written by ``python -m pipeline train-quality``; a relative path is
    relative to the run config's folder. Local (or shared) storage: every worker loads it."""

    model_sha256: str | None = None
    """Expected SHA-256 of the model file. None: filled in from the file when the run
    config is loaded, so run.json names the model and a retrained one is a new run."""

    min_score: float | None = Field(default=0.5, ge=0.0, le=1.0)
    """Lowest P(positive) kept; None scores every document and drops none."""

    apply_to_formats: list[str] = Field(default_factory=lambda: ["html", "text"])
    """Document formats to score; others (code) keep a null score and pass."""

    languages: list[str] | None = None
    """Languages (langid codes) the classifier was trained on: documents in another
    language keep a null score and pass, since an English model says nothing about a
    German page. A null language (langid off) is scored. None scores every language."""

    max_chars: int | None = Field(default=2000, gt=0)
    """Characters of each document the model reads; keep it equal to the training
    ``example_chars`` so scoring sees what training saw. None reads everything."""

    def resolve_paths(self, base_dir: Path) -> QualityConfig:
        """Absolute model path and its digest (called by the run config loader)."""
        path, digest = locate_model_file(
            self.model_path, base_dir, self.model_sha256, "model_path", "model_sha256"
        )
        return self.model_copy(update={"model_path": path, "model_sha256": digest})


def locate_model_file(
    value: str, base_dir: Path, expected_sha256: str | None, path_key: str, digest_key: str
) -> tuple[str, str]:
    """(absolute path, sha256) of a trained model file; ValueError names the key at fault."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else (base_dir / path).resolve()
    if not path.is_file():
        raise ValueError(
            f"{path_key}: file not found: {path} (train it: python -m pipeline train-quality)"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if expected_sha256 is not None and expected_sha256 != digest:
        raise ValueError(f"{digest_key}: {path} has sha256 {digest}, not {expected_sha256}")
    return str(path), digest


def model_text(text: str, max_chars: int | None) -> str:
    """One line of case-folded tokens, punctuation split off: a small training set must
    not learn "Integers." and "integers" as two words. Shared with the trainer."""
    text = text.strip()
    if max_chars is not None:
        text = text[:max_chars]
    return " ".join(_TOKEN.findall(text.casefold()))


def positive_probability(model, lines: list[str]) -> np.ndarray:
    """P(positive) per line from a two-label fastText model."""
    if not lines:
        return np.zeros(0, np.float64)
    labels, probs = model.predict(lines, k=-1)
    scores = np.zeros(len(lines), np.float64)
    for i, (names, values) in enumerate(zip(labels, probs, strict=True)):
        for name, value in zip(names, values, strict=True):
            if name == LABEL_POSITIVE:
                scores[i] = value
    # fastText's softmax can overshoot 1 slightly, as in langid.
    return np.clip(scores, 0.0, 1.0)


class Quality(Stage):
    """Adds ``quality_score`` (P(positive)); drops documents below ``min_score``."""

    name: ClassVar[str] = "quality"
    requires: ClassVar[tuple[str, ...]] = ("fasttext:fasttext-numpy2",)
    resources: ClassVar[Resources] = Resources(cpus=0.5)
    config_class: ClassVar[type[StageConfig]] = QualityConfig

    def __init__(self, cfg: QualityConfig) -> None:
        import fasttext  # a stage module must import without its optional packages

        super().__init__(cfg)
        self.cfg: QualityConfig = cfg
        self.model = fasttext.load_model(cfg.model_path)
        labels = set(self.model.get_labels())
        if LABEL_POSITIVE not in labels:
            raise ValueError(f"{cfg.model_path}: not a quality model (labels {sorted(labels)})")

    def __call__(self, batch: pa.Table) -> pa.Table:
        inputs = self._model_inputs(batch)
        todo = [i for i, line in enumerate(inputs) if line]
        probabilities = positive_probability(self.model, [inputs[i] for i in todo])
        scores = np.full(batch.num_rows, np.nan)
        scores[todo] = probabilities
        # Nothing to read is the lowest quality there is (langid usually caught it first).
        scores[[i for i, line in enumerate(inputs) if line == ""]] = 0.0

        reasons: list[str | None] = [None] * batch.num_rows
        drop_scores: list[float | None] = [None] * batch.num_rows
        if self.cfg.min_score is not None:
            for i in np.flatnonzero(scores < self.cfg.min_score):  # NaN compares False
                reasons[i], drop_scores[i] = REASON_BELOW_MIN, float(scores[i])
        column = pa.array(scores, pa.float32(), mask=np.isnan(scores))
        return with_reasons(set_column(batch, QUALITY_SCORE, column), reasons, drop_scores)

    def _model_inputs(self, batch: pa.Table) -> list[str | None]:
        """One model line per document, "" for no text, None for rows left alone."""
        n = batch.num_rows
        rows = zip(
            _column(batch, "text", n),
            _column(batch, "format", n),
            _column(batch, "language", n),
            strict=True,
        )
        return [
            model_text(text or "", self.cfg.max_chars) if self._scores(fmt, language) else None
            for text, fmt, language in rows
        ]

    def _scores(self, fmt: str | None, language: str | None) -> bool:
        """A null format is treated as text, a null language as a wanted one: better
        scored than passed unseen."""
        if fmt is not None and fmt not in self.cfg.apply_to_formats:
            return False
        wanted = self.cfg.languages
        return wanted is None or language is None or language in wanted


def _column(batch: pa.Table, name: str, rows: int) -> list[str | None]:
    return batch.column(name).to_pylist() if name in batch.column_names else [None] * rows
