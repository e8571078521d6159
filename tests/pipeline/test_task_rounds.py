"""The exchange the global steps share, without Ray: the helpers that cut shards into
runs and route rows keep every row exactly once, and the ``exact_dedup`` rounds, run
by the driver in this process, give the in-memory decision for any number of runs and
partitions."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa

from pipeline.curate import RunLayout
from pipeline.exact_rounds import EXACT_DEDUP, STEP
from pipeline.round_driver import InProcess, decide
from pipeline.shards import Shard, read_parquet
from pipeline.task_rounds import by_shard, shard_groups, split_rows
from stages.duplicates import DROPS_SCHEMA
from stages.exact_dedup import DIGEST_COLUMN, ExactDedupConfig, find_duplicates_in_memory
from tests.pipeline.minhash_corpus import write_pass_one

SHARDS = 6


def test_shard_groups_are_consecutive_balanced_and_never_empty():
    assert shard_groups([], 4) == []
    assert shard_groups([5, 5, 5], 8) == [[0], [1], [2]]
    assert shard_groups([10, 0, 0, 10], 2) == [[0], [1, 2, 3]]
    assert shard_groups([100, 1, 1, 1, 1], 3) == [[0], [1, 2], [3, 4]]
    rng = random.Random(0)
    for _ in range(50):
        counts = [rng.randrange(0, 50) for _ in range(rng.randrange(1, 30))]
        runs = shard_groups(counts, rng.randrange(1, 12))
        assert [i for run in runs for i in run] == list(range(len(counts)))
        assert all(runs)


def test_split_rows_keeps_every_row_once_in_order():
    table = pa.table({"x": list(range(20))})
    destination = np.array([3, 0, 1, 3, 0] * 4, dtype=np.int32)
    parts = split_rows(table, destination, 5)
    assert [p.num_rows for p in parts] == [8, 4, 0, 8, 0]
    for d, part in enumerate(parts):
        assert part.column("x").to_pylist() == np.flatnonzero(destination == d).tolist()


def test_by_shard_gives_each_shard_its_rows_in_order():
    table = pa.table({"shard": pa.array([2, 0, 2, 5, 0, 2], pa.int32()), "x": list(range(6))})
    got = [(shard, part.column("x").to_pylist()) for shard, part in by_shard(table)]
    assert got == [(0, [1, 4]), (2, [0, 2, 5]), (5, [3])]
    assert list(by_shard(table.slice(0, 0))) == []


def _digests_run(root) -> tuple[RunLayout, pa.Table]:
    """Pass-1 documents with digests: 40 distinct texts, some copied up to four times
    across shards, shuffled."""
    rng = random.Random(5)
    digests = [f"{rng.getrandbits(128):032x}" for _ in range(40)]
    pool = digests + [rng.choice(digests[:12]) for _ in range(25)]
    rng.shuffle(pool)
    layout, _, documents = write_pass_one(root, pool, SHARDS, column=DIGEST_COLUMN)
    return layout, documents


def test_exact_rounds_give_the_in_memory_decision_for_any_layout(tmp_path):
    layout, documents = _digests_run(tmp_path)
    expected = find_duplicates_in_memory(documents)
    assert expected.num_rows >= 20
    for cpus, partitions, limit in [(1, 1, 0), (2, 2, 0), (3, 5, 0), (2, 7, 0), (1, 3, 1 << 30)]:
        fingerprint = f"layout-{cpus}-{partitions}-{limit}"
        executor = InProcess(cpus_=cpus, partitions=partitions)
        decide(EXACT_DEDUP, layout, shards_of(SHARDS), [], [], fingerprint, ExactDedupConfig(),
               executor=executor, driver_max_bytes=limit)  # fmt: skip
        got = pa.concat_tables(
            read_parquet(layout.filesystem, layout.decision(STEP, fingerprint, s), DROPS_SCHEMA)
            for s in range(SHARDS)
        )
        assert got.sort_by([("shard", "ascending"), ("ordinal", "ascending")]).equals(expected)


def shards_of(count: int) -> list[Shard]:
    return [Shard(index=i, input_index=0, pieces=()) for i in range(count)]
