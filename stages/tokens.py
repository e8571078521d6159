"""Tokenization: curated text -> token ids, one end-of-document token per document.

Any Hugging Face ``tokenizer.json`` works; ``train_byte_level_bpe`` trains a small one
on curated text when a run has none (the demo). The end-of-document token is what lets
the packer put several documents in one sequence and the trainer still see where each
ends, so it is appended here, once, and counted in ``n_tokens``.

Why the token column is built by hand: ``pa.array(list_of_lists)`` converts every id
through Python objects twice; flattening the ids with ``np.fromiter`` and inserting the
end-of-document ids in one ``np.insert`` keeps the stage within a few percent of a bare
``encode_batch`` (``bench/tokenizer_bench.py`` measures the ratio).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from model_hooks.shard_format import token_type
from stages.base import Resources, Stage, StageConfig

DEFAULT_EOS_TOKEN = "<|endoftext|>"
TOKENS = "tokens"
N_TOKENS = "n_tokens"
# Curated columns a tokenized shard keeps (those present), for mix selection and reports.
KEPT_COLUMNS = ("id", "domain", "source", "language", "quality_score", "format")


class TokenizeConfig(StageConfig):
    """Which tokenizer, and how documents end."""

    tokenizer_path: str
    """A Hugging Face ``tokenizer.json`` (``tokenizers.Tokenizer.from_file``)."""

    eos_token: str = DEFAULT_EOS_TOKEN
    """Appended to every document; must be in the tokenizer's vocabulary."""

    pad_token: str | None = None
    """Fills the unused end of packed rows; None pads with the end-of-document id
    (padding is masked out of attention and loss, so its id does not matter)."""

    text_column: str = "text"
    """The curated column that holds the text."""

    batch_rows: int = Field(default=512, gt=0)
    """Documents per ``encode_batch`` call: large enough for the tokenizer's threads,
    small enough to bound an actor's memory."""


class Tokenize(Stage):
    """Adds ``n_tokens`` and ``tokens`` (list<uint16> when the vocabulary fits 16 bits,
    else list<uint32>; ending with the eos id) and keeps only ``KEPT_COLUMNS``: the text
    itself is not needed after this point."""

    name: ClassVar[str] = "tokenize"
    requires: ClassVar[tuple[str, ...]] = ("tokenizers",)
    # Run as an actor pool (the tokenizer loads once per actor), sized by the runner to
    # the pending shards and the cluster's CPUs; each actor's encoder gets ``cpus`` threads.
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    config_class = TokenizeConfig

    def __init__(self, cfg: TokenizeConfig) -> None:
        from tokenizers import Tokenizer

        self.cfg = cfg
        self.tokenizer = Tokenizer.from_file(cfg.tokenizer_path)
        self.eos_id = token_id(self.tokenizer, cfg.eos_token)
        self.pad_id = (
            self.eos_id if cfg.pad_token is None else token_id(self.tokenizer, cfg.pad_token)
        )
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.token_type = pa.list_(token_type(self.vocab_size))  # half the bytes if it fits
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets we never use.
        self._encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)

    def encode(self, texts: list[str]) -> pa.ListArray:
        """Token ids of each text plus the end-of-document id, as one Arrow list array."""
        encodings = self._encode(texts, add_special_tokens=False)
        ids = [e.ids for e in encodings]
        return token_array(ids, self.eos_id, self.token_type.value_type.to_pandas_dtype())

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = [text or "" for text in batch.column(self.cfg.text_column).to_pylist()]
        parts = [
            self.encode(texts[start : start + self.cfg.batch_rows])
            for start in range(0, len(texts), self.cfg.batch_rows)
        ]
        tokens = pa.chunked_array(parts, self.token_type)
        kept = [name for name in KEPT_COLUMNS if name in batch.column_names]
        lengths = pa.chunked_array([pc.list_value_length(p) for p in parts], pa.int32())
        return batch.select(kept).append_column(N_TOKENS, lengths).append_column(TOKENS, tokens)


def token_id(tokenizer, token: str) -> int:
    """The id of a special token, or a clear error naming the token."""
    value = tokenizer.token_to_id(token)
    if value is None:
        raise ValueError(f"token {token!r} is not in the tokenizer's vocabulary")
    return int(value)


def token_array(ids: list[list[int]], eos_id: int, dtype: type = np.uint32) -> pa.ListArray:
    """``[[ids..., eos], ...]`` as list<dtype> without a per-element Python round trip."""
    lengths = np.fromiter(map(len, ids), np.int64, len(ids))
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(lengths + 1, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype, int(lengths.sum()))
    # Document k's eos goes after its ids: at offsets[k+1] - 1 in the output, which is
    # offsets[k+1] - (k+1) in ``flat`` (the k eos ids before it are not there yet).
    flat = np.insert(flat, offsets[1:] - np.arange(1, len(ids) + 1), dtype(eos_id))
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError("a batch of more than 2**31 tokens; lower batch_rows")
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat))


def train_byte_level_bpe(
    texts: Iterable[str],
    vocab_size_tokens: int,
    eos_token: str = DEFAULT_EOS_TOKEN,
    min_frequency: int = 2,
):
    """A byte-level BPE (GPT-2 style: any byte sequence encodes, nothing is unknown)
    trained on ``texts``; the end-of-document token is the first special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size_tokens,
        min_frequency=min_frequency,
        special_tokens=[eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer
