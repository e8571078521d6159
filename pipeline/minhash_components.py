"""Connected components for ``minhash_dedup``: the edges become clusters and drops.

Up to ``union_find_max_edges`` edges they meet in the driver for union-find. Above
it, where the edge list must not meet in one process, alternating large-star and
small-star rounds (Kiveris et al., "Connected Components in MapReduce and Beyond",
SoCC 2014) run as task rounds of the driver (``pipeline/round_driver.py``), each task
one partition of the nodes, with numpy (``stages/minhash_lsh.py``). The edge set
converges to stars whose centers are the component minima, which is exactly what
union-find returns. A large-star round also counts the nodes that still break the
star shape; zero ends the loop. Two more rounds name each document: by node (join the
component to the id, ``prefer_column`` value and best similarity the edges carried)
and by component (pick the representative, emit the drops).

Either way each cluster's size rides on its first drop row (``cluster_size``), so the
write can report the histogram without another exchange.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.round_driver import StepRun
from pipeline.round_step import Exchange, Plan, StepInputs, to_partition, to_shard_run
from stages.minhash_lsh import (
    cluster_drops,
    large_star,
    node_similarity,
    small_star,
    union_find,
)

MAX_ROUNDS = 100  # the rounds grow as log^2 of the component size: never reached

STAR_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64())])
NODE_SCHEMA = pa.schema(
    [
        ("node", pa.int64()),
        ("id", pa.string()),
        ("score", pa.float64()),
        ("similarity", pa.float64()),
    ]
)
COMPONENT_SCHEMA = pa.schema([*NODE_SCHEMA, ("comp", pa.int64())])


def components(run: StepRun, edges: Exchange) -> Exchange:
    """The MinHash step's ``finish``: the verified edges (keyed by their second
    document) to drops routed by shard, on the driver or in star rounds."""
    final = run.stats.get("verify") or run.stats.get("merge") or []
    if sum(entry["edges"] for entry in final) <= run.inputs.settings.union_find_max_edges:
        return run.scatter(driver_drops(run.gather(edges)), to_shard_run("shard"))
    stars = run.round("star edges", both_directions, [edges], to_partition("u"))
    for _ in range(MAX_ROUNDS):
        stars = run.round("large star", large_star_round, [stars], to_partition("u"))
        if not sum(entry["violations"] for entry in run.stats["large star"]):
            break
        stars = run.round("small star", small_star_round, [stars], to_partition("u"))
    else:
        raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
    nodes = run.round("node rows", node_rows, [edges], to_partition("node"))
    named = run.round("nodes", node_components, [nodes, stars], to_partition("comp"))
    return run.round("clusters", cluster_round, [named], to_shard_run("shard"))


def driver_drops(edges: pa.Table) -> pa.Table:
    """Union-find in this process (at most ``union_find_max_edges`` edges): the drops,
    each cluster's size on its first row."""
    src, dst = edges.column("src").to_numpy(), edges.column("dst").to_numpy()
    similarity = edges.column("similarity").to_numpy(zero_copy_only=False)
    nodes, comps = union_find(src, dst)
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
    best = node_similarity(src, dst, similarity, nodes)
    return clusters(nodes, comps, node_ids, node_scores, best)


def clusters(
    nodes: np.ndarray, comps: np.ndarray, ids: list[str], scores: np.ndarray, best: np.ndarray
) -> pa.Table:
    """Whole components in: their drops (``DROPS_SCHEMA``), and each component's size
    on its first drop row (``cluster_size``, 0 on the others)."""
    drops = cluster_drops(nodes, comps, ids, None if np.isnan(scores).all() else scores, best)
    sizes = dict(zip(*[a.tolist() for a in np.unique(comps, return_counts=True)], strict=True))
    comp_of_id = dict(zip(ids, comps.tolist(), strict=True))
    seen: set[str] = set()
    marks = []
    for cluster in drops.column("cluster_id").to_pylist():
        marks.append(0 if cluster in seen else sizes[comp_of_id[cluster]])
        seen.add(cluster)
    return drops.append_column("cluster_size", pa.array(marks, pa.int64()))


