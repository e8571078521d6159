"""Drop lists: what a global deduplication step decides, and how a shard applies it.

Exact and near-duplicate removal both end in the same shape of decision: per shard,
the ids to drop, each with the id of the copy that is kept (and, for near duplicates,
the cluster and its estimated similarity). Sharing the shape means the finalize step
and the rejects sink treat every deduplication the same way.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from stages.base import DROP_REASON, DROP_SCORE

DROPS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("shard", pa.int32()),
        ("ordinal", pa.int64()),
        ("duplicate_of", pa.string()),  # the id of the copy that is kept
        ("cluster_id", pa.string()),  # near-duplicate cluster (null for exact copies)
        ("similarity", pa.float64()),  # estimated Jaccard with the kept copy, if known
    ]
)


def split_by_drops(documents: pa.Table, drops: pa.Table, reason: str) -> tuple[pa.Table, pa.Table]:
    """(kept, dropped): dropped rows carry ``drop_reason``, ``drop_score`` (similarity),
    ``duplicate_of`` and ``cluster_id`` so the rejects sink can say why and to what."""
    is_dropped = pc.is_in(documents.column("id"), value_set=drops.column("id"))
    kept = documents.filter(pc.invert(is_dropped))
    dropped = documents.filter(is_dropped)
    by_id = {
        row["id"]: row
        for row in drops.select(["id", "duplicate_of", "cluster_id", "similarity"]).to_pylist()
    }
    matched = [by_id[i] for i in dropped.column("id").to_pylist()]
    n = dropped.num_rows
    for name, values in (
        ("duplicate_of", pa.array([m["duplicate_of"] for m in matched], pa.string())),
        ("cluster_id", pa.array([m["cluster_id"] for m in matched], pa.string())),
        (DROP_REASON, pa.array([reason] * n, pa.string())),
        (DROP_SCORE, pa.array([m["similarity"] for m in matched], pa.float64())),
    ):
        index = dropped.schema.get_field_index(name)
        dropped = (
            dropped.set_column(index, name, values)
            if index >= 0
            else dropped.append_column(name, values)
        )
    return kept, dropped
