"""The tokenize stage: ids plus one end-of-document token, counts, kept columns."""

import json

import numpy as np
import pyarrow as pa
import pytest

from stages.tokens import (
    DEFAULT_EOS_TOKEN,
    Tokenize,
    TokenizeConfig,
    token_array,
    train_byte_level_bpe,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "Die Katze schläft auf dem Sofa. 猫が寝ている。",
    "",
]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    tokenizer = train_byte_level_bpe(TEXTS * 20, vocab_size_tokens=320)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def _batch(**extra):
    columns = {
        "id": [f"d{i}" for i in range(len(TEXTS))],
        "source": ["s"] * len(TEXTS),
        "language": ["en", None, "de", "en"],
        "format": ["text", "code", "html", "text"],
        "text": TEXTS,
        **extra,
    }
    return pa.table(columns)


def test_every_document_ends_with_the_eos_token_and_decodes_back(tokenizer_path):
    stage = Tokenize(TokenizeConfig(tokenizer_path=str(tokenizer_path), batch_rows=3))
    out = stage(_batch())
    assert out.column_names == ["id", "source", "language", "format", "n_tokens", "tokens"]
    assert stage.vocab_size <= 2**16  # a small vocabulary: two bytes a token
    assert out.schema.field("tokens").type == pa.list_(pa.uint16())
    for text, ids, count in zip(
        TEXTS, out["tokens"].to_pylist(), out["n_tokens"].to_pylist(), strict=True
    ):
        assert ids[-1] == stage.eos_id and stage.eos_id not in ids[:-1]
        assert count == len(ids)
        assert stage.tokenizer.decode(ids[:-1]) == text  # byte-level: lossless
    assert out["n_tokens"].to_pylist()[3] == 1  # an empty document is just its eos


def test_domain_and_quality_pass_through_when_curated_has_them(tokenizer_path):
    stage = Tokenize(TokenizeConfig(tokenizer_path=str(tokenizer_path)))
    batch = _batch(domain=["web", "code", "web", "stem"], quality_score=[0.9, 0.5, 0.1, 0.3])
    out = stage(batch)
    assert out.column_names[:6] == ["id", "domain", "source", "language", "quality_score", "format"]
    assert out["domain"].to_pylist() == ["web", "code", "web", "stem"]


def test_pad_token_defaults_to_eos_and_must_exist(tokenizer_path):
    stage = Tokenize(TokenizeConfig(tokenizer_path=str(tokenizer_path)))
    assert stage.pad_id == stage.eos_id == 0
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        Tokenize(TokenizeConfig(tokenizer_path=str(tokenizer_path), eos_token="<eos>"))


def test_token_array_matches_the_slow_construction():
    ids = [[5, 6, 7], [], [1], [2**32 - 2, 3]]
    fast = token_array(ids, eos_id=9)
    assert fast.equals(pa.array([[*i, 9] for i in ids], pa.list_(pa.uint32())))
    narrow = token_array([[5, 6, 7], [], [2**16 - 2]], eos_id=9, dtype=np.uint16)
    assert narrow.equals(pa.array([[5, 6, 7, 9], [9], [2**16 - 2, 9]], pa.list_(pa.uint16())))


def test_empty_batch_keeps_the_schema(tokenizer_path):
    stage = Tokenize(TokenizeConfig(tokenizer_path=str(tokenizer_path)))
    out = stage(_batch().slice(0, 0))
    assert out.num_rows == 0 and out.schema.field("tokens").type == pa.list_(pa.uint16())


def test_training_is_deterministic_and_puts_eos_first(tokenizer_path):
    again = train_byte_level_bpe(TEXTS * 20, vocab_size_tokens=320)
    assert json.loads(again.to_str()) == json.loads(tokenizer_path.read_text())
    assert again.token_to_id(DEFAULT_EOS_TOKEN) == 0
