"""Exact deduplication: documents whose normalised text is identical keep one copy.

Two pieces, because the decision is global and the hashing is not:

* ``text_digests`` runs per document (inside the per-shard pass) and adds a fixed-size
  digest of the normalised text, so the global step moves 16 bytes per document
  instead of its text.
* ``choose_duplicates`` runs once per digest group (Ray Data ``groupby``) and keeps the
  document that comes first in input order: the smallest ``(shard, ordinal)``. Input
  order is fixed by the sorted shard plan, so the same copy survives on every run and
  for any number of workers.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

from stages.base import StageConfig
from stages.duplicates import DROPS_SCHEMA

REASON_EXACT_DUPLICATE = "exact_duplicate"
DIGEST_COLUMN = "text_digest"

_PUNCTUATION_OR_SPACE = re.compile(r"[\W_]+", re.UNICODE)


class ExactDedupConfig(StageConfig):
    normalize: bool = True
    """Compare texts after NFKC, case folding and collapsing punctuation and whitespace,
    so copies that differ only in spacing, case or quote style count as one. Off compares
    the raw text byte for byte."""


def normalize_text(text: str) -> str:
    """The form two texts must share to count as the same document."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCTUATION_OR_SPACE.sub(" ", folded).strip()


def text_digests(texts: pa.Array | pa.ChunkedArray, cfg: ExactDedupConfig) -> pa.Array:
    """A 128-bit blake2b digest per text, as hex (string keys group and sort everywhere);
    a null text hashes as the empty string."""
    digests = []
    for text in texts.to_pylist():
        value = text or ""
        if cfg.normalize:
            value = normalize_text(value)
        digests.append(hashlib.blake2b(value.encode("utf-8"), digest_size=16).hexdigest())
    return pa.array(digests, pa.string())


def choose_duplicates(group: pa.Table) -> pa.Table:
    """Given the rows of one digest group (columns id, shard, ordinal), return the rows
    to drop, each naming the id of the copy that is kept."""
    if group.num_rows < 2:
        return DROPS_SCHEMA.empty_table()
    ordered = group.sort_by([("shard", "ascending"), ("ordinal", "ascending")])
    kept_id = ordered.column("id")[0].as_py()
    dropped = ordered.slice(1)
    n = dropped.num_rows
    return pa.table(
        {
            "id": dropped.column("id").cast(pa.string()),
            "shard": dropped.column("shard").cast(pa.int32()),
            "ordinal": dropped.column("ordinal").cast(pa.int64()),
            "duplicate_of": pa.array([kept_id] * n, pa.string()),
            "cluster_id": pa.nulls(n, pa.string()),
            "similarity": pa.array([1.0] * n, pa.float64()),
        },
        schema=DROPS_SCHEMA,
    )


def find_duplicates_in_memory(table: pa.Table) -> pa.Table:
    """The whole decision on one table (tests, small runs): group by digest locally."""
    if table.num_rows == 0:
        return DROPS_SCHEMA.empty_table()
    results = [DROPS_SCHEMA.empty_table()]
    for digest in pc.unique(table.column(DIGEST_COLUMN)).to_pylist():
        group = table.filter(pc.equal(table.column(DIGEST_COLUMN), digest))
        results.append(choose_duplicates(group))
    return pa.concat_tables(results).sort_by([("shard", "ascending"), ("ordinal", "ascending")])
