"""Template lines: menus, cookie notices, sign-up pitches and footers that survived
extraction are lines that recur across many documents of one site (or of the whole
corpus). They are removed from the text; a document with nothing left is rejected.

The frequencies are global, so the step is a global one (``pipeline/template_rounds.py``
runs it on Ray); the pieces here are pure and work on Arrow tables:

* ``line_pairs``: per document, one row per distinct normalised line worth counting:
  (line hash, host, id, shard, ordinal, the line's indices in the text).
* ``template_removals``: given every row of one line hash (a ``groupby`` group), the
  rows whose line is a template: in at least ``min_host_documents`` documents of the
  document's host, or in at least ``min_corpus_documents`` (and ``min_corpus_fraction``)
  of all documents.
* ``shard_decision``: a shard's removals and texts -> per document, the lines to remove
  and the characters left; plus the removed lines' texts for the run summary.
* ``apply_template_decision``: rewrite ``text``, count ``template_lines_removed`` and
  reject documents left with too little text (``template_only``).

Lines are ``\\n``-separated (what extraction writes: one paragraph, list item or
heading per line). A document counts once per line, however often it repeats the line.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from stages.base import DROP_REASON, DROP_SCORE, StageConfig, set_column
from stages.exact_dedup import normalize_text

REASON_TEMPLATE_ONLY = "template_only"
REMOVED_COLUMN = "template_lines_removed"
_DIGIT = re.compile(r"\d")

PAIRS_SCHEMA = pa.schema(
    [
        ("line_hash", pa.int64()),  # 64-bit blake2b of the normalised line
        ("host", pa.string()),  # URL host without "www."; null for documents without a URL
        ("id", pa.string()),
        ("shard", pa.int32()),
        ("ordinal", pa.int64()),
        ("line_indices", pa.list_(pa.int32())),  # where the line occurs in the text
    ]
)
DECISION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("shard", pa.int32()),
        ("ordinal", pa.int64()),
        ("remove_lines", pa.list_(pa.int32())),  # indices into text.split("\n")
        ("remaining_chars", pa.int64()),  # characters left after removal, outer space stripped
    ]
)


class TemplateLinesConfig(StageConfig):
    """When a line counts as a template, and what a document must keep."""

    min_host_documents: int | None = Field(default=5, ge=2)
    """A line in at least this many documents of one URL host is a template on that host
    (site menus, footers, "support us" notes). None switches the per-host rule off."""

    min_corpus_documents: int | None = Field(default=20, ge=2)
    """A line in at least this many documents of the whole corpus (any host, or none) is
    a template everywhere (cookie notices shared by site builders). None: no minimum."""

    min_corpus_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    """And in at least this fraction of the documents considered. None: no minimum; with
    ``min_corpus_documents`` also None the corpus-wide rule is off."""

    min_line_chars: int = Field(default=20, ge=1)
    """Shorter lines (after normalisation) are never templates: "Home", "Share" or a
    heading like "Introduction" recur in genuine text too."""

    normalize: bool = True
    """Compare lines after NFKC, case folding and collapsing punctuation and whitespace."""

    mask_digits: bool = True
    """Also treat all digits as equal, so "© 2023 ..." and "© 2024 ..." are one line."""

    apply_to_formats: list[str] | None = Field(default_factory=lambda: ["html", "text"])
    """Document formats considered (counted and cleaned); None: all. Code is left out by
    default: a repeated ``return result`` line is code, not a template."""

    min_remaining_chars: int = Field(default=1, ge=1)
    """A document left with fewer characters (outer whitespace stripped) is rejected as
    template_only; 1 rejects only documents with nothing left."""

    top_lines: int = Field(default=20, ge=0)
    """How many of the most often removed lines (text and document count) the decision's
    summary, and through it the ledger, keeps."""

    @model_validator(mode="after")
    def _some_rule_on(self) -> TemplateLinesConfig:
        corpus_on = self.min_corpus_documents is not None or self.min_corpus_fraction is not None
        if self.min_host_documents is None and not corpus_on:
            raise ValueError("every rule is off; switch the step off with `template_lines: null`")
        return self


def host_of(url: str | None) -> str | None:
    """The URL's host, lower case, without a leading ``www.``; None without one."""
    if not url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.removeprefix("www.") if host else None


