"""Decontamination: documents that share a word 13-gram with an evaluation set are
rejected, or have the overlapping spans cut out (LongCat-Flash, GPT-3 style).

Both sides are reduced to words the same way (NFKC, case folding, punctuation and
whitespace dropped; each CJK character is a word), so an n-gram matches across line
breaks, case and quote style. Each n-gram becomes a 64-bit polynomial hash of its
words' 64-bit hashes: an eval set costs 8 bytes per n-gram, and a document is checked
with one binary search per n-gram.

Rejects carry the reason ``contaminated:<benchmark>`` (the eval file with the most
matched n-grams, so the ledger counts per benchmark) and the number of matched
n-grams as ``drop_score``. With ``mode: remove_spans`` the document stays, without the
matched spans, and names the benchmark in the ``contaminated_by`` column; one left with
no words at all is rejected as above.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import unicodedata
from functools import lru_cache
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import Field, model_validator

from stages.base import Resources, Stage, StageConfig, map_documents, set_column, with_reasons

REASON_CONTAMINATED = "contaminated"
CONTAMINATED_BY = "contaminated_by"
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".ndjson")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_BASE = np.uint64(0x100000001B3)  # odd: the polynomial hash stays invertible mod 2**64


class EvalFile(StageConfig):
    """One evaluation set."""

    path: str
    """JSONL (.jsonl, .json, .ndjson, optionally .gz) with one item per line, or plain
    text with passages separated by blank lines. Relative to the config file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """The benchmark's label, as it appears in the reject reason."""

    text_field: str | list[str] = "text"
    """JSONL field(s) holding the text to protect (e.g. [question, answer]); ignored
    for plain text."""

    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """The file's digest. Filled in when the run config is loaded (local files), so a
    changed eval set changes the run's fingerprint instead of resuming on stale
    decisions; set it to pin the file (another digest is then an error)."""


class DecontaminateConfig(StageConfig):
    """Which evaluation sets to protect and what to do with a document that overlaps."""

    eval_files: list[EvalFile] = Field(min_length=1)
    """The evaluation sets; names must be unique."""

    ngram_words: int = Field(default=13, ge=1)
    """Words per n-gram: 13 as in GPT-3 and LongCat-Flash. Eval passages with fewer
    words cannot match and are skipped."""

    min_matched_ngrams: int = Field(default=1, ge=1)
    """A document is contaminated by a benchmark when it shares at least this many
    n-gram positions with it."""

    mode: Literal["reject", "remove_spans"] = "reject"
    """``reject`` drops the document; ``remove_spans`` cuts the matched spans out."""

    apply_to_formats: list[str] | None = None
    """Document formats checked; None checks all (web, text and code)."""

    @model_validator(mode="after")
    def _unique_names(self) -> DecontaminateConfig:
        names = [spec.name for spec in self.eval_files]
        if len(set(names)) != len(names):
            raise ValueError(f"eval_files names must be unique, got {names}")
        return self


@lru_cache(maxsize=1 << 18)  # frequent words: about 50 MB at most
def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest())


def words(text: str) -> list[re.Match[str]]:
    """The words of ``text`` (matches, so spans can be cut from the original)."""
    return list(_WORD.finditer(text))


def normalize_word(word: str) -> str:
    return unicodedata.normalize("NFKC", word).casefold()


def ngram_hashes(text: str, n: int) -> tuple[np.ndarray, list[re.Match[str]]]:
    """The hash of every word n-gram of ``text``, in order, and the words."""
    found = words(text)
    hashes = np.array([_word_hash(normalize_word(m.group())) for m in found], np.uint64)
    count = len(found) - n + 1
    if count <= 0:
        return np.empty(0, np.uint64), found
    result = np.zeros(count, np.uint64)
    for k in range(n):  # sum of hash(word_k) * BASE**(n-1-k), wrapping mod 2**64
        result = result * _BASE + hashes[k : k + count]
    return result, found


