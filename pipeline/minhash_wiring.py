"""Ray wiring of the ``minhash_dedup`` global step (the pure halves are
``stages/minhash.py`` and ``stages/minhash_lsh.py``).

No step holds all documents or all signatures in one process:

1. **Bands** (map over ``surviving`` documents, one shard per batch): shingles,
   signatures and band keys; one row per (document, band) with the node, id and
   ``prefer_column`` value. Texts never leave their shard's task.
2. **Buckets** (``groupby`` on a partition of the band key, Ray Data hash shuffle): each
   partition finds its equal keys with numpy and emits star edges.
3. **Edges** (``groupby`` on a partition of the edge's first node): duplicate edges from
   several bands are merged; with ``verify_candidates`` the shingle sets of the
   candidate documents are fetched per shard (``groupby("shard")``: each task re-reads
   its shards' texts and shingles only the candidates) and joined in, and pairs below
   the threshold are dropped. The verification's partition count comes from the
   candidates' shingle counts (``verify_partition_bytes`` of sets per partition), so a
   worker's share stays the same size however many candidates the corpus has.
4. **Components**: up to ``union_find_max_edges`` edges meet on the driver for
   union-find; above it, alternating large/small-star rounds run as groupbys
   (``pipeline/minhash_components.py``).
5. **Drops**: per cluster, the representative rule; per shard, ``write_decisions``.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.curate import GlobalStep, RunLayout, apply_steps
from pipeline.minhash_components import components_and_drops
from pipeline.shards import Shard, read_json
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
    node_similarity,
    pair_jaccard,
    pair_occurrences,
    partition_of,
    size_histogram,
    union_find,
)

STEP = "minhash_dedup"
MAP_CPUS = 0.5  # leave the readers of a small machine a share (DEPENDENCIES.md)

BAND_SCHEMA = pa.schema(
    [
        ("part", pa.int32()),
        ("key", pa.int64()),
        ("node", pa.int64()),
        ("id", pa.string()),
        ("score", pa.float64()),
        ("shingles", pa.int32()),  # the document's shingle count: sizes verification
    ]
)
EDGE_SCHEMA = pa.schema(
    [
        ("part", pa.int32()),
        ("src", pa.int64()),
        ("dst", pa.int64()),
        ("src_id", pa.string()),
        ("dst_id", pa.string()),
        ("src_score", pa.float64()),
        ("dst_score", pa.float64()),
        ("similarity", pa.float64()),
        ("pair_shingles", pa.int64()),  # shingles of both documents
        ("node", pa.int64()),
        ("shingles", pa.list_(pa.uint64())),
    ]
)
REQUEST_SCHEMA = pa.schema([("shard", pa.int32()), ("node", pa.int64()), ("part", pa.int32())])


def partition_count(layout: RunLayout, shards: Sequence[Shard], cfg: MinHashConfig) -> int:
    """Shuffle partitions for this corpus: grows with the pass-1 document count (from
    the shards' stats, no data read) so each partition keeps about ``partition_rows``."""
    documents = 0
    for shard in shards:
        stats = read_json(layout.filesystem, layout.work_stats(shard.index)) or {}
        documents += stats.get("documents", {}).get("rows", 0)
    bands, _ = cfg.band_layout()
    return max(2, math.ceil(documents * bands / cfg.partition_rows))


def releases_arrow_memory(task: Callable[..., pa.Table]) -> Callable[..., pa.Table]:
    """Hand the memory Arrow's pool freed during ``task`` back to the OS when it ends.

    Workers live for the whole run; jemalloc (Arrow's default pool) keeps freed pages
    for reuse, so without this a worker's private memory creeps up with the number of
    tasks it ran (measured: +70-100 MiB per worker from 4x to 16x in bench/dedup.py),
    not with the size of any one task."""

    @functools.wraps(task)
    def run(*args, **kwargs) -> pa.Table:
        try:
            return task(*args, **kwargs)
        finally:
            pa.default_memory_pool().release_unused()

    return run


@releases_arrow_memory
def band_rows(batch: pa.Table, cfg: MinHashConfig, partitions: int) -> pa.Table:
    """Documents in, one row per (document, band) out; documents without shingles
    (empty texts) cannot be anybody's near duplicate and are left out."""
    signer = Signer(cfg)
    hashes, offsets = shingle_hashes(batch.column("text").to_pylist(), cfg)
    live = np.flatnonzero(np.diff(offsets) > 0)
    keys = signer.band_keys(signer.signatures(hashes, offsets))[live].reshape(-1)
    nodes = node_keys(batch.column("shard"), batch.column("ordinal"))[live]
    rows = np.repeat(live, signer.bands)
    score = _scores(batch, cfg).take(pa.array(rows, pa.int64()))
    return pa.table(
        {
            "part": partition_of(keys, partitions),
            "key": keys,
            "node": np.repeat(nodes, signer.bands),
            "id": batch.column("id").take(pa.array(rows, pa.int64())),
            "score": score,
            "shingles": np.diff(offsets)[rows].astype(np.int32),
        },
        schema=BAND_SCHEMA,
    )


def _scores(batch: pa.Table, cfg: MinHashConfig) -> pa.Array:
    if cfg.prefer_column is None:
        return pa.nulls(batch.num_rows, pa.float64())
    return batch.column(cfg.prefer_column).combine_chunks().cast(pa.float64())


@releases_arrow_memory
def bucket_group(group: pa.Table, partitions: int) -> pa.Table:
    """One partition of band rows: equal keys become star edges, partitioned by the
    edge's first node for the next step."""
    keys = group.column("key").to_numpy()
    nodes = group.column("node").to_numpy()
    center, member = bucket_edges(keys, nodes)
    center_rows, member_rows = pa.array(center, pa.int64()), pa.array(member, pa.int64())
    src = nodes[center]
    n = len(center)
    shingles = group.column("shingles").to_numpy().astype(np.int64)
    return pa.table(
        {
            "part": partition_of(src, partitions),
            "src": src,
            "dst": nodes[member],
            "src_id": group.column("id").take(center_rows),
            "dst_id": group.column("id").take(member_rows),
            "src_score": group.column("score").take(center_rows),
            "dst_score": group.column("score").take(member_rows),
            "similarity": pa.nulls(n, pa.float64()),
            "pair_shingles": shingles[center] + shingles[member],
            "node": pa.nulls(n, pa.int64()),
            "shingles": pa.nulls(n, pa.list_(pa.uint64())),
        },
        schema=EDGE_SCHEMA,
    )


def verify_partition_count(candidates, cfg: MinHashConfig) -> int:
    """Partitions for verification: every candidate edge brings the shingle sets of its
    two documents (8 bytes a shingle) to its partition; ``verify_partition_bytes`` each."""
    shingles = candidates.sum("pair_shingles") or 0
    return max(2, math.ceil(8 * shingles / cfg.verify_partition_bytes))


def with_partition(batch: pa.Table, partitions: int) -> pa.Table:
    """Edges keyed again by their first node, over the verification partitions."""
    index = EDGE_SCHEMA.get_field_index("part")
    return batch.set_column(
        index, "part", pa.array(partition_of(batch.column("src").to_numpy(), partitions))
    )


def shingle_requests(batch: pa.Table) -> pa.Table:
    """Each candidate edge asks the shards of both its documents for their shingles,
    delivered to the edge's partition."""
    nodes = np.concatenate([batch.column("src").to_numpy(), batch.column("dst").to_numpy()])
    parts = np.concatenate([batch.column("part").to_numpy()] * 2)
    return pa.table(
        {"shard": (nodes >> 32).astype(np.int32), "node": nodes, "part": parts},
        schema=REQUEST_SCHEMA,
    )


@releases_arrow_memory
def serve_shingles(group: pa.Table, context: dict) -> pa.Table:
    """One shard's requests: re-read its surviving texts once, answer each distinct
    (document, partition) with the document's shingle set."""
    shard = group.column("shard")[0].as_py()
    cfg: MinHashConfig = context["cfg"]
    documents = apply_steps(
        context["layout"],
        shard,
        context["earlier"],
        context["fingerprints"],
        ["id", "ordinal", "text"],
    )[0]
    wanted = np.unique(
        np.stack([group.column("node").to_numpy(), group.column("part").to_numpy()], axis=1),
        axis=0,
    )
    ordinals = documents.column("ordinal").to_numpy()
    position = {int(o): i for i, o in enumerate(ordinals)}
    needed = sorted({int(node) & 0xFFFFFFFF for node in wanted[:, 0]})
    texts = documents.column("text").take(pa.array([position[o] for o in needed])).to_pylist()
    hashes, offsets = shingle_hashes(texts, cfg)
    sets = {o: shingle_set(hashes[offsets[i] : offsets[i + 1]]) for i, o in enumerate(needed)}
    values = [sets[int(node) & 0xFFFFFFFF] for node in wanted[:, 0]]
    lengths = np.array([len(v) for v in values], dtype=np.int32)
    shingles = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)),
        pa.array(np.concatenate(values) if values else np.zeros(0, np.uint64), pa.uint64()),
    )
    n = len(wanted)
    columns = {name: pa.nulls(n, EDGE_SCHEMA.field(name).type) for name in EDGE_SCHEMA.names}
    columns |= {"part": wanted[:, 1].astype(np.int32), "node": wanted[:, 0], "shingles": shingles}
    return pa.table(columns, schema=EDGE_SCHEMA)


