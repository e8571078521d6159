"""Exact deduplication: documents whose normalised text is identical keep one copy.

Two pieces, because the decision is global and the hashing is not:

* ``text_digests`` runs per document (inside the per-shard pass) and adds a fixed-size
  digest of the normalised text, so the global step moves 16 bytes per document
  instead of its text.
* ``choose_duplicates`` runs once per partition of the digests (a round of Ray tasks,
  ``pipeline/exact_rounds.py``) and keeps, per digest, the document that comes first in
  input order: the smallest ``(shard, ordinal)``. Input
  order is fixed by the sorted shard plan, so the same copy survives on every run and
  for any number of workers.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np
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


def choose_duplicates(rows: pa.Table) -> pa.Table:
    """Given the rows of whole digest groups (columns id, shard, ordinal and the digest),
    return the rows to drop, each naming the id of the copy that is kept: the first of
    its group in input order. Vectorised over any number of groups, so a shuffle
    partition is one call."""
    if rows.num_rows < 2:
        return DROPS_SCHEMA.empty_table()
    ordered = rows.sort_by(
        [(DIGEST_COLUMN, "ascending"), ("shard", "ascending"), ("ordinal", "ascending")]
    )
    digests = ordered.column(DIGEST_COLUMN).combine_chunks()
    starts = np.ones(ordered.num_rows, dtype=bool)
    starts[1:] = pc.not_equal(digests.slice(1), digests.slice(0, len(digests) - 1)).to_numpy(
        zero_copy_only=False
    )
    positions = np.arange(ordered.num_rows)
    kept = np.maximum.accumulate(np.where(starts, positions, 0))  # each row's group start
    dropped_rows = pa.array(positions[~starts], pa.int64())
    dropped = ordered.take(dropped_rows)
    n = dropped.num_rows
    return pa.table(
        {
            "id": dropped.column("id").cast(pa.string()),
            "shard": dropped.column("shard").cast(pa.int32()),
            "ordinal": dropped.column("ordinal").cast(pa.int64()),
            "duplicate_of": ordered.column("id")
            .take(pa.array(kept[~starts], pa.int64()))
            .cast(pa.string()),
            "cluster_id": pa.nulls(n, pa.string()),
            "similarity": pa.array(np.ones(n), pa.float64()),
        },
        schema=DROPS_SCHEMA,
    )


def find_duplicates_in_memory(table: pa.Table) -> pa.Table:
    """The whole decision on one table (tests, small runs)."""
    drops = choose_duplicates(table)
    return drops.sort_by([("shard", "ascending"), ("ordinal", "ascending")])
