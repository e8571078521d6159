"""Packed training batches without shards: the batch contract the trainer consumes,
and a deterministic synthetic source of them for tests and demos until the packed-shard
token stream exists.

A batch is a dict of (B, T) tensors plus the domain names (``tokens``, ``positions``,
``doc_index`` and ``domain_ids`` are int64 here and int32 from ``TokenStream``, which
halves what it copies; the model and the trainer take either):

* ``tokens``; ``targets`` (the next token of the same document), int64 from every
  source: ``cross_entropy`` takes no int32 targets,
* ``loss_mask`` bool (False where there is no next token in the same document, and on
  padding),
* ``token_mask`` bool (False on padding: routing statistics and the bias controller
  count only real tokens),
* ``positions`` (position within its document, restarting at 0),
* ``doc_index`` (which document segment of the row a token belongs to; padding
  gets its own segment),
* ``domain_ids`` (index into ``domain_names``),
* ``domain_names`` list[str].

A source is an iterator of such dicts with ``state_dict()`` / ``load_state_dict()``
holding a few integers, so a checkpoint resumes on exactly the batch it stopped at.
``model_hooks.token_stream.TokenStream`` is the real source (packed shards); this
module also writes small packed phases (``write_packed_phase``) for tests and benches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from model_hooks.shard_format import (
    PACKED_SCHEMA,
    PhaseManifest,
    validate_rows,
    write_manifest,
    write_shard,
)

BATCH_KEYS = (
    "tokens", "targets", "loss_mask", "token_mask", "positions", "doc_index", "domain_ids"
)  # fmt: skip
PAD_ID = 0


def pack_rows(
    rows: Sequence[Sequence[tuple[torch.Tensor, int]]], seq_len: int, domain_names: list[str]
) -> dict:
    """Builds the batch dict from rows of (document tokens, domain id); a row longer
    than seq_len is cut, a shorter one padded with a masked segment of its own."""
    B = len(rows)
    out = {k: torch.zeros(B, seq_len, dtype=torch.long) for k in BATCH_KEYS}
    out["loss_mask"] = torch.zeros(B, seq_len, dtype=torch.bool)
    out["token_mask"] = torch.zeros(B, seq_len, dtype=torch.bool)
    for b, docs in enumerate(rows):
        start = 0
        for segment, (doc_tokens, domain) in enumerate(docs):
            n = min(len(doc_tokens), seq_len - start)
            if n <= 0:
                break
            span = slice(start, start + n)
            out["tokens"][b, span] = doc_tokens[:n]
            out["targets"][b, start : start + n - 1] = doc_tokens[1:n]
            out["loss_mask"][b, start : start + n - 1] = True
            out["token_mask"][b, span] = True
            out["positions"][b, span] = torch.arange(n)
            out["doc_index"][b, span] = segment
            out["domain_ids"][b, span] = domain
            start += n
        if start < seq_len:  # padding: a segment of its own, never in the loss
            out["tokens"][b, start:] = PAD_ID
            out["positions"][b, start:] = torch.arange(seq_len - start)
            out["doc_index"][b, start:] = len(docs)
    out["domain_names"] = list(domain_names)
    return out


class SyntheticBatches:
    """A small repetitive corpus: a document of domain d is an arithmetic progression
    mod vocab with stride 2d+1 from a random start, so a model can learn it fast and a
    falling loss is a real signal. Batch s is a pure function of (seed, s)."""

    VERSION = 1

    def __init__(
        self,
        batch_size: int,
        seq_len: int,
        vocab_size: int,
        domain_names: Sequence[str] = ("web", "code", "math"),
        seed: int = 0,
        min_doc_len: int = 8,
        max_doc_len: int = 40,
    ) -> None:
        self.batch_size, self.seq_len, self.vocab_size = batch_size, seq_len, vocab_size
        self.domain_names, self.seed = list(domain_names), seed
        self.min_doc_len, self.max_doc_len = min_doc_len, max_doc_len
        self.step = 0

    def batch_at(self, step: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        rows = []
        for _ in range(self.batch_size):
            docs, filled = [], 0
            while filled < self.seq_len:
                n = int(torch.randint(self.min_doc_len, self.max_doc_len + 1, (1,), generator=g))
                domain = int(torch.randint(len(self.domain_names), (1,), generator=g))
                first = int(torch.randint(1, self.vocab_size, (1,), generator=g))
                stride = 2 * domain + 1
                # Tokens 1..vocab-1 so PAD_ID never appears inside a document.
                doc = 1 + (first - 1 + stride * torch.arange(n)) % (self.vocab_size - 1)
                docs.append((doc, domain))
                filled += n
            rows.append(docs)
        return pack_rows(rows, self.seq_len, self.domain_names)

    def __iter__(self) -> SyntheticBatches:
        return self

    def __next__(self) -> dict:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict:
        return {"version": self.VERSION, "seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        if state["version"] != self.VERSION or state["seed"] != self.seed:
            raise ValueError(f"data state {state} does not match this source (seed {self.seed})")
        self.step = int(state["step"])


def progression_documents(
    n_docs: int,
    vocab_size: int,
    domain_names: Sequence[str] = ("web", "code", "math"),
    seed: int = 0,
    min_doc_len: int = 8,
    max_doc_len: int = 40,
) -> list[tuple[np.ndarray, str]]:
    """The same learnable corpus as SyntheticBatches, as (tokens, domain) documents for
    writing packed shards: stride 2d+1 progressions over tokens 1..vocab-1."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(min_doc_len, max_doc_len + 1))
        domain = int(rng.integers(len(domain_names)))
        first = int(rng.integers(1, vocab_size))
        tokens = 1 + (first - 1 + (2 * domain + 1) * np.arange(n)) % (vocab_size - 1)
        docs.append((tokens.astype(np.uint32), domain_names[domain]))
    return docs