@releases_arrow_memory
def edge_group(group: pa.Table, cfg: MinHashConfig) -> pa.Table:
    """One partition of candidate edges (and, when verifying, the shingle sets of their
    documents): distinct edges with their similarity, below-threshold pairs removed."""
    is_set = group.column("node").is_valid().to_numpy(zero_copy_only=False)
    edges = group.filter(pa.array(~is_set)).drop_columns(["shingles"])  # no sets: small
    src, dst = edges.column("src").to_numpy(), edges.column("dst").to_numpy()
    first, counts = pair_occurrences(src, dst)
    if cfg.verify_candidates:
        sets = _shingle_sets(group)
        similarity = pair_jaccard(src[first], dst[first], sets)
        keep = similarity >= cfg.threshold
        first, similarity = first[keep], similarity[keep]
    else:
        similarity = Signer(cfg).estimated_jaccard(counts)
    picked = edges.take(pa.array(first, pa.int64()))
    index = picked.schema.get_field_index("similarity")
    picked = picked.set_column(index, "similarity", pa.array(similarity, pa.float64()))
    return picked.append_column(
        "shingles", pa.nulls(picked.num_rows, EDGE_SCHEMA.field("shingles").type)
    )


def _shingle_sets(group: pa.Table) -> dict[int, np.ndarray]:
    """node -> shingle set for the set rows of a partition, as zero-copy numpy views
    into the Arrow buffers the partition already holds (the sets are most of a
    partition's bytes: no copy of them is made)."""
    sets: dict[int, np.ndarray] = {}
    for nodes, shingles in zip(
        group.column("node").chunks, group.column("shingles").chunks, strict=True
    ):
        rows = np.flatnonzero(nodes.is_valid().to_numpy(zero_copy_only=False))
        if len(rows) == 0:
            continue
        values = shingles.values.to_numpy()  # the chunk's whole child buffer, no copy
        offsets = shingles.offsets.to_numpy()
        node_values = pc.fill_null(nodes, -1).to_numpy()  # int64 kept (no NaN)
        for row in rows.tolist():
            sets[int(node_values[row])] = values[offsets[row] : offsets[row + 1]]
    return sets


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


