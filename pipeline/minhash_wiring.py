"""Ray wiring of the ``minhash_dedup`` global step (the pure halves are
``stages/minhash.py`` and ``stages/minhash_lsh.py``).

The step is four rounds of Ray tasks. Between rounds, Arrow tables are exchanged all to
all through the object store: a task returns one table per destination
(``num_returns``) and each task of the next round takes the matching table of every
task before it. No process holds all documents or all signatures, and each task's share
is bounded by a size from the config, so a worker's memory does not grow with the corpus.

1. **Sign**, one task per group of consecutive shards. It reads the shards' surviving
   texts one shard at a time and computes shingles, signatures and band keys. The output
   is one row per (document, band), split by a partition of the band key into
   ``partitions`` tables of about ``partition_rows`` rows each.
2. **Bucket**, one task per band partition. Equal keys become star edges, each with how
   many bands the pair shares. The edges are routed to the group of the edge's first
   document.
3. **Send sets**, one task per group (with ``verify_candidates``). It takes the distinct
   edges whose first document is in the group, re-reads and shingles those documents, and
   sends each edge to the group of its second document. Each first document's shingle
   set goes along once per destination group.
4. **Verify**, one task per group. It shingles the edges' second documents, takes the
   exact Jaccard of each pair and drops pairs below the threshold. Without verification,
   rounds 3 and 4 are a single merge task per group: it sums the bands each pair shares
   and estimates the similarity from them.

The groups of rounds 3 and 4 are chosen after round 1 from the shingle counts the sign
tasks return: ``verify_partition_bytes`` of shingle sets (8 bytes a shingle) per group,
at least ``TASKS_PER_CPU`` groups per CPU.

Then components. Up to ``union_find_max_edges`` edges meet on the driver for union-find;
above it, alternating large/small-star rounds run as Ray Data groupbys
(``pipeline/minhash_components.py``). Finally each shard's drops are written.

Why plain tasks rather than Ray Data groupbys: the same decision through Ray Data's sort
shuffle spent most of its CPU in Ray itself (sampling, the executor and its extra
workers). The rounds here are the step's own all-to-all exchanges, with nothing else in
between (figures in the README).
"""

from __future__ import annotations

import math
from collections import ChainMap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import ray_exec
from pipeline.curate import GlobalStep, RunLayout
from pipeline.minhash_components import components_and_drops
from pipeline.shards import Shard
from pipeline.task_rounds import (
    Survivors,
    by_shard,
    document_counts,
    mark_decision_done,
    received,
    release_freed_memory,
    releases_freed_memory,
    shard_runs,
    split_rows,
    write_decisions,
)
from stages.duplicates import DROPS_SCHEMA, split_by_drops
from stages.minhash import (
    REASON_NEAR_DUPLICATE,
    MinHashConfig,
    Signer,
    shingle_hashes,
    shingle_set,
)
from stages.minhash_lsh import (
    bucket_edges,
    cluster_drops,
    merge_histograms,
    node_keys,
    node_ordinal,
    node_shard,
    node_similarity,
    pair_jaccard,
    pair_totals,
    partition_of,
    size_histogram,
    union_find,
)

STEP = "minhash_dedup"
SIGN_BATCH_BYTES = 1 << 20  # text shingled at once

BAND_SCHEMA = pa.schema(
    [
        ("part", pa.int32()),
        ("key", pa.int64()),
        ("node", pa.int64()),
        ("id", pa.string()),
        ("score", pa.float64()),
    ]
)
_PAIR_FIELDS = [
    ("src", pa.int64()),
    ("dst", pa.int64()),
    ("src_id", pa.string()),
    ("dst_id", pa.string()),
    ("src_score", pa.float64()),
    ("dst_score", pa.float64()),
]
# Round 2's edges: the bands in which the pair shares a bucket.
CANDIDATE_SCHEMA = pa.schema([*_PAIR_FIELDS, ("bands", pa.int64())])
SETS_SCHEMA = pa.schema([("node", pa.int64()), ("shingles", pa.list_(pa.uint64()))])
EDGE_SCHEMA = pa.schema([*_PAIR_FIELDS, ("similarity", pa.float64())])