def line_key(line: str, cfg: TemplateLinesConfig) -> str:
    """The form two lines must share to count as the same line."""
    key = normalize_text(line) if cfg.normalize else line.strip()
    return _DIGIT.sub("0", key) if cfg.mask_digits else key


def line_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), signed=True)


def document_lines(text: str | None, cfg: TemplateLinesConfig) -> dict[int, list[int]]:
    """Line hash -> indices in ``text.split("\\n")`` of the lines long enough to count."""
    found: dict[int, list[int]] = {}
    for index, line in enumerate((text or "").split("\n")):
        key = line_key(line, cfg)
        if len(key) >= cfg.min_line_chars:
            found.setdefault(line_hash(key), []).append(index)
    return found


def line_pairs(documents: pa.Table, cfg: TemplateLinesConfig) -> pa.Table:
    """Rows of ``PAIRS_SCHEMA`` for the documents (columns id, shard, ordinal, url,
    format, text) whose format is considered."""
    rows: dict[str, list] = {name: [] for name in PAIRS_SCHEMA.names}
    formats = None if cfg.apply_to_formats is None else set(cfg.apply_to_formats)
    for doc in documents.select(["id", "shard", "ordinal", "url", "format", "text"]).to_pylist():
        if formats is not None and doc["format"] not in formats:
            continue
        host = host_of(doc["url"])
        for digest, indices in document_lines(doc["text"], cfg).items():
            for name, value in (("line_hash", digest), ("host", host), ("line_indices", indices)):
                rows[name].append(value)
            for name in ("id", "shard", "ordinal"):
                rows[name].append(doc[name])
    return pa.table(rows, schema=PAIRS_SCHEMA)


def considered_documents(documents: pa.Table, cfg: TemplateLinesConfig) -> int:
    """How many documents the corpus-wide fraction is a fraction of."""
    if cfg.apply_to_formats is None:
        return documents.num_rows
    formats = pa.array(cfg.apply_to_formats, pa.string())
    return pc.sum(pc.is_in(documents.column("format"), value_set=formats)).as_py() or 0


def is_corpus_template(documents: int, cfg: TemplateLinesConfig, total_documents: int) -> bool:
    """Whether a line in ``documents`` documents is a template corpus-wide."""
    if cfg.min_corpus_documents is None and cfg.min_corpus_fraction is None:
        return False
    if cfg.min_corpus_documents is not None and documents < cfg.min_corpus_documents:
        return False
    fraction = cfg.min_corpus_fraction
    return fraction is None or documents >= fraction * total_documents


def template_removals(rows: pa.Table, cfg: TemplateLinesConfig, total_documents: int) -> pa.Table:
    """Pair rows of whole line-hash groups in (one group or a whole shuffle partition),
    the rows whose line is a template out: its line is in enough documents corpus-wide
    (one row per document and line), or in enough documents of the row's host."""
    rows = rows.select(PAIRS_SCHEMA.names).cast(PAIRS_SCHEMA)
    if rows.num_rows == 0:
        return rows
    hashes = rows.column("line_hash").to_numpy()
    _, line, documents = np.unique(hashes, return_inverse=True, return_counts=True)
    corpus = np.array(
        [is_corpus_template(int(n), cfg, total_documents) for n in documents.tolist()]
    )
    keep = corpus[line]
    if cfg.min_host_documents is not None:
        hosts = rows.column("host").combine_chunks().dictionary_encode()
        host = pc.fill_null(hosts.indices, -1).to_numpy().astype(np.int64)
        pairs = np.stack([line.astype(np.int64), host], axis=1)
        _, pair, on_host = np.unique(pairs, axis=0, return_inverse=True, return_counts=True)
        keep |= (host >= 0) & (on_host[pair.reshape(-1)] >= cfg.min_host_documents)
    return rows.filter(pa.array(keep))


def remove_lines(text: str, remove: set[int]) -> str:
    """``text`` without the given lines; a blank line left next to a removed one goes
    too, so no gap doubles and the text neither starts nor ends with a blank line."""
    if not remove:
        return text
    kept: list[str] = []
    after_removal = False
    for index, line in enumerate(text.split("\n")):
        if index in remove:
            after_removal = True
            continue
        blank = not line.strip()
        if blank and after_removal and (not kept or not kept[-1].strip()):
            continue  # would double a gap, or open the text with a blank line
        kept.append(line)
        after_removal = after_removal and blank
    while after_removal and kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept)