def _star_table(u: np.ndarray, v: np.ndarray) -> pa.Table:
    return pa.table({"u": u, "v": v}, schema=STAR_SCHEMA)


def both_directions(inputs: StepInputs, plan: Plan, edges: pa.Table) -> tuple[dict, pa.Table]:
    """Large-star needs every neighbour of a node in its partition."""
    src, dst = edges.column("src").to_numpy(), edges.column("dst").to_numpy()
    return {"edges": len(src)}, _star_table(np.concatenate([dst, src]), np.concatenate([src, dst]))


def large_star_round(inputs: StepInputs, plan: Plan, stars: pa.Table) -> tuple[dict, pa.Table]:
    """One large-star step for a partition's nodes: (leaf, center) rows, keyed by the
    leaf for the small-star step, and the nodes still breaking the star shape."""
    leaves, centers, violations = large_star(
        stars.column("u").to_numpy(), stars.column("v").to_numpy()
    )
    return {"violations": violations}, _star_table(leaves, centers)


def small_star_round(inputs: StepInputs, plan: Plan, stars: pa.Table) -> tuple[dict, pa.Table]:
    """One small-star step; its edges leave in both directions, for the next large
    star."""
    leaves, centers = small_star(stars.column("u").to_numpy(), stars.column("v").to_numpy())
    u, v = np.concatenate([leaves, centers]), np.concatenate([centers, leaves])
    return {"edges": len(leaves)}, _star_table(u, v)


def node_rows(inputs: StepInputs, plan: Plan, edges: pa.Table) -> tuple[dict, pa.Table]:
    """Each edge tells both its documents their id, score and one similarity."""
    table = pa.table(
        {
            "node": np.concatenate([edges.column(c).to_numpy() for c in ("src", "dst")]),
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
    return {"rows": table.num_rows}, table


def node_components(
    inputs: StepInputs, plan: Plan, nodes: pa.Table, stars: pa.Table
) -> tuple[dict, pa.Table]:
    """All rows of a partition's nodes and the star edges of its leaves: one row per
    node with its component (a node that is no leaf is a center: its own component),
    id, score and best similarity, keyed by the component."""
    table = nodes.sort_by([("node", "ascending")])
    node = table.column("node").to_numpy()
    first = np.ones(len(node), dtype=bool)
    first[1:] = node[1:] != node[:-1]
    index = np.cumsum(first) - 1
    unique = node[first]
    comp = unique.copy()
    leaves, centers = stars.column("u").to_numpy(), stars.column("v").to_numpy()
    comp[np.searchsorted(unique, leaves)] = centers
    similarity = np.full(len(unique), -np.inf)
    values = table.column("similarity").to_numpy(zero_copy_only=False)
    has_value = ~np.isnan(values)
    np.maximum.at(similarity, index[has_value], values[has_value])
    picked = table.filter(pa.array(first))
    named = pa.table(
        {
            "node": unique,
            "id": picked.column("id"),
            "score": picked.column("score"),
            "similarity": similarity,
            "comp": comp,
        },
        schema=COMPONENT_SCHEMA,
    )
    return {"nodes": named.num_rows}, named


def cluster_round(inputs: StepInputs, plan: Plan, named: pa.Table) -> tuple[dict, pa.Table]:
    """Whole components: their drops, each cluster's size on its first drop row."""
    drops = clusters(
        named.column("node").to_numpy(),
        named.column("comp").to_numpy(),
        named.column("id").to_pylist(),
        pc.fill_null(named.column("score"), np.nan).to_numpy(zero_copy_only=False),
        named.column("similarity").to_numpy(),
    )
    return {"dropped": drops.num_rows}, drops
