"""``minhash_dedup`` through Ray: the distributed decision equals the in-memory one, the
distributed connected-components path equals driver union-find, and a two-node
cluster gives the same clusters as one node."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.curate import RunLayout
from pipeline.minhash_components import components_and_drops
from pipeline.minhash_wiring import STEP, decide_near_duplicates, driver_drops, shuffle_strategy
from pipeline.shards import Shard, read_json, read_parquet, write_json_atomic, write_parquet_atomic
from stages.duplicates import DROPS_SCHEMA
from stages.minhash import MinHashConfig
from stages.minhash_lsh import find_near_duplicates_in_memory

REPO = Path(__file__).resolve().parent.parent
SHARDS = 3
# Recall-friendly bands keep the small test corpus deterministic in what it finds.
# Small partitions: several band partitions and several verification partitions.
CONFIG = MinHashConfig(
    bands=25, rows_per_band=5, partition_rows=1000, verify_partition_bytes=16 << 10
)


def _texts(seed: int = 0) -> list[str]:
    """Originals, variants with 3-8 of 250 words swapped (Jaccard about 0.85-0.95),
    a few far variants (about 0.5) and an empty document."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    originals = [rng.choices(vocab, k=250) for _ in range(45)]
    texts = [" ".join(words) for words in originals]
    for n, swaps in enumerate([3, 5, 8, 4, 6, 3, 7, 5, 4, 6, 3, 5] + [60] * 3):
        words = list(originals[n % 9])  # several variants per original: bigger clusters
        for _ in range(swaps):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        texts.append(" ".join(words))
    texts.append("")
    rng.shuffle(texts)
    return texts


def _write_run(root: Path, texts: list[str]) -> tuple[RunLayout, list[Shard], pa.Table]:
    """Pass-1 outputs as a run would leave them: per shard, documents and stats."""
    layout = RunLayout.for_output(str(root))
    tables = []
    for shard in range(SHARDS):
        mine = texts[shard::SHARDS]
        table = pa.table(
            {
                "id": [f"s{shard}-{i:03d}" for i in range(len(mine))],
                "shard": pa.array([shard] * len(mine), pa.int32()),
                "ordinal": pa.array(range(len(mine)), pa.int64()),
                "text": mine,
            }
        )
        write_parquet_atomic(layout.filesystem, layout.work_documents(shard), table)
        stats = {"documents": {"rows": table.num_rows}}
        write_json_atomic(layout.filesystem, layout.work_stats(shard), stats)
        tables.append(table)
    shards = [Shard(index=i, input_index=0, files=()) for i in range(SHARDS)]
    return layout, shards, pa.concat_tables(tables)


def _decision(layout: RunLayout, fingerprint: str) -> pa.Table:
    tables = [
        read_parquet(layout.filesystem, layout.decision(STEP, fingerprint, s), DROPS_SCHEMA)
        for s in range(SHARDS)
    ]
    return pa.concat_tables(tables).sort_by([("shard", "ascending"), ("ordinal", "ascending")])


@pytest.fixture(scope="module")
def decided(ray_session, tmp_path_factory):
    layout, shards, documents = _write_run(tmp_path_factory.mktemp("minhash"), _texts())
    decide_near_duplicates(layout, shards, [], [], "single", CONFIG)
    return layout, shards, documents


def test_ray_decision_equals_the_in_memory_result(decided):
    layout, _, documents = decided
    expected = find_near_duplicates_in_memory(documents, CONFIG)
    assert expected.num_rows >= 8
    assert _decision(layout, "single").equals(expected)
    marker = read_json(layout.filesystem, f"{layout.decision_dir(STEP, 'single')}/_SUCCESS")
    report = marker["report"]
    assert report["components"] == "driver union-find"
    assert report["partitions"] >= 2
    assert marker["layout"]["groups"] >= 3 and marker["layout"]["sign_tasks"] >= 2
    assert report["dropped"] == expected.num_rows
    sizes = report["cluster_sizes"]
    assert sum(int(size) * n for size, n in sizes.items()) == expected.num_rows + sum(
        sizes.values()
    )


def test_distributed_components_equal_driver_union_find(decided):
    """Edges from the in-memory path, clustered both ways (the distributed path is what
    a run takes above ``union_find_max_edges``)."""
    import ray

    _, _, documents = decided
    from stages.minhash_lsh import candidate_edges, pair_jaccard

    _, src, dst, _, sets = candidate_edges(documents, CONFIG)
    similarity = pair_jaccard(src, dst, sets)
    keep = similarity >= CONFIG.threshold
    ids = dict(
        zip(
            zip(documents["shard"].to_pylist(), documents["ordinal"].to_pylist(), strict=True),
            documents["id"].to_pylist(),
            strict=True,
        )
    )

    def id_of(node: int) -> str:
        return ids[(node >> 32, node & 0xFFFFFFFF)]

    edges = pa.table(
        {
            "src": src[keep],
            "dst": dst[keep],
            "src_id": [id_of(n) for n in src[keep].tolist()],
            "dst_id": [id_of(n) for n in dst[keep].tolist()],
            "src_score": pa.nulls(int(keep.sum()), pa.float64()),
            "dst_score": pa.nulls(int(keep.sum()), pa.float64()),
            "similarity": similarity[keep],
        }
    )
    expected, expected_sizes = driver_drops(edges)
    dataset = ray.data.from_arrow(edges).repartition(3)
    with shuffle_strategy(CONFIG.shuffle):
        drops, sizes = components_and_drops(dataset, partitions=3)
        got = pa.Table.from_pylist(drops.take_all(), schema=DROPS_SCHEMA)
    order = [("shard", "ascending"), ("ordinal", "ascending")]
    assert got.sort_by(order).equals(expected.sort_by(order))
    assert sizes == expected_sizes


@pytest.mark.slow
def test_two_node_cluster_gives_the_single_node_clusters(decided, tmp_path):
    layout, _, _ = decided
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PIPELINE_PROGRESS="0")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.minhash_cluster_run",
            layout.root,
            str(SHARDS),
            "cluster",
            "2",
            CONFIG.model_dump_json(),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(output["nodes"]) == 2
    got = pa.Table.from_pylist(output["drops"], schema=DROPS_SCHEMA)
    assert got.sort_by([("shard", "ascending"), ("ordinal", "ascending")]).equals(
        _decision(layout, "single")
    )