def shard_decision(
    removals: pa.Table, texts: pa.Table
) -> tuple[pa.Table, Counter[int], dict[int, str]]:
    """One shard's decision from its removal rows and its texts (columns id, text):
    (decision rows, documents per removed line hash, an example text per hash)."""
    by_id: dict[str, set[int]] = {}
    place: dict[str, tuple[int, int]] = {}
    hashes: dict[str, list[tuple[int, int]]] = {}
    for row in removals.to_pylist():
        by_id.setdefault(row["id"], set()).update(row["line_indices"])
        place[row["id"]] = (row["shard"], row["ordinal"])
        hashes.setdefault(row["id"], []).append((row["line_hash"], row["line_indices"][0]))
    ids, texts_list = texts.column("id").to_pylist(), texts.column("text").to_pylist()
    text_of = dict(zip(ids, texts_list, strict=True))
    counts: Counter[int] = Counter()
    examples: dict[int, str] = {}
    rows = []
    for doc_id, indices in by_id.items():
        text = text_of[doc_id] or ""
        lines = text.split("\n")
        for digest, first in hashes[doc_id]:
            counts[digest] += 1
            examples.setdefault(digest, lines[first].strip())
        remaining = len(remove_lines(text, indices).strip())
        rows.append((*place[doc_id], doc_id, sorted(indices), remaining))
    rows.sort()
    decision = pa.table(
        {
            "id": [r[2] for r in rows],
            "shard": [r[0] for r in rows],
            "ordinal": [r[1] for r in rows],
            "remove_lines": [r[3] for r in rows],
            "remaining_chars": [r[4] for r in rows],
        },
        schema=DECISION_SCHEMA,
    )
    return decision, counts, examples


def apply_template_decision(
    documents: pa.Table, decision: pa.Table, cfg: TemplateLinesConfig
) -> tuple[pa.Table, pa.Table]:
    """(kept, dropped): kept documents get the new ``text`` (when the column is there)
    and ``template_lines_removed``; documents left with fewer than
    ``min_remaining_chars`` characters are dropped as template_only, with the characters
    left as ``drop_score``. Every input row is in exactly one of the two."""
    plan = {row["id"]: row for row in decision.to_pylist()}
    ids = documents.column("id").to_pylist()
    rows = [plan.get(doc_id) for doc_id in ids]
    too_short = [r is not None and r["remaining_chars"] < cfg.min_remaining_chars for r in rows]
    mask = pa.array(too_short, pa.bool_())
    removed = pa.array([len(r["remove_lines"]) if r else 0 for r in rows], pa.int32())
    documents = set_column(documents, REMOVED_COLUMN, removed)
    if "text" in documents.column_names:
        # A dropped row keeps its original text, so the rejects snippet shows the template.
        new = [
            remove_lines(text, set(r["remove_lines"])) if r and text and not short else text
            for text, r, short in zip(
                documents.column("text").to_pylist(), rows, too_short, strict=True
            )
        ]
        documents = set_column(documents, "text", pa.array(new, pa.string()))
    dropped = documents.filter(mask)
    kept = documents.filter(pc.invert(mask))
    n = dropped.num_rows
    left = [r["remaining_chars"] for r, short in zip(rows, too_short, strict=True) if short]
    dropped = set_column(dropped, DROP_REASON, pa.array([REASON_TEMPLATE_ONLY] * n, pa.string()))
    dropped = set_column(dropped, DROP_SCORE, pa.array(left, pa.float64()))
    return kept, dropped


def find_template_lines_in_memory(
    documents: pa.Table, cfg: TemplateLinesConfig
) -> tuple[pa.Table, Counter[int], dict[int, str]]:
    """The whole decision on one table (tests, small runs): what the Ray wiring computes
    with a shuffle over line hashes, here in one call."""
    pairs = line_pairs(documents, cfg)
    removals = template_removals(pairs, cfg, considered_documents(documents, cfg))
    return shard_decision(removals, documents.select(["id", "text"]))