@contextlib.contextmanager
def shuffle_strategy(name: str) -> Iterator[None]:
    """Run this step's groupbys with the configured shuffle, then restore the default
    for the steps after it."""
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    context = DataContext.get_current()
    previous = context.shuffle_strategy
    context.shuffle_strategy = (
        ShuffleStrategy.SORT_SHUFFLE_PULL_BASED if name == "sort" else ShuffleStrategy.HASH_SHUFFLE
    )
    try:
        yield
    finally:
        context.shuffle_strategy = previous


@contextlib.contextmanager
def block_bytes(limit: int) -> Iterator[None]:
    """Cap Ray Data's output blocks at ``limit`` during this step (default 128 MiB): a
    task that serves the shingle sets of many shards buffers its output up to a block
    before handing it to the object store, so the cap bounds that task's private
    memory with the verification partitions."""
    from ray.data import DataContext

    context = DataContext.get_current()
    previous = context.target_max_block_size
    if previous is not None:  # never below 8 MiB: tiny blocks only add overhead
        context.target_max_block_size = min(previous, max(limit, 8 << 20))
    try:
        yield
    finally:
        context.target_max_block_size = previous


def decide_near_duplicates(
    layout: RunLayout,
    shards: Sequence[Shard],
    earlier: list[GlobalStep],
    fingerprints: list[str],
    fingerprint: str,
    settings: MinHashConfig,
) -> None:
    """Bands -> buckets -> edges -> components -> per-shard drops, then ``_SUCCESS``
    with the cluster-size histogram (the runner copies it into the ledger)."""
    with shuffle_strategy(settings.shuffle), block_bytes(settings.verify_partition_bytes):
        _decide(layout, shards, earlier, fingerprints, fingerprint, settings)