@dataclass(frozen=True)
class StepInputs(Survivors):
    """The survivors' reader and the config (with bands and rows filled in): put in the
    object store once, passed to each task by reference."""

    cfg: MinHashConfig

    def shingle_sets(self, nodes: np.ndarray) -> Iterator[tuple[np.ndarray, dict[int, np.ndarray]]]:
        """Per shard of the given nodes: (its nodes, node -> shingle set), re-read and
        shingled one shard at a time, so a caller holds one shard's sets. (The sets are
        too big to keep from round 1 for every document, 16 KB a document, where only
        the candidates need them.)"""
        nodes = np.unique(nodes)
        shards = node_shard(nodes)
        for shard in np.unique(shards).tolist():
            mine = nodes[shards == shard]
            documents = self.documents(shard, ["ordinal", "text"])
            ordinals = documents.column("ordinal").to_numpy()
            wanted = node_ordinal(mine)
            rows = np.minimum(np.searchsorted(ordinals, wanted), len(ordinals) - 1)
            if len(wanted) and not np.array_equal(ordinals[rows], wanted):
                raise RuntimeError(f"shard {shard}: candidate documents missing from its texts")
            candidates = documents.select(["text"]).take(pa.array(rows, pa.int64()))
            del documents
            sets: dict[int, np.ndarray] = {}
            done = 0
            for batch in text_batches(candidates, SIGN_BATCH_BYTES):
                hashes, offsets = shingle_hashes(batch.column("text").to_pylist(), self.cfg)
                for i, node in enumerate(mine[done : done + batch.num_rows].tolist()):
                    sets[node] = shingle_set(hashes[offsets[i] : offsets[i + 1]])
                done += batch.num_rows
            yield mine, sets
            del sets, candidates
            release_freed_memory()


@releases_freed_memory
def sign_group(inputs: StepInputs, shards: list[int], partitions: int) -> tuple:
    """Round 1: (stats, one band-row table per band partition) for these shards."""
    cfg = inputs.cfg
    columns = ["id", "shard", "ordinal", "text"]
    if cfg.prefer_column is not None:
        columns.append(cfg.prefer_column)
    signer = Signer(cfg)
    tables, documents, shingles = [], 0, 0
    for shard in shards:
        table = inputs.documents(shard, columns)
        for batch in text_batches(table, SIGN_BATCH_BYTES):
            rows, shingle_count = band_rows(batch, signer, partitions)
            tables.append(rows)
            shingles += shingle_count
        documents += table.num_rows
        del table
        release_freed_memory()  # between shards too: a task may read many
    table = pa.concat_tables(tables) if tables else BAND_SCHEMA.empty_table()
    parts = split_rows(table, table.column("part").to_numpy(), partitions)
    return {"documents": documents, "shingles": shingles, "rows": table.num_rows}, *parts


def text_batches(table: pa.Table, limit: int) -> Iterator[pa.Table]:
    """Consecutive slices of ``table`` with about ``limit`` bytes of text each (a longer
    document is a slice of its own): shingling's temporaries are several times the
    text, so a batch's size, not a shard's, bounds them."""
    sizes = pc.fill_null(pc.binary_length(table.column("text")), 0).to_numpy()
    start, size = 0, 0
    for row, length in enumerate(sizes.tolist()):
        if row > start and size + length > limit:
            yield table.slice(start, row - start)
            start, size = row, 0
        size += length
    if table.num_rows > start:
        yield table.slice(start, table.num_rows - start)


def band_rows(batch: pa.Table, signer: Signer, partitions: int) -> tuple[pa.Table, int]:
    """Documents in, one row per (document, band) out, and the documents' shingle count.
    Documents without shingles (empty texts) cannot be anybody's near duplicate and are
    left out."""
    cfg = signer.cfg
    hashes, offsets = shingle_hashes(batch.column("text").to_pylist(), cfg)
    live = np.flatnonzero(np.diff(offsets) > 0)
    keys = signer.band_keys(signer.signatures(hashes, offsets))[live].reshape(-1)
    nodes = node_keys(batch.column("shard"), batch.column("ordinal"))[live]
    rows = pa.array(np.repeat(live, signer.bands), pa.int64())
    table = pa.table(
        {
            "part": partition_of(keys, partitions),
            "key": keys,
            "node": np.repeat(nodes, signer.bands),
            "id": batch.column("id").take(rows),
            "score": _scores(batch, cfg).take(rows),
        },
        schema=BAND_SCHEMA,
    )
    return table, len(hashes)


