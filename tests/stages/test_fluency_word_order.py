"""The word-order model and the fluency rule built on it, on hand-written prose: prose
gains from context, the same words shuffled lose; the saved model round-trips; the
stage rejects word salad with its gain, leaves short texts and other languages alone,
and resolves the model path like the other model files."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from stages.base import DROP_REASON, DROP_SCORE
from stages.fluency import REASON_WORD_SALAD, WORD_ORDER_GAIN, Fluency, FluencyConfig
from stages.word_order import MAX_VOCABULARY, WordOrderModel, shuffled_words, tokens
from tests.stages.test_fluency import REFERENCE as FLUENCY_REFERENCE

REFERENCE = [
    *sorted(set(FLUENCY_REFERENCE)),  # the two passages of test_fluency.py
    "The baker opens his shop before the sun is up. He mixes the flour with water and "
    "salt, leaves the dough to rest for an hour, and then shapes the loaves by hand. By "
    "seven o'clock the first customers are waiting at the door, and by noon most of the "
    "bread has been sold to the families who live in the narrow streets near the market.",
]
# New sentences in the reference's style: not one of them occurs in REFERENCE.
PROSE = (
    "In the morning the students walk along the river to the library, where they read "
    "until the lights go on. The farmers bring their wheat to the market in the town, and "
    "the baker buys the flour he needs for the week. When the water is high in the spring, "
    "the children stay away from the old mill and play in the streets near the harbour. "
    "The librarians order books for the readers who ask for them, and the boats wait for "
    "the tide before they leave for the sea."
)


@pytest.fixture(scope="module")
def model() -> WordOrderModel:
    return WordOrderModel.fit(REFERENCE, order=3, vocabulary_size=40)


def test_prose_gains_and_its_shuffled_words_lose(model: WordOrderModel) -> None:
    gain = model.order_gain(PROSE)
    salads = [model.order_gain(shuffled_words(PROSE, seed)) for seed in range(5)]
    assert gain is not None and gain > 0.0
    assert all(s is not None and s < 0.0 for s in salads), salads
    assert model.order_gain("", 1) is None and model.order_gain("Too short.", 50) is None


def test_encoding_keeps_frequent_words_and_classes_the_rest(model: WordOrderModel) -> None:
    assert tokens("It's 3.5 km, isn't it?") == ["It's", "3.5", "km", ",", "isn't", "it", "?"]
    encoded = model.encode("The Zebra walked quickly.")
    assert len(encoded) == 5  # one symbol per token, the full stop included
    assert encoded[0] == model.encode("the")  # case-folded vocabulary word
    assert model.encode("Zebra") != model.encode("zebra")  # capitalisation is a class
    assert model.encode("quietly") == model.encode("softly") != model.encode("soft")
    assert model.encode("walked") == model.encode("jumped")  # both -ed, both unknown


def test_shuffled_words_keeps_the_words(model: WordOrderModel) -> None:
    words = sorted(w.casefold() for w in tokens(PROSE) if w[0].isalnum())
    shuffled = shuffled_words(PROSE, 1)
    assert sorted(w.casefold() for w in tokens(shuffled) if w[0].isalnum()) == words
    assert shuffled != PROSE and shuffled.endswith(".")


def test_saved_model_round_trips(model: WordOrderModel, tmp_path) -> None:
    path = tmp_path / "words.npz"
    model.save(path)
    loaded = WordOrderModel.load(path)
    assert loaded.vocabulary == model.vocabulary
    assert loaded.order_gain(PROSE) == pytest.approx(model.order_gain(PROSE))
    np.savez(tmp_path / "other.npz", order=np.array(3))
    with pytest.raises(ValueError, match="not a word-order model"):
        WordOrderModel.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="vocabulary_size"):
        WordOrderModel.fit(REFERENCE, vocabulary_size=MAX_VOCABULARY + 1)


def test_stage_rejects_word_salad_with_its_gain(model: WordOrderModel, tmp_path) -> None:
    path = tmp_path / "words.npz"
    model.save(path)
    salad = shuffled_words(PROSE, 0)
    table = pa.table(
        {
            "text": [PROSE, salad, salad, salad],
            "format": ["text", "html", "code", "html"],
            "language": ["en", "en", "en", "de"],
        }
    )
    cfg = FluencyConfig(word_model_path=str(path), languages=["en"], word_order_min_tokens=20)
    out = Fluency(cfg)(table)
    assert out.column(DROP_REASON).to_pylist() == [None, REASON_WORD_SALAD, None, None]
    gains = out.column(WORD_ORDER_GAIN).to_pylist()
    assert gains[0] > 0.0 > gains[1]
    assert gains[2] is None and gains[3] is None  # code passes; German is not scored
    assert out.column(DROP_SCORE).to_pylist()[1] == pytest.approx(gains[1])
    off = Fluency(cfg.model_copy(update={"min_word_order_gain": None}))(table)
    assert off.column(DROP_REASON).null_count == 4  # the rule off, the column still there
    assert off.column(WORD_ORDER_GAIN).to_pylist()[1] == pytest.approx(gains[1])


def test_word_model_path_resolves_and_missing_file_is_named(
    model: WordOrderModel, tmp_path
) -> None:
    model.save(tmp_path / "words.npz")
    resolved = FluencyConfig(word_model_path="words.npz").resolve_paths(tmp_path)
    assert resolved.word_model_path == str(tmp_path / "words.npz")
    assert resolved.word_model_sha256 and len(resolved.word_model_sha256) == 64
    with pytest.raises(ValueError, match="word_model_path: file not found"):
        FluencyConfig(word_model_path="missing.npz").resolve_paths(tmp_path)
