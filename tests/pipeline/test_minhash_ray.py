"""``minhash_dedup`` through Ray: the distributed decision (its rows never meeting in the
driver: ``driver_max_bytes=0``) equals the in-memory one, the distributed
connected-components path equals driver union-find, and a two-node cluster gives the
same clusters as one node."""

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
from pipeline.minhash_rounds import MINHASH_DEDUP, STEP
from pipeline.round_driver import decide
from pipeline.shards import Shard, read_json, read_parquet
from stages.duplicates import DROPS_SCHEMA
from stages.minhash import MinHashConfig
from stages.minhash_lsh import find_near_duplicates_in_memory
from tests.pipeline.minhash_corpus import write_pass_one

REPO = Path(__file__).resolve().parents[2]
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
    return write_pass_one(root, texts, SHARDS)


def _decision(layout: RunLayout, fingerprint: str) -> pa.Table:
    tables = [
        read_parquet(layout.filesystem, layout.decision(STEP, fingerprint, s), DROPS_SCHEMA)
        for s in range(SHARDS)
    ]
    return pa.concat_tables(tables).sort_by([("shard", "ascending"), ("ordinal", "ascending")])


@pytest.fixture(scope="module")
def decided(ray_session, tmp_path_factory):
    layout, shards, documents = _write_run(tmp_path_factory.mktemp("minhash"), _texts())
    decide(MINHASH_DEDUP, layout, shards, [], [], "single", CONFIG, driver_max_bytes=0)
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
    assert marker["layout"]["groups"] >= 3 and marker["layout"]["map_tasks"] >= 2
    assert marker["layout"]["path"] == "tasks"
    assert report["dropped"] == expected.num_rows
    sizes = report["cluster_sizes"]
    assert sum(int(size) * n for size, n in sizes.items()) == expected.num_rows + sum(
        sizes.values()
    )


def test_distributed_components_give_the_driver_union_find_decision(decided):
    """With ``union_find_max_edges: 0`` the verified edges never meet on the driver:
    star rounds of tasks read them straight from the verify tasks' outputs."""
    layout, shards, _ = decided
    distributed = CONFIG.model_copy(update={"union_find_max_edges": 0})
    decide(MINHASH_DEDUP, layout, shards, [], [], "stars", distributed, driver_max_bytes=0)
    assert _decision(layout, "stars").equals(_decision(layout, "single"))
    single, stars = (
        read_json(layout.filesystem, f"{layout.decision_dir(STEP, name)}/_SUCCESS")["report"]
        for name in ("single", "stars")
    )
    assert stars["components"] == "distributed stars"
    assert stars["cluster_sizes"] == single["cluster_sizes"]
    assert stars["dropped"] == single["dropped"]


@pytest.mark.slow
def test_two_node_cluster_gives_the_single_node_clusters(decided, tmp_path):
    layout, _, _ = decided
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PIPELINE_PROGRESS="0")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.pipeline.minhash_cluster_run",
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