def _scores(batch: pa.Table, cfg: MinHashConfig) -> pa.Array:
    if cfg.prefer_column is None:
        return pa.nulls(batch.num_rows, pa.float64())
    return batch.column(cfg.prefer_column).combine_chunks().cast(pa.float64())


@releases_freed_memory
def bucket_partition(group_of_shard: np.ndarray, groups: int, *parts: pa.Table) -> tuple:
    """Round 2, one band partition: equal keys become star edges (distinct pairs, with
    the bands each shares), one table per group of the edge's first document."""
    table = pa.concat_tables(parts)
    keys, nodes = table.column("key").to_numpy(), table.column("node").to_numpy()
    center, member = bucket_edges(keys, nodes)
    src, dst = nodes[center], nodes[member]
    first, shared = pair_totals(src, dst, np.ones(len(src), np.int64))
    center_rows = pa.array(center[first], pa.int64())
    member_rows = pa.array(member[first], pa.int64())
    edges = pa.table(
        {
            "src": src[first],
            "dst": dst[first],
            "src_id": table.column("id").take(center_rows),
            "dst_id": table.column("id").take(member_rows),
            "src_score": table.column("score").take(center_rows),
            "dst_score": table.column("score").take(member_rows),
            "bands": shared,
        },
        schema=CANDIDATE_SCHEMA,
    )
    route = group_of_shard[node_shard(src[first])]
    return {"candidates": edges.num_rows}, *split_rows(edges, route, groups)


def distinct_candidates(parts: Sequence[pa.Table]) -> pa.Table:
    """Candidate edges from every band partition: one row per pair, its bands summed."""
    table = pa.concat_tables(parts)
    src, dst = table.column("src").to_numpy(), table.column("dst").to_numpy()
    first, shared = pair_totals(src, dst, table.column("bands").to_numpy())
    picked = table.take(pa.array(first, pa.int64()))
    return picked.set_column(
        CANDIDATE_SCHEMA.get_field_index("bands"), "bands", pa.array(shared, pa.int64())
    )


@releases_freed_memory
def send_sets(
    inputs: StepInputs, group_of_shard: np.ndarray, groups: int, *parts: pa.Table
) -> tuple:
    """Round 3, one group: its edges (first document here), each with its first
    document's shingle set, one (edges, sets) pair per group of the second document.
    Sets are made one shard at a time and go straight into each destination's table."""
    edges = distinct_candidates(parts)
    route = group_of_shard[node_shard(edges.column("dst").to_numpy())]
    routed = split_rows(edges, route, groups)
    wanted = [np.unique(part.column("src").to_numpy()) for part in routed]
    chunks: list[list[pa.Table]] = [[] for _ in range(groups)]
    for nodes, sets in inputs.shingle_sets(edges.column("src").to_numpy()):
        for destination, needed in enumerate(wanted):
            here = needed[np.isin(needed, nodes)]
            if len(here):
                chunks[destination].append(_sets_table(here, sets))
    out = [
        (part, pa.concat_tables(tables) if tables else SETS_SCHEMA.empty_table())
        for part, tables in zip(routed, chunks, strict=True)
    ]
    return {"candidates": edges.num_rows, "sets_sent": sum(p[1].num_rows for p in out)}, *out


def _sets_table(nodes: np.ndarray, sets: dict[int, np.ndarray]) -> pa.Table:
    values = [sets[node] for node in nodes.tolist()]
    lengths = np.array([len(v) for v in values], dtype=np.int64)
    shingles = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32()),
        pa.array(np.concatenate(values) if values else np.zeros(0, np.uint64), pa.uint64()),
    )
    return pa.table({"node": pa.array(nodes, pa.int64()), "shingles": shingles}, schema=SETS_SCHEMA)


def _received_sets(tables: Sequence[pa.Table]) -> dict[int, np.ndarray]:
    """node -> shingle set, as zero-copy numpy views into the received Arrow buffers."""
    sets: dict[int, np.ndarray] = {}
    for table in tables:
        for nodes, shingles in zip(
            table.column("node").chunks, table.column("shingles").chunks, strict=True
        ):
            values = shingles.values.to_numpy()  # the chunk's child buffer, no copy
            offsets = shingles.offsets.to_numpy()
            for row, node in enumerate(nodes.to_numpy().tolist()):
                sets[node] = values[offsets[row] : offsets[row + 1]]
    return sets


