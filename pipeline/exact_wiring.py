"""Ray wiring of the ``exact_dedup`` global step: three rounds of tasks
(``pipeline/task_rounds.py``); the pure half is ``stages/exact_dedup.py``.

1. **Digests**, one task per run of consecutive shards: the survivors' (id, shard,
   ordinal, digest), 16 bytes of digest a document and never the text, split by a
   partition of the digest.
2. **Choose**, one task per digest partition (``PARTITION_ROWS`` digests each): per
   digest, every copy but the first in input order is dropped. The drops go to the run
   of their shard.
3. **Write**, one task per run: each shard's drops, written as its decision.

No process holds every digest. This replaced two Ray Data ``groupby``s on the default
hash shuffle, whose 200 aggregator partitions took 15 s on the 230-document demo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pipeline import ray_exec
from pipeline.curate import GlobalStep, RunLayout
from pipeline.shards import Shard
from pipeline.task_rounds import (
    Survivors,
    by_shard,
    document_counts,
    mark_decision_done,
    received,
    releases_freed_memory,
    shard_runs,
    split_rows,
    write_decisions,
)
from stages.exact_dedup import DIGEST_COLUMN, ExactDedupConfig, choose_duplicates

STEP = "exact_dedup"
PARTITION_ROWS = 1_000_000  # digests per choose task: about 80 MB with their ids
COLUMNS = ["id", "shard", "ordinal", DIGEST_COLUMN]


def digest_partition(digests: pa.ChunkedArray | pa.Array, partitions: int) -> np.ndarray:
    """Partition of each hex digest, from its first 60 bits (blake2b: already uniform)."""
    values = np.array([int(d[:15], 16) for d in digests.to_pylist()], dtype=np.int64)
    return (values % partitions).astype(np.int32)


@releases_freed_memory
def digest_run(survivors: Survivors, shards: list[int], partitions: int) -> tuple:
    """Round 1: (stats, one table of digests per partition) for these shards."""
    table = pa.concat_tables([survivors.documents(shard, COLUMNS) for shard in shards])
    parts = split_rows(table, digest_partition(table.column(DIGEST_COLUMN), partitions), partitions)
    return {"documents": table.num_rows}, *parts


@releases_freed_memory
def choose_partition(group_of_shard: np.ndarray, groups: int, *parts: pa.Table) -> tuple:
    """Round 2, one digest partition: the copies to drop, one table per run of shards."""
    drops = choose_duplicates(pa.concat_tables(parts))
    route = group_of_shard[drops.column("shard").to_numpy()]
    return {"duplicates": drops.num_rows}, *split_rows(drops, route, groups)


@releases_freed_memory
def write_run(layout: RunLayout, fingerprint: str, *parts: pa.Table) -> dict:
    """Round 3, one run of shards: each shard's drops written as its decision (a shard
    without duplicates gets no file: it reads as an empty decision)."""

    written = [
        write_decisions(mine, layout, STEP, fingerprint)
        for _, mine in by_shard(pa.concat_tables(parts))
    ]
    return {"shards_with_decisions": len(written)}


def decide_exact_duplicates(
    layout: RunLayout,
    shards: Sequence[Shard],
    earlier: list[GlobalStep],
    fingerprints: list[str],
    fingerprint: str,
    settings: ExactDedupConfig,
) -> None:
    """Digests -> choose -> write, then ``_SUCCESS``."""

    written = 0
    if shards:
        counts = document_counts(layout, shards)
        partitions = max(1, math.ceil(sum(counts) / PARTITION_ROWS))
        survivors = ray_exec.put(Survivors(layout, earlier, fingerprints))
        runs, group_of_shard = shard_runs(counts, shards, partitions)
        _, digests = ray_exec.run_round(
            STEP, "digests", digest_run, [(survivors, run, partitions) for run in runs], partitions
        )
        _, drops = ray_exec.run_round(
            STEP,
            "choose",
            choose_partition,
            [(group_of_shard, len(runs), *received(digests, p)) for p in range(partitions)],
            len(runs),
        )
        calls = [(layout, fingerprint, *received(drops, g)) for g in range(len(runs))]
        stats, _ = ray_exec.run_round(STEP, "write", write_run, calls, 0)
        written = sum(entry["shards_with_decisions"] for entry in stats)
    mark_decision_done(layout, STEP, fingerprint, {"shards_with_decisions": written})