def write_packed_phase(
    phase_dir: str | os.PathLike[str],
    docs: Sequence[tuple[Sequence[int] | np.ndarray, str]],
    seq_len: int,
    vocab_size: int,
    *,
    phase: str = "phase",
    rope_theta: float | None = None,
    rows_per_shard: int = 64,
    pad_id: int = PAD_ID,
) -> PhaseManifest:
    """Packed shards + manifest from documents, in the packed-shard format, for tests,
    benchmarks and demos. Sequential packing (each document fills the current row, a
    long one continues in the next rows); the real packer (``stages/pack.py``) packs
    better. Documents are ``(tokens, domain)``; ids are ``doc-{index}``."""
    out = Path(phase_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    row: dict = {}

    def new_row() -> dict:
        return {"tokens": [], "cu_seqlens": [0], "doc_ids": [], "domains": [], "doc_offsets": []}

    row = new_row()
    for index, (tokens, domain) in enumerate(docs):
        tokens, offset = np.asarray(tokens, dtype=np.uint32), 0
        while offset < len(tokens):
            take = min(len(tokens) - offset, seq_len - len(row["tokens"]))
            row["tokens"].extend(tokens[offset : offset + take].tolist())
            row["cu_seqlens"].append(len(row["tokens"]))
            row["doc_ids"].append(f"doc-{index}")
            row["domains"].append(domain)
            row["doc_offsets"].append(offset)
            offset += take
            if len(row["tokens"]) == seq_len:
                rows.append(row)
                row = new_row()
    if row["doc_ids"]:
        rows.append(row)
    for r in rows:
        r["n_tokens"] = len(r["tokens"])
        r["tokens"] = r["tokens"] + [pad_id] * (seq_len - len(r["tokens"]))
    shards = []
    for i in range(0, len(rows), rows_per_shard):
        table = pa.Table.from_pylist(rows[i : i + rows_per_shard], schema=PACKED_SCHEMA)
        validate_rows(table, seq_len)
        shards.append(write_shard(out / f"shard-{i // rows_per_shard:05d}.arrow", table))
    used = sum(s.tokens for s in shards)
    manifest = PhaseManifest(
        phase=phase, seq_len=seq_len, rope_theta=rope_theta, pad_id=pad_id, eos_id=pad_id,
        vocab_size=vocab_size, seed=0, shards=shards,
        domains=sorted({domain for _, domain in docs}),
        padding_fraction=1.0 - used / max(len(rows) * seq_len, 1),
    )  # fmt: skip
    write_manifest(out, manifest)
    return manifest
