"""Distributed connected components for ``minhash_dedup``: the path above
``union_find_max_edges``, where the edge list must not meet in one process.

Alternating large-star and small-star rounds (Kiveris et al., "Connected Components in
MapReduce and Beyond", SoCC 2014): each step is one Ray Data ``groupby`` on a partition
of a node, and each partition runs the step for all its nodes with numpy
(``stages/minhash_lsh.py``). The edge set converges to stars whose centers are the
component minima, which is exactly what driver union-find returns. A large-star step
also counts the nodes that still break the star shape; zero ends the loop.

Then two more groupbys name each document: by node (join the component to the id,
``prefer_column`` value and best similarity the edges carried) and by component (pick
the representative, emit the drops).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.duplicates import DROPS_SCHEMA
from stages.minhash_lsh import (
    cluster_drops,
    large_star,
    merge_histograms,
    partition_of,
    size_histogram,
    small_star,
)

MAX_ROUNDS = 100  # the rounds grow as log^2 of the component size: never reached
MAP_CPUS = 0.5

STAR_SCHEMA = pa.schema(
    [("part", pa.int32()), ("u", pa.int64()), ("v", pa.int64()), ("violations", pa.int64())]
)
NODE_SCHEMA = pa.schema(
    [
        ("part", pa.int32()),
        ("node", pa.int64()),
        ("comp", pa.int64()),
        ("id", pa.string()),
        ("score", pa.float64()),
        ("similarity", pa.float64()),
    ]
)


def _star_table(u: np.ndarray, v: np.ndarray, partitions: int, violations: int = 0) -> pa.Table:
    """Edge rows keyed by ``u``'s partition; a violation count rides on a marker row."""
    marker = np.array([-1] if violations else [], dtype=np.int64)
    return pa.table(
        {
            "part": np.concatenate([partition_of(u, partitions), [0] * len(marker)]).astype(
                np.int32
            ),
            "u": np.concatenate([u, marker]),
            "v": np.concatenate([v, marker]),
            "violations": np.array([0] * len(u) + [violations] * len(marker), dtype=np.int64),
        },
        schema=STAR_SCHEMA,
    )


