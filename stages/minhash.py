"""MinHash near-duplicate detection, the per-document half: config, shingles,
signatures and LSH band keys.

One ``MinHashConfig`` drives every pass of the step (signatures, buckets, edges,
clusters, drops); its ``fingerprint()`` names the result-relevant parameters.

How a document becomes band keys, vectorised over a batch of documents with numpy
(the only per-document Python is the case folding):

1. Text normalisation: NFKC, case folding (plain ``lower`` for ASCII text, where the two
   agree), then the ``\\w+`` word tokens of Python's ``re`` (or, for char shingles, the
   folded text with whitespace collapsed), so case, punctuation and spacing changes do
   not count as edits.
2. Tokens are found and hashed on the code-point array of many documents at once:
   a table says which code points ``\\w`` matches (built by ``re`` itself), runs of
   them are the tokens, and each token's 64-bit hash is a polynomial of its code
   points taken from one prefix sum (``token_hash`` is the definition, in plain
   Python). Each run of ``shingle_size`` token hashes is combined into one 64-bit
   shingle hash. A document is the *set* of these hashes; its exact Jaccard with
   another document is what ``verify_candidates`` checks.
3. Signatures, by ``backend``:
   ``rensa`` (default): rensa's ``RMinHash`` over the shingle hashes, in Rust, one call
   for a whole batch (``digest_matrix_from_flat_token_hashes``);
   ``datasketch``: datasketch's ``affine32`` permutations for ``seed`` evaluated in
   numpy, bit-identical to ``MinHash.generator`` with the shingle hash (a unit test
   checks it). Both are unbiased MinHash estimators; the bench measures both.
4. Bands: ``bands`` groups of ``rows_per_band`` signature values, each hashed with its
   band index into one 64-bit key. Two documents are candidates when a key is equal.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from functools import cache, cached_property
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from stages.base import StageConfig

REASON_NEAR_DUPLICATE = "near_duplicate"
# Bump when the token or shingle hash changes: every signature changes with it, so a
# stored decision of the old hash must not be reused.
SHINGLE_HASH_VERSION = 2

_WORD = re.compile(r"\w+", re.UNICODE)
_SPACE = re.compile(r"\s+", re.UNICODE)
_NON_WORD = re.compile(r"\W", re.UNICODE)
_PRIME64 = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: odd, so the combine mixes
_TOKEN_BASE = 0x9E3779B97F4A7C15  # odd: invertible modulo 2^64
_TOKEN_BASE_INVERSE = pow(_TOKEN_BASE, -1, 1 << 64)
_MASK64 = (1 << 64) - 1
_U32 = np.uint32
_U64 = np.uint64
_CHUNK_CHARS = 1 << 18  # code points per vectorised pass: its temporaries stay in cache
_SIGNATURE_CHUNK_ROWS = 8192  # bounds the (shingles x permutations) temporary: 4 MiB


class MinHashConfig(StageConfig):
    shingle: Literal["word", "char"] = "word"
    """What a shingle is made of: ``word`` tokens (``\\w+`` after NFKC and case folding)
    or ``char`` acters of the folded text with whitespace collapsed."""

    shingle_size: int = Field(default=5, ge=1, le=64)
    """Tokens per shingle: word 5-grams are the usual choice for web text."""

    num_perm: int = Field(default=128, ge=8, le=1024)
    """MinHash permutations per document (signature length)."""

    threshold: float = Field(default=0.8, gt=0.0, lt=1.0)
    """Jaccard similarity at which two documents count as near duplicates."""

    bands: int | None = Field(default=None, ge=1)
    """LSH bands; null derives bands and rows from ``threshold`` and ``num_perm`` with
    datasketch's optimal_param (weights below). Give both or neither."""

    rows_per_band: int | None = Field(default=None, ge=1)
    """Signature values per band; null derives it (see ``bands``)."""

    false_negative_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    """When bands and rows are derived: the weight of missed pairs against false
    candidates (datasketch's ``weights=(1 - this, this)``). Null: 0.98 with
    ``verify_candidates`` (a false candidate only costs a check; 128 perms at 0.8 give
    17 x 7, a pair at Jaccard 0.82 is a candidate with p = 0.99), else 0.5 (9 x 13)."""

    seed: int = Field(default=1, ge=0)
    """Seed of datasketch's permutations; change it and every signature changes."""

    verify_candidates: bool = True
    """Check each candidate pair's exact Jaccard of shingle sets before it becomes an
    edge: slower (the texts of candidate documents are read again), but LSH alone
    merges pairs just below the threshold and chains them into clusters."""

    backend: Literal["rensa", "datasketch"] = "rensa"
    """Signature implementation: ``rensa`` (Rust ``RMinHash``, one call per batch) or
    ``datasketch`` (its ``affine32`` permutations evaluated in numpy, bit-identical to
    ``MinHash.generator``). Same precision and recall in ``bench/dedup.py``; rensa
    signs about 50x faster, so it is the default."""

    prefer_column: str | None = None
    """A numeric document column (e.g. ``quality_score``): each cluster keeps its
    document with the highest value (nulls lowest). Ties, and every cluster when this is
    null, keep the document that comes first in input order (smallest shard, ordinal)."""

    union_find_max_edges: int = Field(default=1_000_000, ge=0)
    """Up to this many distinct edges, components are found by union-find on the driver
    (measured: 2M edges in 42 s and +0.9 GiB, ids included, on a busy 2-core machine);
    above it they run distributed (alternating large/small-star rounds of tasks)."""

    partition_rows: int = Field(default=100_000, ge=1000)
    """Rows (one per document and band) per band partition: the bucket tasks' share,
    and about the most one signing task accumulates. The partition count grows with
    the corpus, so each task's share stays the same size."""

    verify_partition_bytes: int = Field(default=32 << 20, ge=1 << 12)
    """Shingle-set bytes (8 a shingle) per group of shards in the verification rounds:
    about what one task makes and sends, or receives. The group count grows with the
    corpus, so each task's share stays this size."""

    @model_validator(mode="after")
    def _backend_installed(self) -> MinHashConfig:
        """A missing backend fails when the config is read, not in the workers."""
        if self.backend == "rensa" and importlib.util.find_spec("rensa") is None:
            raise ValueError(
                "backend 'rensa' needs the rensa package (pip install rensa==0.5.0); "
                "or set backend: datasketch"
            )
        return self

    @model_validator(mode="after")
    def _bands_fit(self) -> MinHashConfig:
        if (self.bands is None) != (self.rows_per_band is None):
            raise ValueError("give both bands and rows_per_band, or neither")
        if self.bands is not None and self.bands * self.rows_per_band > self.num_perm:
            raise ValueError(
                f"bands x rows_per_band = {self.bands * self.rows_per_band} "
                f"exceeds num_perm = {self.num_perm}"
            )
        return self

    def band_layout(self) -> tuple[int, int]:
        """(bands, rows per band): given, or datasketch's optimal_param for the threshold."""
        if self.bands is not None and self.rows_per_band is not None:
            return self.bands, self.rows_per_band
        weight = self.false_negative_weight
        if weight is None:
            weight = 0.98 if self.verify_candidates else 0.5
        known = KNOWN_BAND_LAYOUTS.get((self.threshold, self.num_perm, weight))
        if known is not None:
            return known
        return _derived_bands(self.threshold, self.num_perm, 1.0 - weight, weight)

    def with_band_layout(self) -> MinHashConfig:
        """This config with ``bands`` and ``rows_per_band`` filled in: what the driver
        ships to workers, so none of them imports datasketch's search (~0.5 s a process).
        Not for ``fingerprint()``, which names the config as given."""
        bands, rows = self.band_layout()
        return self.model_copy(update={"bands": bands, "rows_per_band": rows})

    def fingerprint(self) -> str:
        """Names what the decision depends on (not the execution knobs), so a changed
        parameter can never reuse old buckets."""
        relevant = self.model_dump(
            mode="json",
            exclude={"union_find_max_edges", "partition_rows", "verify_partition_bytes"},
        )
        relevant["band_layout"] = list(self.band_layout())
        relevant["shingle_hash_version"] = SHINGLE_HASH_VERSION
        canonical = json.dumps(relevant, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


KNOWN_BAND_LAYOUTS: dict[tuple[float, int, float], tuple[int, int]] = {
    (0.8, 128, 0.98): (17, 7),
    (0.8, 128, 0.5): (9, 13),
}
"""datasketch's optimal_param for the default threshold and signature length, keyed by
(threshold, num_perm, false-negative weight); a test recomputes every entry. The search
imports datasketch and scipy.integrate into the driver, 55 MiB and about a second of
CPU (issue 18: the driver's share of a run's peak memory), for a result that never
changes."""


@cache
def _derived_bands(threshold: float, num_perm: int, fp_weight: float, fn_weight: float):
    """Cached per process: the search integrates for every (bands, rows), ~20 ms a call,
    and every batch's ``Signer`` asks."""
    # datasketch 2.0.0 (pinned) keeps this in a private function; MinHashLSH uses it.
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, fp_weight, fn_weight)


def fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: a bijection that spreads every input bit."""
    h = values.astype(_U64, copy=True)
    h ^= h >> _U64(33)
    h *= _U64(0xFF51AFD7ED558CCD)
    h ^= h >> _U64(33)
    h *= _U64(0xC4CEB9FE1A85EC53)
    h ^= h >> _U64(33)
    return h


def _fmix32(values: np.ndarray) -> np.ndarray:
    """datasketch's pre-mix for the affine32 scheme (MurmurHash3's 32-bit finaliser)."""
    h = values.astype(_U32, copy=True)
    h ^= h >> _U32(16)
    h *= _U32(0x85EBCA6B)
    h ^= h >> _U32(13)
    h *= _U32(0xC2B2AE35)
    h ^= h >> _U32(16)
    return h


def fold32(hashes: np.ndarray) -> np.ndarray:
    """The 32-bit value a 64-bit shingle hash is signed as (datasketch's hashfunc input)."""
    return (hashes ^ (hashes >> _U64(32))).astype(_U32)


def normalize_for_shingles(text: str | None) -> str:
    """NFKC and case folding: the form whose tokens are compared. ASCII text is its own
    NFKC form and ``casefold`` equals ``lower`` on it, so it skips both (most text)."""
    text = text or ""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", text).casefold()


def token_hash(token: str) -> int:
    """The 64-bit hash of one token (a ``\\w+`` word, or one character), in plain Python:
    the definition that ``_hash_runs`` computes for many tokens at once.
    ``fmix64(len + sum((ord(c) + 1) * B^i))`` modulo 2^64, B an odd constant."""
    total = len(token)
    power = 1
    for char in token:
        total = (total + (ord(char) + 1) * power) & _MASK64
        power = (power * _TOKEN_BASE) & _MASK64
    return int(fmix64(np.array([total], _U64))[0])


@cache
def _word_characters() -> tuple[np.ndarray, bytes]:
    """Which code points ``\\w`` matches, decided by ``re`` itself so that tokens are
    exactly ``re.findall(r"\\w+")``: a table over all of Unicode (1.1 MB), and its ASCII
    part as a ``bytes.translate`` table (0 or 1 per byte)."""
    every = np.arange(0x110000, dtype=_U32).tobytes().decode("utf-32-le", "surrogatepass")
    table = np.zeros(0x110000, dtype=bool)
    table[[match.start() for match in re.finditer(r"\w", every)]] = True
    return table, bytes(table[:256].astype(np.uint8))


def _code_points(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(code points, which of them are word characters) of a whole chunk of text."""
    table, ascii_table = _word_characters()
    if text.isascii():
        raw = text.encode("ascii")
        return np.frombuffer(raw, np.uint8), np.frombuffer(raw.translate(ascii_table), bool)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), _U32)
    return codes, table[codes]


def _power_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``B^i`` and ``B^-i`` modulo 2^64 for i < n (uint64 products wrap)."""
    powers = np.full(max(n, 1), _TOKEN_BASE, _U64)
    inverses = np.full(max(n, 1), _TOKEN_BASE_INVERSE, _U64)
    powers[0] = inverses[0] = 1
    return np.cumprod(powers), np.cumprod(inverses)


@cache
def _chunk_power_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    return _power_table(n)


def _hash_runs(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``token_hash`` of each run ``values[starts[i]:starts[i+1]]`` (code points): one
    prefix sum of ``(c + 1) * B^position``, each run's difference scaled back by
    ``B^-start``, so a token hashes the same wherever it stands."""
    n = len(values)
    powers, inverses = _chunk_power_table(_CHUNK_CHARS) if n <= _CHUNK_CHARS else _power_table(n)
    terms = values.astype(_U64)
    terms += _U64(1)
    terms *= powers[:n]
    np.cumsum(terms, out=terms)
    ends = np.append(starts[1:], n) - 1
    sums = terms[ends]
    sums[1:] -= terms[starts[1:] - 1]
    sums *= inverses[starts]
    sums += (ends - starts + 1).astype(_U64)
    return fmix64(sums)


def _word_token_hashes(folded: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(token hashes in text order, tokens per document) for already folded texts."""
    codes, is_word = _code_points("\x00".join(folded))  # NUL is no word character
    positions = np.flatnonzero(is_word)
    if len(positions) == 0:
        return np.zeros(0, _U64), np.zeros(len(folded), np.int64)
    starts_run = np.empty(len(positions), dtype=bool)
    starts_run[0] = True
    np.not_equal(positions[1:], positions[:-1] + 1, out=starts_run[1:])
    starts = np.flatnonzero(starts_run)
    hashes = _hash_runs(codes[positions], starts)
    document_starts = np.cumsum([0] + [len(text) + 1 for text in folded[:-1]])
    document = np.searchsorted(document_starts, positions[starts], side="right") - 1
    return hashes, np.bincount(document, minlength=len(folded)).astype(np.int64)


def _char_token_hashes(collapsed: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every character of the (whitespace-collapsed) text is a token."""
    codes, _ = _code_points("".join(collapsed))
    hashes = _hash_runs(codes, np.arange(len(codes))) if len(codes) else np.zeros(0, _U64)
    return hashes, np.array([len(text) for text in collapsed], dtype=np.int64)


def _word_pieces(text: str) -> list[str]:
    """A text cut into pieces of at most ``_CHUNK_CHARS`` code points, each cut just
    after a non-word character, so no ``\\w+`` token is split and the pieces' tokens
    are the text's. A long page's temporaries stay those of one piece; only a single
    token longer than a piece is kept whole."""
    pieces = []
    start = 0
    while len(text) - start > _CHUNK_CHARS:
        end = start + _CHUNK_CHARS
        non_word = np.flatnonzero(~_code_points(text[start:end])[1])
        if len(non_word):
            cut = start + int(non_word[-1]) + 1
        else:
            boundary = _NON_WORD.search(text, end)
            cut = boundary.end() if boundary else len(text)
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _char_pieces(text: str) -> list[str]:
    """Character tokens are hashed one by one: any cut keeps them."""
    if len(text) <= _CHUNK_CHARS:
        return [text]
    return [text[start : start + _CHUNK_CHARS] for start in range(0, len(text), _CHUNK_CHARS)]


def _chunks(texts: Sequence[str]) -> Iterator[list[str]]:
    """Consecutive pieces, about ``_CHUNK_CHARS`` code points at a time."""
    chunk: list[str] = []
    size = 0
    for text in texts:
        if chunk and size + len(text) > _CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
        chunk.append(text)
        size += len(text) + 1
    if chunk:
        yield chunk


def token_hashes(texts: Sequence[str | None], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(token hashes of all documents in order, tokens per document). Documents are cut
    into pieces of at most ``_CHUNK_CHARS`` code points first, so the vectorised passes
    never hold more than a piece's temporaries, however long a page is."""
    folded = [normalize_for_shingles(text) for text in texts]
    if kind == "word":
        tokenize, split = _word_token_hashes, _word_pieces
    else:
        folded = [_SPACE.sub(" ", text).strip() for text in folded]
        tokenize, split = _char_token_hashes, _char_pieces
    pieces: list[str] = []
    owners: list[int] = []
    for document, text in enumerate(folded):
        cut = split(text) if len(text) > _CHUNK_CHARS else [text]
        pieces += cut
        owners += [document] * len(cut)
    parts = [tokenize(chunk) for chunk in _chunks(pieces)]
    if not parts:
        return np.zeros(0, _U64), np.zeros(0, np.int64)
    per_piece = np.concatenate([p[1] for p in parts])
    per_document = np.zeros(len(folded), np.int64)
    np.add.at(per_document, np.asarray(owners, dtype=np.int64), per_piece)
    return np.concatenate([p[0] for p in parts]), per_document


def shingle_hashes(texts: list[str | None], cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, offsets): document ``i``'s 64-bit shingle hashes are
    ``hashes[offsets[i]:offsets[i+1]]``, in text order (repeats kept). A document with
    fewer tokens than ``shingle_size`` is one shingle; an empty one has none."""
    k = cfg.shingle_size
    token_values, lengths = token_hashes(texts, cfg.shingle)
    counts = np.where(lengths >= k, lengths - k + 1, np.minimum(lengths, 1))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out = np.empty(int(offsets[-1]), _U64)
    full = lengths >= k
    ends = np.cumsum(lengths)
    if full.any():
        n = len(token_values) - k + 1
        acc = np.zeros(n, _U64)
        for j in range(k):
            acc *= _PRIME64
            acc += token_values[j : j + n]
        # A window starts inside a document of k tokens or more and ends there too:
        # +1 where a document's last k - 1 window starts begin, -1 where it ends.
        crossing = np.zeros(len(token_values) + 1, np.int32)
        np.add.at(crossing, (ends - np.minimum(lengths, k - 1))[full], 1)
        np.add.at(crossing, ends[full], -1)
        short = ~full & (lengths > 0)  # their tokens start no full window either
        np.add.at(crossing, (ends - lengths)[short], 1)
        np.add.at(crossing, ends[short], -1)
        valid = np.cumsum(crossing[:n]) == 0
        out[np.repeat(full, counts)] = fmix64(acc[valid])
    for i in np.flatnonzero((lengths > 0) & (lengths < k)):
        acc = 0  # the same combine in Python ints, modulo 2^64
        for value in token_values[ends[i] - lengths[i] : ends[i]].tolist():
            acc = (acc * int(_PRIME64) + value) & _MASK64
        out[offsets[i]] = fmix64(np.array([acc], _U64))[0]
    return out, offsets


def shingle_set(hashes: np.ndarray) -> np.ndarray:
    """A document's shingle set, as a sorted array of unique 64-bit hashes (a sort and a
    compare: numpy 2's ``np.unique`` hashes first and is several times slower here)."""
    ordered = np.sort(hashes)
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two shingle sets (sorted unique arrays); two empty sets: 0."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    if len(a) > len(b):
        a, b = b, a
    at = np.searchsorted(b, a)  # binary search of the smaller set in the larger
    at[at == len(b)] = 0
    inter = int(np.count_nonzero(b[at] == a))
    return inter / (len(a) + len(b) - inter)


class Signer:
    """Signatures and band keys for one config (datasketch's permutations are built
    once)."""

    def __init__(self, cfg: MinHashConfig) -> None:
        self.cfg = cfg
        self.bands, self.rows = cfg.band_layout()

    @cached_property
    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        """datasketch's ``affine32`` (a, b) for ``seed``."""
        from datasketch import MinHash

        a, b = MinHash(
            num_perm=self.cfg.num_perm, seed=self.cfg.seed, scheme="affine32"
        ).permutations
        return np.asarray(a, dtype=_U32), np.asarray(b, dtype=_U32)

    @cached_property
    def empty_signature(self) -> np.ndarray:
        return np.full(self.cfg.num_perm, np.iinfo(_U32).max, _U32)

    def signatures(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(documents, num_perm) uint32 MinHash signatures of each document's shingles
        (a document without shingles: all ``2^32 - 1``)."""
        if self.cfg.backend == "rensa":
            return self._rensa_signatures(hashes, offsets)
        return self._datasketch_signatures(hashes, offsets)

    def _rensa_signatures(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        from rensa import RMinHash

        matrix = RMinHash.digest_matrix_from_flat_token_hashes(
            np.ascontiguousarray(hashes, _U64),
            np.ascontiguousarray(offsets, _U64),
            self.cfg.num_perm,
            self.cfg.seed,
        )
        return np.array(matrix.to_rows(), dtype=_U32).reshape(len(offsets) - 1, self.cfg.num_perm)

    def _datasketch_signatures(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """min over each document's shingles of ``a * fmix32(fold32(h)) + b``
        (wrapping uint32 arithmetic, as datasketch)."""
        a, b = self.permutations
        mixed = _fmix32(fold32(hashes))
        out = np.tile(self.empty_signature, (len(offsets) - 1, 1))
        for i in range(len(offsets) - 1):
            row = out[i]
            for start in range(int(offsets[i]), int(offsets[i + 1]), _SIGNATURE_CHUNK_ROWS):
                stop = min(start + _SIGNATURE_CHUNK_ROWS, int(offsets[i + 1]))
                chunk = mixed[start:stop, None] * a + b
                np.minimum(row, chunk.min(axis=0), out=row)
        return out

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """(documents, bands) int64: one key per band; equal keys make candidates."""
        used = signatures[:, : self.bands * self.rows].reshape(-1, self.bands, self.rows)
        acc = np.broadcast_to(np.arange(1, self.bands + 1, dtype=_U64), used.shape[:2]).copy()
        for j in range(self.rows):
            acc = fmix64(acc * _PRIME64 + used[:, :, j].astype(_U64))
        return acc.view(np.int64)

    def estimated_jaccard(self, shared_bands: np.ndarray) -> np.ndarray:
        """What sharing ``c`` of the bands says about a pair's Jaccard: a band matches
        with probability ``J^rows``, so ``J = (c / bands)^(1 / rows)``. A lower bound for
        star edges (a band shared with a smaller document is counted there instead)."""
        share = np.clip(shared_bands / self.bands, 0.0, 1.0)
        return share ** (1.0 / self.rows)