def _decide(layout, shards, earlier, fingerprints, fingerprint, settings) -> None:
    # global_steps imports this module to register the step: import it back lazily.
    from pipeline.global_steps import mark_decision_done, write_decisions

    _check_prefer_column(layout, shards, settings)
    partitions = partition_count(layout, shards, settings)
    shipped = settings.with_band_layout()  # workers need not search for the layout
    edges, verify_partitions = _edges(layout, shards, earlier, fingerprints, shipped, partitions)
    edge_count = edges.count()
    if edge_count <= settings.union_find_max_edges:
        drops_table, histogram = driver_drops(_collect(edges))
        written = _write_from_driver(drops_table, layout, fingerprint, write_decisions)
        path = "driver union-find"
    else:
        drops, histogram = components_and_drops(edges, partitions)
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
        "edges": edge_count,
        "components": path,
        "partitions": partitions,
        "verify_partitions": verify_partitions,
        "config_fingerprint": settings.fingerprint(),
    }
    summary = {"shards_with_decisions": len(written), "report": report}
    mark_decision_done(layout, STEP, fingerprint, summary)


def _edges(layout, shards, earlier, fingerprints, settings: MinHashConfig, partitions: int):
    """Bands -> buckets -> (verified) distinct edges, materialised: the smaller data
    that the component step reads twice (count, then collect or star rounds); and the
    verification's partition count (None without verification)."""
    from pipeline.global_steps import surviving

    columns = ["id", "shard", "ordinal", "text"]
    if settings.prefer_column is not None:
        columns.append(settings.prefer_column)
    documents = surviving(layout, shards, earlier, fingerprints, columns)
    bands = documents.map_batches(
        band_rows,
        fn_kwargs={"cfg": settings, "partitions": partitions},
        batch_format="pyarrow",
        num_cpus=MAP_CPUS,
    )
    candidates = (
        bands.groupby("part", num_partitions=partitions)
        .map_groups(bucket_group, fn_kwargs={"partitions": partitions}, batch_format="pyarrow")
        .materialize()
    )
    verify_partitions = None
    if settings.verify_candidates:
        partitions = verify_partitions = verify_partition_count(candidates, settings)
        candidates = candidates.map_batches(
            with_partition,
            fn_kwargs={"partitions": partitions},
            batch_format="pyarrow",
            num_cpus=MAP_CPUS,
        ).materialize()
        context = {
            "cfg": settings,
            "layout": layout,
            "earlier": earlier,
            "fingerprints": fingerprints,
        }
        sets = (
            candidates.map_batches(shingle_requests, batch_format="pyarrow", num_cpus=MAP_CPUS)
            .groupby("shard", num_partitions=min(partitions, len(shards)))
            .map_groups(serve_shingles, fn_kwargs={"context": context}, batch_format="pyarrow")
        )
        candidates = candidates.union(sets)
    edges = (
        candidates.groupby("part", num_partitions=partitions)
        .map_groups(edge_group, fn_kwargs={"cfg": settings}, batch_format="pyarrow")
        .materialize()
    )
    return edges, verify_partitions


def _write_from_driver(drops: pa.Table, layout, fingerprint: str, write) -> list[dict]:
    """The drops already met on the driver (the edge list did): write them per shard
    from here rather than shuffle them back out."""
    drops = drops.sort_by([("shard", "ascending"), ("ordinal", "ascending")])
    shards = drops.column("shard").to_numpy()
    starts = np.flatnonzero(np.concatenate([[True], shards[1:] != shards[:-1]]))
    ends = np.append(starts[1:], len(shards))
    return [
        write(drops.slice(start, end - start), layout, STEP, fingerprint).to_pylist()[0]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True)
        if end > start
    ]


def _collect(dataset) -> pa.Table:
    tables = list(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
    return pa.concat_tables(tables) if tables else EDGE_SCHEMA.empty_table()


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
