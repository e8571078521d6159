"""Token-budgeted mixing: which documents a phase trains on, in which order, how often.

The input is the document index of the tokenized data (every column but the tokens:
``shard``, ``row``, ``id``, ``n_tokens`` and the selection columns). The output is the
phase's sample plan: one row per *unit* (a whole document, or for a document longer
than ``seq_len`` possibly a prefix of it), in training order.
Everything here is a pure function of the index, the components, the budget and the
seed, so the same inputs give the same plan on any machine and for any worker count.

How a component of weight ``w`` fills ``round(w * budget)`` tokens: epoch after epoch,
its selection is taken in a seeded permutation, whole documents while they fit. The
first document that does not fit starts the *tail*: the rest of that permutation is
scanned for documents that still fit; a document longer than ``seq_len`` met there
contributes a prefix of exactly the missing tokens (the only truncation: a document
of at most ``seq_len`` tokens is always taken whole). So a component ends at its
target, or short of it by less than any document it left out, and never above it:
realised shares stay within a fraction of a percentage point of the declared weights
even when documents are large next to the budget.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from stages.base import StageConfig
from strict_config import check_safe_name

# Bump when the sampler or the packer would give other output for the same inputs:
# it is part of every phase's fingerprint, so old shards are not taken for new ones.
PLAN_VERSION = 1

PLAN_SCHEMA = pa.schema(
    [
        ("unit", pa.int64()),  # position in the phase's training order
        ("component", pa.string()),
        ("shard", pa.int32()),  # tokenized shard
        ("row", pa.int64()),  # row inside that shard
        ("id", pa.string()),
        ("domain", pa.string()),  # the document's domain, else the component's name
        ("epoch", pa.int32()),  # how many times this component saw its selection before
        ("token_start", pa.int64()),  # [start, end) of the document's tokens used
        ("token_end", pa.int64()),
        ("doc_tokens", pa.int64()),  # the whole document's length (end < it: truncated)
        ("window", pa.int32()),  # packing window (one packed shard each)
    ]
)


class ComponentConfig(StageConfig):
    """One ingredient of a phase: a selection of curated documents and its token share.
    Selection keys combine with AND; a list inside a key means any of its values."""

    name: str = Field(min_length=1)
    """Names the component in errors, plans and the manifest (a safe name: letters,
    digits, '.', '_', '-')."""

    weight: float = Field(gt=0, le=1)
    """Share of the phase's tokens this component provides."""

    max_epochs: float = Field(default=1.0, gt=0)
    """At most this many passes over the selection (fractions allowed); a budget the
    selection cannot fill within it is an error before any work starts."""

    domain: list[str] | None = None
    """Curated ``domain`` values (web, stem, code, books); needs a curated domain column."""

    source: list[str] | None = None
    """Globs on the curated ``source`` (input name / path), e.g. ``crawl/*``."""

    language: list[str] | None = None
    """``language`` codes (lid.176), e.g. ``[en, de]``."""

    format: list[str] | None = None
    """Curated ``format`` values: html, text, code."""

    min_quality: float | None = None
    """Lowest ``quality_score`` taken (inclusive); needs a quality column."""

    max_quality: float | None = None
    """Highest ``quality_score`` taken (inclusive); needs a quality column."""

    min_doc_tokens: int | None = Field(default=None, gt=0)
    """Only documents of at least this many tokens (long-context data)."""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_safe_name(value)

    @field_validator("domain", "source", "language", "format", mode="before")
    @classmethod
    def _one_or_many(cls, value: str | list[str] | None) -> list[str] | None:
        return [value] if isinstance(value, str) else value

    def required_columns(self) -> list[str]:
        """Index columns this selection reads (a missing one is a config error)."""
        needed = [key for key in ("domain", "source", "language", "format") if getattr(self, key)]
        if self.min_quality is not None or self.max_quality is not None:
            needed.append("quality_score")
        return needed

    def mask(self, index: pa.Table) -> np.ndarray:
        """Which rows of the document index this component selects."""
        keep = np.ones(index.num_rows, dtype=bool)
        for key in ("domain", "language", "format"):
            values = getattr(self, key)
            if values:
                keep &= _filled(pc.is_in(index.column(key), pa.array(values, pa.string())))
        if self.source:
            keep &= _glob_mask(index.column("source"), self.source)
        if self.min_quality is not None:
            keep &= _filled(pc.greater_equal(index.column("quality_score"), self.min_quality))
        if self.max_quality is not None:
            keep &= _filled(pc.less_equal(index.column("quality_score"), self.max_quality))
        if self.min_doc_tokens is not None:
            keep &= index.column("n_tokens").to_numpy() >= self.min_doc_tokens
        return keep


def _filled(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean Arrow result as numpy, null (missing value) meaning not selected."""
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(bool)


def _glob_mask(column: pa.ChunkedArray, patterns: list[str]) -> np.ndarray:
    """fnmatch once per distinct source, not once per document."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    hits = [
        value is not None and any(fnmatch.fnmatchcase(value, p) for p in patterns)
        for value in encoded.dictionary.to_pylist()
    ]
    indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    lookup = np.append(np.array(hits, dtype=bool), False)  # index -1 (null) -> False
    return lookup[indices]


def stable_seed(*parts: object) -> list[int]:
    """Seed material from names and numbers, identical on every platform (str hash is
    salted per process, so it cannot be used)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


FIELDS = ("starts", "ends", "epochs")


@dataclass(frozen=True)
class Units:
    """A component's sample: positions in the index, token ranges, epoch of each."""

    docs: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    epochs: np.ndarray

    @property
    def tokens(self) -> int:
        return int((self.ends - self.starts).sum())