@releases_freed_memory
def verify_group(inputs: StepInputs, *parts: tuple[pa.Table, pa.Table]) -> tuple:
    """Round 4, one group: exact Jaccard of every edge whose second document is here,
    one shard of second documents at a time; pairs below the threshold are dropped."""
    edges = pa.concat_tables([part[0] for part in parts])
    received = _received_sets([part[1] for part in parts])  # views of the inputs
    src, dst = edges.column("src").to_numpy(), edges.column("dst").to_numpy()
    similarity = np.zeros(len(src))
    for nodes, sets in inputs.shingle_sets(dst):
        rows = np.flatnonzero(np.isin(dst, nodes))
        similarity[rows] = pair_jaccard(src[rows], dst[rows], ChainMap(sets, received))
    keep = similarity >= inputs.cfg.threshold
    verified = _with_similarity(edges.filter(pa.array(keep)), similarity[keep])
    return {"candidates": edges.num_rows, "edges": verified.num_rows}, verified


@releases_freed_memory
def merge_group(inputs: StepInputs, *parts: pa.Table) -> tuple:
    """Rounds 3-4 without verification: the similarity each pair's shared bands
    estimate."""
    edges = distinct_candidates(parts)
    similarity = Signer(inputs.cfg).estimated_jaccard(edges.column("bands").to_numpy())
    return {"candidates": edges.num_rows, "edges": edges.num_rows}, _with_similarity(
        edges, similarity
    )


def _with_similarity(edges: pa.Table, similarity: np.ndarray) -> pa.Table:
    return edges.drop_columns(["bands"]).append_column(
        "similarity", pa.array(similarity, pa.float64())
    )


