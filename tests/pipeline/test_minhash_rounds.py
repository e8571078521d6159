"""The rounds of ``minhash_dedup`` as plain functions, without Ray: run one after the
other in this process, with the exchanges done by hand, they give the in-memory
decision for any number of signing tasks, band partitions and verification groups;
and its helpers (text batches, pair totals) keep every row exactly once."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from pipeline.minhash_wiring import (
    StepInputs,
    bucket_partition,
    driver_drops,
    merge_group,
    send_sets,
    sign_group,
    text_batches,
    verify_group,
)
from pipeline.task_rounds import shard_groups
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
    layout, _, documents = write_pass_one(tmp_path_factory.mktemp("rounds"), _texts(), SHARDS)
    return layout, documents


def _rounds(layout, cfg: MinHashConfig, sign_tasks: int, partitions: int, groups: int):
    """Every round in order, each task's outputs handed to the next round by index, as
    ``decide_near_duplicates`` wires them through the object store."""
    inputs = StepInputs(layout, [], [], cfg.with_band_layout())
    counts = [13] * SHARDS
    signed = [sign_group(inputs, run, partitions) for run in shard_groups(counts, sign_tasks)]
    runs = shard_groups(counts, groups)
    group_of_shard = np.zeros(SHARDS, np.int32)
    for group, run in enumerate(runs):
        group_of_shard[run] = group
    bucketed = [
        bucket_partition(group_of_shard, len(runs), *[out[1 + p] for out in signed])
        for p in range(partitions)
    ]
    per_group = [[out[1 + g] for out in bucketed] for g in range(len(runs))]
    if cfg.verify_candidates:
        sent = [send_sets(inputs, group_of_shard, len(runs), *parts) for parts in per_group]
        final = [verify_group(inputs, *[out[1 + g] for out in sent]) for g in range(len(runs))]
    else:
        final = [merge_group(inputs, *parts) for parts in per_group]
    edges = pa.concat_tables([out[1] for out in final])
    drops, _ = driver_drops(edges)
    return drops.sort_by([("shard", "ascending"), ("ordinal", "ascending")]), signed


@pytest.mark.parametrize("verify", [True, False])
def test_rounds_give_the_in_memory_decision_for_any_layout(run, verify):
    layout, documents = run
    cfg = MinHashConfig(bands=25, rows_per_band=5, verify_candidates=verify)
    expected = find_near_duplicates_in_memory(documents, cfg)
    assert expected.num_rows >= 10
    for sign_tasks, partitions, groups in [(1, 1, 1), (2, 3, 2), (5, 7, 5), (3, 2, 4)]:
        got, signed = _rounds(layout, cfg, sign_tasks, partitions, groups)
        assert got.equals(expected), (sign_tasks, partitions, groups)
        assert sum(out[0]["documents"] for out in signed) == documents.num_rows
        bands = sum(out[0]["rows"] for out in signed)
        assert bands == (documents.num_rows - 1) * 25  # the empty document has no bands


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
