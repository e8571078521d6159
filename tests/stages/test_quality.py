"""The quality stage on hand-made rows with a classifier trained here in a second:
scores, the reject reason, rows it leaves alone, edge cases and its config."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from pipeline.train_quality import load_train_config, train_quality
from stages.base import DROP_REASON, DROP_SCORE, missing_requirements
from stages.langid import DEFAULT_MODEL_PATH
from stages.quality import (
    QUALITY_SCORE,
    REASON_BELOW_MIN,
    Quality,
    QualityConfig,
    model_text,
)
from tests.quality_data import SCIENCE, SPAM, write_labelled_set

GOOD = " ".join(SCIENCE[:6])
BAD = " ".join(SPAM[:6])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    config = load_train_config(write_labelled_set(tmp_path_factory.mktemp("q")))
    train_quality(config.model_copy(update={"fluency_lm_order": None}))
    return str(Path(config.output_dir) / "quality.bin")


def run(model_path: str, texts, formats=None, languages=None, **cfg) -> pa.Table:
    columns = {"text": pa.array(texts, pa.string())}
    if formats is not None:
        columns["format"] = pa.array(formats, pa.string())
    if languages is not None:
        columns["language"] = pa.array(languages, pa.string())
    stage = Quality(QualityConfig(model_path=model_path, max_chars=600, **cfg))
    return stage(pa.table(columns))


def test_scores_and_rejects_below_min(model_path: str) -> None:
    out = run(model_path, [GOOD, BAD], min_score=0.5)
    good, bad = out.column(QUALITY_SCORE).to_pylist()
    assert 0.5 < good <= 1.0 and 0.0 <= bad < 0.5
    assert out.column(DROP_REASON).to_pylist() == [None, REASON_BELOW_MIN]
    assert out.column(DROP_SCORE).to_pylist()[1] == pytest.approx(bad)


def test_min_score_none_scores_without_dropping(model_path: str) -> None:
    out = run(model_path, [GOOD, BAD], min_score=None)
    assert out.column(DROP_REASON).null_count == 2
    assert out.column(QUALITY_SCORE).null_count == 0


def test_edge_cases_empty_one_line_and_missing_text(model_path: str) -> None:
    out = run(model_path, ["", "   \n  ", None, SCIENCE[0]], min_score=0.5)
    scores = out.column(QUALITY_SCORE).to_pylist()
    assert scores[:3] == [0.0, 0.0, 0.0]  # nothing to read: the lowest quality
    assert out.column(DROP_REASON).to_pylist()[:3] == [REASON_BELOW_MIN] * 3
    assert 0.0 <= scores[3] <= 1.0 and not math.isnan(scores[3])  # one line is scored


def test_code_and_other_languages_pass_unscored(model_path: str) -> None:
    stage = Quality(QualityConfig(model_path=model_path, max_chars=600, languages=["en"]))
    table = pa.table(
        {
            "text": [BAD] * 4,
            "format": ["code", "html", "text", None],
            "language": [None, "de", "en", None],
        }
    )
    out = stage(table)
    scores = out.column(QUALITY_SCORE).to_pylist()
    reasons = out.column(DROP_REASON).to_pylist()
    assert scores[0] is None and reasons[0] is None  # code
    assert scores[1] is None and reasons[1] is None  # German: the model knows English only
    assert scores[2] < 0.5 and reasons[2] == REASON_BELOW_MIN
    assert scores[3] < 0.5 and reasons[3] == REASON_BELOW_MIN  # null format/language: scored


def test_model_text_is_one_line_of_tokens() -> None:
    assert model_text("  Integers.\nARE  fine!  ", None) == "integers . are fine !"
    assert model_text("abcdef", 3) == "abc"
    assert "\n" not in model_text("a\n\nb\r\nc", None)


def test_config_validation_and_model_checks(model_path: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        QualityConfig(model_path=model_path, min_score=1.5)
    with pytest.raises(ValidationError):
        QualityConfig(model_path=model_path, threshold=0.5)  # unknown key
    with pytest.raises(ValidationError):
        QualityConfig()  # model_path is required: nothing is downloaded
    with pytest.raises(ValueError, match="model_path: file not found"):
        QualityConfig(model_path="nope.bin").resolve_paths(tmp_path)
    resolved = QualityConfig(model_path=model_path).resolve_paths(tmp_path)
    assert len(resolved.model_sha256) == 64
    with pytest.raises(ValueError, match="not a quality model"):
        Quality(QualityConfig(model_path=str(DEFAULT_MODEL_PATH)))  # lid.176: language labels
    assert missing_requirements(Quality) == []