def sample_component(
    lengths: np.ndarray, target_tokens: int, seq_len: int, max_epochs: float, seed: list[int]
) -> Units:
    """Up to ``target_tokens`` tokens from documents of ``lengths`` (see module doc)."""
    docs: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    epochs: list[np.ndarray] = []
    remaining = int(target_tokens)
    smallest = int(lengths.min()) if len(lengths) else 0
    for epoch in range(math.ceil(max_epochs)):
        if remaining <= 0:
            break
        order = np.random.default_rng([*seed, epoch]).permutation(len(lengths))
        cumulative = np.cumsum(lengths[order])
        whole = int(np.searchsorted(cumulative, remaining, side="right"))
        docs.append(order[:whole])
        starts.append(np.zeros(whole, np.int64))
        ends.append(lengths[order[:whole]])
        remaining -= int(cumulative[whole - 1]) if whole else 0
        if whole < len(order):
            tail = _fill_tail(lengths, order[whole:], remaining, seq_len, smallest)
            docs.append(tail[0])
            starts.append(np.zeros(len(tail[0]), np.int64))
            ends.append(tail[1])
            epochs += [np.full(whole + len(tail[0]), epoch, np.int32)]
            break
        epochs.append(np.full(whole, epoch, np.int32))
    if not docs:
        empty = np.zeros(0, np.int64)
        return Units(empty, empty, empty, np.zeros(0, np.int32))
    return Units(
        np.concatenate(docs),
        np.concatenate(starts),
        np.concatenate(ends).astype(np.int64),
        np.concatenate(epochs),
    )


def _fill_tail(
    lengths: np.ndarray, candidates: np.ndarray, remaining: int, seq_len: int, smallest: int
) -> tuple[np.ndarray, np.ndarray]:
    """Documents of ``candidates`` (in order) that still fit, and the token end of each.

    A document longer than ``seq_len`` that does not fit contributes a prefix of exactly
    the remaining tokens and ends the component: long documents are cut into pieces by
    the packer anyway, so only they are ever truncated; a document of at most ``seq_len``
    tokens is taken whole or not at all."""
    taken: list[int] = []
    taken_ends: list[int] = []
    any_long = bool(len(candidates)) and int(lengths[candidates].max()) > seq_len
    for doc in candidates:
        if remaining <= 0 or (remaining < smallest and not any_long):
            break
        length = int(lengths[doc])
        if length <= remaining or length > seq_len:
            taken.append(int(doc))
            taken_ends.append(min(length, remaining))
            remaining -= min(length, remaining)
    return np.array(taken, np.int64), np.array(taken_ends, np.int64)


def component_targets(weights: list[float], budget_tokens: int) -> list[int]:
    """Tokens per component: largest-remainder rounding, so they sum to the budget."""
    exact = np.array(weights, dtype=np.float64) / sum(weights) * budget_tokens
    floors = np.floor(exact).astype(np.int64)
    short = int(budget_tokens - floors.sum())
    for index in np.argsort(-(exact - floors), kind="stable")[:short]:
        floors[index] += 1
    return [int(value) for value in floors]


def phase_plan(
    index: pa.Table,
    components: list[tuple[ComponentConfig, np.ndarray]],
    budget_tokens: int,
    seq_len: int,
    window_tokens: int,
    seed: int,
    phase: str,
) -> pa.Table:
    """The phase's sample plan (``PLAN_SCHEMA``): every component sampled to its share,
    then all units interleaved by one seeded shuffle and cut into packing windows of
    about ``window_tokens`` tokens."""
    lengths = index.column("n_tokens").to_numpy().astype(np.int64)
    targets = component_targets([c.weight for c, _ in components], budget_tokens)
    parts = []
    for number, ((component, mask), target) in enumerate(zip(components, targets, strict=True)):
        selected = np.flatnonzero(mask)
        units = sample_component(
            lengths[selected],
            target,
            seq_len,
            component.max_epochs,
            stable_seed(seed, phase, number, component.name),
        )
        parts.append((component.name, selected[units.docs], units))
    names = pa.array([n for n, d, _ in parts for _ in range(len(d))], pa.string())
    positions = np.concatenate([d for _, d, _ in parts]).astype(np.int64)
    starts, ends, epochs = (np.concatenate([getattr(u, f) for *_, u in parts]) for f in FIELDS)
    order = np.random.default_rng(stable_seed(seed, phase, "order")).permutation(len(positions))
    names, positions, starts, ends, epochs = (
        a.take(order) for a in (names, positions, starts, ends, epochs)
    )
    before = np.cumsum(ends - starts) - (ends - starts)
    docs = index.take(pa.array(positions, pa.int64())).combine_chunks()
    domains = names
    if "domain" in docs.column_names:
        domains = pc.coalesce(docs.column("domain").combine_chunks(), names)
    columns = {
        "unit": np.arange(len(positions), dtype=np.int64),
        "component": names,
        "shard": docs.column("shard"),
        "row": docs.column("row"),
        "id": docs.column("id"),
        "domain": domains,
        "epoch": epochs,
        "token_start": starts,
        "token_end": ends,
        "doc_tokens": lengths[positions],
        "window": before // window_tokens,
    }
    return pa.table(
        [
            pa.array(columns[f.name], f.type)
            if isinstance(columns[f.name], np.ndarray)
            else columns[f.name].cast(f.type)
            for f in PLAN_SCHEMA
        ],
        schema=PLAN_SCHEMA,
    )
