"""The rounds of ``minhash_dedup`` as plain functions, without Ray: run by the driver in
this process with the exchanges cut every way, they give the in-memory decision for any
number of signing tasks, band partitions and verification runs; and its helpers (text
batches, pair totals) keep every row exactly once."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from pipeline.minhash_rounds import MINHASH_DEDUP, STEP, sign, text_batches
from pipeline.round_driver import InProcess, decide
from pipeline.round_step import StepInputs
from pipeline.shards import read_json, read_parquet
from stages.duplicates import DROPS_SCHEMA
from stages.minhash import MinHashConfig
from stages.minhash_lsh import find_near_duplicates_in_memory, pair_totals
from tests.pipeline.minhash_corpus import write_pass_one

SHARDS = 5


def _texts(seed: int = 1) -> list[str]:
    """Originals and variants with a few of 200 words swapped (Jaccard 0.85-0.95), in
    clusters of up to four, shuffled over the shards; one empty document."""
    rng = random.Random(seed)
    vocab = [f"v{i}" for i in range(2500)]
    originals = [rng.choices(vocab, k=200) for _ in range(40)]
    texts = [" ".join(words) for words in originals]
    for n in range(24):
        words = list(originals[n % 8])
        for _ in range(rng.randrange(2, 7)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        texts.append(" ".join(words))
    texts.append("")
    rng.shuffle(texts)
    return texts


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_pass_one(tmp_path_factory.mktemp("rounds"), _texts(), SHARDS)


def _rounds(run, cfg: MinHashConfig, cpus: int, partitions: int, groups: int):
    """The whole step through the driver, its rounds as tasks in this process, with
    ``cpus`` (sign tasks: two per CPU), ``partitions`` and ``groups`` forced."""
    layout, shards, _ = run
    fingerprint = f"{cfg.verify_candidates}-{cpus}-{partitions}-{groups}"
    executor = InProcess(cpus_=cpus, partitions=partitions, groups=groups)
    decide(MINHASH_DEDUP, layout, shards, [], [], fingerprint, cfg, executor=executor,
           driver_max_bytes=0)  # fmt: skip
    drops = pa.concat_tables(
        read_parquet(layout.filesystem, layout.decision(STEP, fingerprint, s), DROPS_SCHEMA)
        for s in range(SHARDS)
    )
    marker = read_json(layout.filesystem, f"{layout.decision_dir(STEP, fingerprint)}/_SUCCESS")
    return drops.sort_by([("shard", "ascending"), ("ordinal", "ascending")]), marker


@pytest.mark.parametrize("verify", [True, False])
def test_rounds_give_the_in_memory_decision_for_any_layout(run, verify):
    layout, _, documents = run
    cfg = MinHashConfig(bands=25, rows_per_band=5, verify_candidates=verify)
    inputs = StepInputs(layout, [], [], STEP, "sign-only", cfg)
    stats, bands = sign(inputs, documents)
    assert stats["documents"] == documents.num_rows
    assert bands.num_rows == (documents.num_rows - 1) * 25  # the empty document has none
    expected = find_near_duplicates_in_memory(documents, cfg)
    assert expected.num_rows >= 10
    for cpus, partitions, groups in [(1, 1, 1), (1, 3, 2), (3, 7, 5), (2, 2, 4)]:
        got, marker = _rounds(run, cfg, cpus, partitions, groups)
        assert got.equals(expected), (cpus, partitions, groups)
        assert marker["layout"]["path"] == "tasks"
        assert marker["layout"]["map_tasks"] == min(SHARDS, max(partitions, 2 * cpus))
        assert marker["report"]["documents"] == documents.num_rows
        assert marker["report"]["dropped"] == expected.num_rows


def test_pair_totals_sum_partial_counts():
    src = np.array([5, 1, 5, 1, 2, 5])
    dst = np.array([6, 2, 6, 2, 3, 7])
    first, totals = pair_totals(src, dst, np.array([1, 2, 3, 4, 5, 6]))
    assert list(zip(src[first].tolist(), dst[first].tolist(), strict=True)) == [
        (1, 2), (2, 3), (5, 6), (5, 7)
    ]  # fmt: skip
    assert first.tolist() == [1, 4, 0, 5]  # the first occurrence of each pair
    assert totals.tolist() == [6, 5, 4, 6]


def test_text_batches_bound_the_text_and_keep_every_row():
    texts = ["a" * 10, "b" * 3, None, "c" * 30, "d" * 4, "e" * 4, ""]
    table = pa.table({"text": texts, "i": list(range(len(texts)))})
    batches = list(text_batches(table, 12))
    assert [b.column("i").to_pylist() for b in batches] == [[0], [1, 2], [3], [4, 5, 6]]
    assert pa.concat_tables(batches).equals(table)