def read_passages(spec: EvalFile) -> list[str]:
    """The texts of one eval file (local path or pyarrow filesystem URI; .gz is read)."""
    if "://" in spec.path:
        filesystem, inner = pafs.FileSystem.from_uri(spec.path)
    else:
        filesystem, inner = pafs.LocalFileSystem(), spec.path
    with filesystem.open_input_stream(inner, compression="detect") as stream:
        content = io.TextIOWrapper(stream, encoding="utf-8").read()
    if not spec.path.lower().endswith(JSONL_SUFFIXES):
        return [block for block in re.split(r"\n\s*\n", content) if block.strip()]
    fields = [spec.text_field] if isinstance(spec.text_field, str) else spec.text_field
    passages = []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{spec.path}: line {number}: not JSON: {exc}") from exc
        values = [item.get(field) for field in fields] if isinstance(item, dict) else []
        if all(value is None for value in values):
            raise ValueError(f"{spec.path}: line {number}: no field {fields}")
        passages.extend(_as_text(value) for value in values if value is not None)
    return passages


def _as_text(value: object) -> str:
    if isinstance(value, list):
        return "\n".join(_as_text(item) for item in value)
    return value if isinstance(value, str) else json.dumps(value)


def cut_spans(text: str, found: list[re.Match[str]], starts: list[int], n: int) -> str:
    """``text`` without the n-grams starting at word positions ``starts``; each span
    widens to the surrounding whitespace (taking quotes and punctuation with it), and
    the pieces left are joined by line breaks."""
    spans: list[list[int]] = []
    for i in sorted(starts):
        begin, end = found[i].start(), found[i + n - 1].end()
        if spans and begin <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([begin, end])
    pieces, position = [], 0
    for begin, end in spans:
        while begin > position and not text[begin - 1].isspace():
            begin -= 1
        while end < len(text) and not text[end].isspace():
            end += 1
        pieces.append(text[position:begin])
        position = max(position, end)
    pieces.append(text[position:])
    return "\n".join(piece.strip() for piece in pieces if piece.strip())


class Decontaminate(Stage):
    """Rejects (or cleans) documents that overlap an evaluation set."""

    name: ClassVar[str] = "decontaminate"
    resources: ClassVar[Resources] = Resources(cpus=0.5)
    config_class: ClassVar[type[StageConfig]] = DecontaminateConfig

    def __init__(self, cfg: DecontaminateConfig) -> None:
        super().__init__(cfg)
        self.cfg: DecontaminateConfig = cfg
        self.sets: dict[str, np.ndarray] = {}  # benchmark -> sorted unique n-gram hashes
        for spec in cfg.eval_files:
            grams = [ngram_hashes(p, cfg.ngram_words)[0] for p in read_passages(spec)]
            self.sets[spec.name] = np.unique(np.concatenate([np.empty(0, np.uint64), *grams]))
        self.formats = None if cfg.apply_to_formats is None else set(cfg.apply_to_formats)

    def matches(self, text: str) -> tuple[str | None, int, str]:
        """(benchmark with the most matched n-grams or None, how many, text to keep)."""
        hashes, found = ngram_hashes(text, self.cfg.ngram_words)
        best, best_count, hits = None, 0, np.zeros(len(hashes), bool)
        for name, grams in self.sets.items():
            if not len(grams) or not len(hashes):
                continue
            positions = np.minimum(np.searchsorted(grams, hashes), len(grams) - 1)
            hit = grams[positions] == hashes
            count = int(hit.sum())
            if count >= self.cfg.min_matched_ngrams:
                hits |= hit
                if count > best_count:
                    best, best_count = name, count
        if best is None or self.cfg.mode == "reject":
            return best, best_count, text
        starts = np.flatnonzero(hits).tolist()
        return best, best_count, cut_spans(text, found, starts, self.cfg.ngram_words)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        formats = batch.column("format").to_pylist()
        todo = [self.formats is None or f in self.formats for f in formats]
        results, errors = map_documents(
            lambda item: self.matches(item[0] or "") if item[1] else (None, 0, item[0]),
            zip(texts, todo, strict=True),
        )
        reasons, scores, kept_texts, named = [], [], [], []
        for result, error, text in zip(results, errors, texts, strict=True):
            benchmark, count, new_text = result or (None, 0, text)
            emptied = benchmark is not None and not words(new_text or "")
            dropped = benchmark is not None and (self.cfg.mode == "reject" or emptied)
            reasons.append(error or (f"{REASON_CONTAMINATED}:{benchmark}" if dropped else None))
            scores.append(float(count) if dropped else None)
            kept_texts.append(text if dropped or error else new_text)
            named.append(benchmark)
        batch = with_reasons(batch, reasons, scores)
        if self.cfg.mode == "remove_spans":
            batch = set_column(batch, "text", pa.array(kept_texts, pa.string()))
            batch = set_column(batch, CONTAMINATED_BY, pa.array(named, pa.string()))
        return batch