def driver_drops(edges: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Union-find on the driver (at most ``union_find_max_edges`` edges)."""
    src, dst = edges.column("src").to_numpy(), edges.column("dst").to_numpy()
    similarity = edges.column("similarity").to_numpy(zero_copy_only=False)
    nodes, components = union_find(src, dst)
    ends = np.concatenate([src, dst])
    ids = pa.concat_arrays(
        [edges.column("src_id").combine_chunks(), edges.column("dst_id").combine_chunks()]
    )
    scores = pa.concat_arrays(
        [edges.column("src_score").combine_chunks(), edges.column("dst_score").combine_chunks()]
    )
    first = np.unique(ends, return_index=True)[1]  # nodes are sorted, like np.unique
    node_ids = ids.take(pa.array(first, pa.int64())).to_pylist()
    node_scores = scores.take(pa.array(first, pa.int64())).to_numpy(zero_copy_only=False)
    score_values = None if np.isnan(node_scores).all() else node_scores
    best = node_similarity(src, dst, similarity, nodes)
    drops = cluster_drops(nodes, components, node_ids, score_values, best)
    sizes = np.unique(components, return_counts=True)[1]
    return drops, size_histogram(sizes)


def decide_near_duplicates(
    layout: RunLayout,
    shards: Sequence[Shard],
    earlier: list[GlobalStep],
    fingerprints: list[str],
    fingerprint: str,
    settings: MinHashConfig,
) -> None:
    """Sign -> bucket -> (send sets -> verify | merge) -> components -> per-shard
    drops, then ``_SUCCESS`` with the cluster-size histogram (the runner copies it into
    the ledger)."""

    _check_prefer_column(layout, shards, settings)
    if not shards:
        mark_decision_done(layout, STEP, fingerprint, {"shards_with_decisions": 0})
        return
    cpus = ray_exec.cluster_cpus()
    counts = document_counts(layout, shards)
    bands, _ = settings.band_layout()
    partitions = max(2, math.ceil(sum(counts) * bands / settings.partition_rows))
    inputs = ray_exec.put(StepInputs(layout, earlier, fingerprints, settings.with_band_layout()))
    sign_runs, _ = shard_runs(counts, shards, partitions)
    signed, bands_out = ray_exec.run_round(
        STEP, "sign", sign_group, [(inputs, run, partitions) for run in sign_runs], partitions
    )
    shingles = sum(entry["shingles"] for entry in signed)
    wanted = math.ceil(8 * shingles / settings.verify_partition_bytes)
    runs, group_of_shard = shard_runs(counts, shards, wanted)
    groups = len(runs)
    _, candidates = ray_exec.run_round(
        STEP,
        "bucket",
        bucket_partition,
        [(group_of_shard, groups, *received(bands_out, p)) for p in range(partitions)],
        groups,
    )
    per_group = [received(candidates, g) for g in range(groups)]
    if settings.verify_candidates:
        _, sent = ray_exec.run_round(
            STEP,
            "send sets",
            send_sets,
            [(inputs, group_of_shard, groups, *parts) for parts in per_group],
            groups,
        )
        final, edges = ray_exec.run_round(
            STEP,
            "verify",
            verify_group,
            [(inputs, *received(sent, g)) for g in range(groups)],
            1,
        )
    else:
        calls = [(inputs, *parts) for parts in per_group]
        final, edges = ray_exec.run_round(STEP, "merge", merge_group, calls, 1)
    edge_refs = received(edges, 0)
    edge_count = sum(entry["edges"] for entry in final)
    if edge_count <= settings.union_find_max_edges:
        tables = ray_exec.get(edge_refs)
        drops_table, histogram = driver_drops(
            pa.concat_tables(tables) if tables else EDGE_SCHEMA.empty_table()
        )
        written = _write_from_driver(drops_table, layout, fingerprint, write_decisions)
        path = "driver union-find"
    else:
        with ray_exec.shuffle_strategy(settings.shuffle):
            drops, histogram = components_and_drops(
                ray_exec.dataset_from_refs(edge_refs), partitions
            )
            written = (
                drops.groupby("shard", num_partitions=min(partitions, len(shards)))
                .map_groups(
                    write_decisions,
                    fn_kwargs={"layout": layout, "step": STEP, "fingerprint": fingerprint},
                    batch_format="pyarrow",
                )
                .take_all()
            )
        path = "distributed stars"
    report = {
        "cluster_sizes": merge_histograms([histogram]),
        "clusters": sum(histogram.values()),
        "dropped": sum(row["rows"] for row in written),
        "documents": sum(entry["documents"] for entry in signed),
        "candidates": sum(entry["candidates"] for entry in final),
        "edges": edge_count,
        "components": path,
        "partitions": partitions,
        "config_fingerprint": settings.fingerprint(),
    }
    # How the work was cut depends on the cluster's CPUs: kept out of the report (and
    # so of the ledger), which must be the same for any cluster.
    layout_used = {"cpus": cpus, "sign_tasks": len(sign_runs), "groups": groups}
    summary = {"shards_with_decisions": len(written), "report": report, "layout": layout_used}
    mark_decision_done(layout, STEP, fingerprint, summary)


def _write_from_driver(drops: pa.Table, layout, fingerprint: str, write) -> list[dict]:
    """The drops already met on the driver (the edge list did): write them per shard
    from here rather than shuffle them back out."""
    return [write(mine, layout, STEP, fingerprint).to_pylist()[0] for _, mine in by_shard(drops)]


def _check_prefer_column(layout: RunLayout, shards: Sequence[Shard], cfg: MinHashConfig) -> None:
    """A misspelt ``prefer_column`` fails before any work, naming the key."""
    if cfg.prefer_column is None or not shards:
        return
    path = layout.work_documents(shards[0].index)
    names = pq.read_schema(path, filesystem=layout.filesystem).names
    if cfg.prefer_column not in names:
        raise ValueError(
            f"stages.minhash_dedup.prefer_column: no column {cfg.prefer_column!r} in the "
            f"documents (they have: {', '.join(names)})"
        )


def apply_near_duplicates(
    documents: pa.Table, decision: pa.Table, settings: MinHashConfig
) -> tuple[pa.Table, pa.Table]:
    return split_by_drops(documents, decision, REASON_NEAR_DUPLICATE)


def minhash_step(settings: MinHashConfig) -> GlobalStep:
    """The ``minhash_dedup`` global step (registered in ``build_global_steps``)."""
    return GlobalStep(
        name=STEP,
        settings=settings,
        decision_schema=DROPS_SCHEMA,
        apply=apply_near_duplicates,
        decide=decide_near_duplicates,
    )