def _edges_of(batch: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    real = batch.filter(pc.greater_equal(batch.column("u"), 0))
    return real.column("u").to_numpy(), real.column("v").to_numpy()


def both_directions(batch: pa.Table, partitions: int) -> pa.Table:
    """Large-star needs every neighbour of a node in its group."""
    u, v = _edges_of(batch)
    return _star_table(np.concatenate([u, v]), np.concatenate([v, u]), partitions)


def large_star_group(group: pa.Table, partitions: int) -> pa.Table:
    u, v = _edges_of(group)
    leaves, centers, violations = large_star(u, v)
    return _star_table(leaves, centers, partitions, violations)


def small_star_group(group: pa.Table, partitions: int) -> pa.Table:
    u, v = _edges_of(group)
    leaves, centers = small_star(u, v)
    return _star_table(leaves, centers, partitions)


def star_forest(edges, partitions: int):
    """(leaf, center) rows: every node of an edge but the component minima, each with
    its component's smallest node."""
    current = edges.map_batches(
        lambda b: pa.table({"u": b.column("dst"), "v": b.column("src")}),
        batch_format="pyarrow",
        num_cpus=MAP_CPUS,
    )
    for _ in range(MAX_ROUNDS):
        large = (
            current.map_batches(
                both_directions,
                fn_kwargs={"partitions": partitions},
                batch_format="pyarrow",
                num_cpus=MAP_CPUS,
            )
            .groupby("part", num_partitions=partitions)
            .map_groups(
                large_star_group, fn_kwargs={"partitions": partitions}, batch_format="pyarrow"
            )
            .materialize()
        )
        if not (large.sum("violations") or 0):
            return large
        # Consumed once, by the next large-star step: no need to materialise it.
        current = large.groupby("part", num_partitions=partitions).map_groups(
            small_star_group, fn_kwargs={"partitions": partitions}, batch_format="pyarrow"
        )
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def _node_rows(edges: pa.Table, partitions: int) -> pa.Table:
    """Each edge tells both its documents their id, score and one similarity."""
    nodes = np.concatenate([edges.column("src").to_numpy(), edges.column("dst").to_numpy()])
    n = len(nodes)
    return pa.table(
        {
            "part": partition_of(nodes, partitions),
            "node": nodes,
            "comp": pa.nulls(n, pa.int64()),
            "id": pa.concat_arrays(
                [edges.column(c).combine_chunks() for c in ("src_id", "dst_id")]
            ),
            "score": pa.concat_arrays(
                [edges.column(c).combine_chunks() for c in ("src_score", "dst_score")]
            ),
            "similarity": pa.concat_arrays([edges.column("similarity").combine_chunks()] * 2),
        },
        schema=NODE_SCHEMA,
    )


def _component_rows(stars: pa.Table, partitions: int) -> pa.Table:
    leaves, centers = _edges_of(stars)
    n = len(leaves)
    columns = {name: pa.nulls(n, NODE_SCHEMA.field(name).type) for name in NODE_SCHEMA.names}
    columns |= {"part": partition_of(leaves, partitions), "node": leaves, "comp": centers}
    return pa.table(columns, schema=NODE_SCHEMA)


def node_group(group: pa.Table, partitions: int) -> pa.Table:
    """All rows of some nodes: one row per node with its component (a node that is no
    leaf is a center: its own component), id, score and best similarity, keyed by the
    component's partition."""
    table = group.sort_by([("node", "ascending")])
    nodes = table.column("node").to_numpy()
    first = np.ones(len(nodes), dtype=bool)
    first[1:] = nodes[1:] != nodes[:-1]
    index = np.cumsum(first) - 1
    unique = nodes[first]
    comp = unique.copy()
    has_comp = pc.is_valid(table.column("comp")).to_numpy(zero_copy_only=False)
    comp_values = pc.fill_null(table.column("comp"), -1).to_numpy()
    comp[index[has_comp]] = comp_values[has_comp]
    similarity = np.full(len(unique), -np.inf)
    values = table.column("similarity").to_numpy(zero_copy_only=False)
    has_value = ~np.isnan(values)
    np.maximum.at(similarity, index[has_value], values[has_value])
    attributes = table.filter(pc.is_valid(table.column("id")))
    attr_nodes = attributes.column("node").to_numpy()
    attr_first = np.unique(attr_nodes, return_index=True)[1]
    picked = attributes.take(pa.array(attr_first, pa.int64()))
    return pa.table(
        {
            "part": partition_of(comp, partitions),
            "node": unique,
            "comp": comp,
            "id": picked.column("id"),
            "score": picked.column("score"),
            "similarity": similarity,
        },
        schema=NODE_SCHEMA,
    )


def cluster_group(group: pa.Table) -> pa.Table:
    """Whole components: their drops, and each component's size on its first drop row
    (for the histogram)."""
    nodes = group.column("node").to_numpy()
    comps = group.column("comp").to_numpy()
    scores = group.column("score").to_numpy(zero_copy_only=False)
    drops = cluster_drops(
        nodes,
        comps,
        group.column("id").to_pylist(),
        None if np.isnan(scores).all() else scores,
        group.column("similarity").to_numpy(),
    )
    ids, sizes = np.unique(comps, return_counts=True)
    size_of = dict(zip(ids.tolist(), sizes.tolist(), strict=True))
    cluster_ids = drops.column("cluster_id").to_pylist()
    id_to_comp = dict(zip(group.column("id").to_pylist(), comps.tolist(), strict=True))
    seen: set[str] = set()
    marks = []
    for cluster in cluster_ids:
        marks.append(0 if cluster in seen else size_of[id_to_comp[cluster]])
        seen.add(cluster)
    return drops.append_column("cluster_size", pa.array(marks, pa.int64()))


def _histogram_rows(batch: pa.Table) -> pa.Table:
    sizes = batch.column("cluster_size").to_numpy()
    histogram = size_histogram(sizes[sizes > 0])
    return pa.table(
        {
            "label": pa.array(list(histogram), pa.string()),
            "clusters": pa.array(list(histogram.values()), pa.int64()),
        }
    )


def components_and_drops(edges, partitions: int):
    """(drops dataset in DROPS_SCHEMA, cluster-size histogram), never on the driver."""
    stars = star_forest(edges, partitions)
    nodes = edges.map_batches(
        _node_rows,
        fn_kwargs={"partitions": partitions},
        batch_format="pyarrow",
        num_cpus=MAP_CPUS,
    ).union(
        stars.map_batches(
            _component_rows,
            fn_kwargs={"partitions": partitions},
            batch_format="pyarrow",
            num_cpus=MAP_CPUS,
        )
    )
    drops = (
        nodes.groupby("part", num_partitions=partitions)
        .map_groups(node_group, fn_kwargs={"partitions": partitions}, batch_format="pyarrow")
        .groupby("part", num_partitions=partitions)
        .map_groups(cluster_group, batch_format="pyarrow")
        .materialize()
    )
    rows = drops.map_batches(_histogram_rows, batch_format="pyarrow").take_all()
    histogram = merge_histograms([{row["label"]: row["clusters"]} for row in rows])
    return drops.select_columns(DROPS_SCHEMA.names), histogram
