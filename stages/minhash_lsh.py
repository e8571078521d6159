"""MinHash near-duplicate detection, the global half: buckets to edges, verification,
connected components and the document each cluster keeps.

Every function works on one group of rows with numpy (a shuffle partition in the Ray
path, the whole corpus in ``find_near_duplicates_in_memory``), so the distributed and
the in-memory results are the same by construction, and tests can prove it.

Documents are named by a *node*: ``shard << 32 | ordinal`` (int64). Node order is input
order, which is what makes every choice below independent of worker count and of the
order rows arrive in:

* a band bucket becomes a star of edges from its smallest node to each other member;
* a component is named by its smallest node (its ``cluster_id`` is that document's id);
* the representative (the kept document) is the member with the highest
  ``prefer_column`` value if one is configured, then the smallest node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.duplicates import DROPS_SCHEMA
from stages.minhash import MinHashConfig, Signer, fmix64, jaccard, shingle_hashes, shingle_set

ORDINAL_BITS = 32
_ORDINAL_MASK = (1 << ORDINAL_BITS) - 1

# Cluster sizes above this are pooled into power-of-two bins in the ledger histogram.
HISTOGRAM_EXACT_SIZES = 8


def node_keys(shard: Sequence[int] | np.ndarray, ordinal: Sequence[int] | np.ndarray):
    """int64 node per document: input order, and unique across the run."""
    shard = np.asarray(shard, dtype=np.int64)
    ordinal = np.asarray(ordinal, dtype=np.int64)
    if len(ordinal) and (ordinal.max() > _ORDINAL_MASK or ordinal.min() < 0):
        raise ValueError("ordinal outside 0..2^32-1: a shard holds too many documents")
    return (shard << ORDINAL_BITS) | ordinal


def node_shard(nodes: np.ndarray) -> np.ndarray:
    return (np.asarray(nodes, dtype=np.int64) >> ORDINAL_BITS).astype(np.int32)


def node_ordinal(nodes: np.ndarray) -> np.ndarray:
    return np.asarray(nodes, dtype=np.int64) & _ORDINAL_MASK


def partition_of(values: np.ndarray, partitions: int) -> np.ndarray:
    """Shuffle partition of int64 keys (mixed first: nodes and keys are not uniform)."""
    mixed = fmix64(np.asarray(values, dtype=np.int64).view(np.uint64))
    return (mixed % np.uint64(partitions)).astype(np.int32)


def bucket_edges(keys: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (band key, node) of whole buckets in; star edges out, as row indices
    (center, member): each bucket's smallest node is linked to every other member.

    A bucket of k documents gives k - 1 edges, not k(k-1)/2; the other bands and the
    transitive closure of clusters recover what a star leaves out."""
    order = np.lexsort((nodes, keys))
    sorted_keys = keys[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    center = order[first][np.cumsum(first) - 1]
    return center[~first], order[~first]


def unique_pairs(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (src, dst) pairs, sorted, with how many times each was seen."""
    first, counts = pair_occurrences(src, dst)
    return src[first], dst[first], counts


def pair_occurrences(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each distinct (src, dst) pair in sorted order: the index of its first
    occurrence and its count."""
    if len(src) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    _, first, counts = np.unique(
        np.stack([src, dst], axis=1), axis=0, return_index=True, return_counts=True
    )
    return first.astype(np.int64), counts.astype(np.int64)


def pair_totals(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each distinct (src, dst) pair, sorted: the index of its first occurrence and
    the sum of its weights (partial counts from several partitions add up)."""
    if len(src) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    order = np.lexsort((dst, src))  # stable: equal pairs keep their input order
    ordered_src, ordered_dst = src[order], dst[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (ordered_src[1:] != ordered_src[:-1]) | (ordered_dst[1:] != ordered_dst[:-1])
    starts = np.flatnonzero(first)
    totals = np.add.reduceat(np.asarray(weights, dtype=np.int64)[order], starts)
    return order[starts].astype(np.int64), totals


def pair_jaccard(src: np.ndarray, dst: np.ndarray, sets: Mapping[int, np.ndarray]) -> np.ndarray:
    """Exact Jaccard of each pair's shingle sets (the verification of a candidate)."""
    return np.array(
        [jaccard(sets[a], sets[b]) for a, b in zip(src.tolist(), dst.tolist(), strict=True)],
        dtype=np.float64,
    )


def union_find(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, component): every node on an edge and the smallest node of its component.

    Nodes are compacted to 0..n-1 (sorted, so a smaller index is a smaller node) and the
    root of a union is always the smaller index, so the root is the component minimum."""
    nodes, index = np.unique(np.concatenate([src, dst]), return_inverse=True)
    parent = list(range(len(nodes)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    half = len(src)
    for a, b in zip(index[:half].tolist(), index[half:].tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(x) for x in range(len(nodes))], dtype=np.int64)
    return nodes, nodes[roots] if len(nodes) else nodes


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One large-star step (Kiveris et al. 2014) on all edges of a group of nodes ``u``
    (both directions present): each neighbour ``v > u`` is linked to the smallest node
    of ``u``'s neighbourhood. Also counts the nodes that break the star-forest shape
    (a node with a smaller neighbour and more than one neighbour): zero means done."""
    if len(u) == 0:
        return u, v, 0
    u, v, _ = unique_pairs(u, v)  # sorted by u, then v: v[first of each u] is its min
    first = np.ones(len(u), dtype=bool)
    first[1:] = u[1:] != u[:-1]
    group = np.cumsum(first) - 1
    smallest = np.minimum(u[first], v[first])[group]
    degree = np.bincount(group)
    has_smaller = v[first] < u[first]
    violations = int(np.count_nonzero(has_smaller & (degree > 1)))
    out = v > u
    return v[out], smallest[out], violations


def small_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One small-star step on edges oriented (larger ``u``, smaller ``v``): ``u`` and
    its smaller neighbours are all linked to the smallest of them."""
    if len(u) == 0:
        return u, v
    u, v, _ = unique_pairs(u, v)
    first = np.ones(len(u), dtype=bool)
    first[1:] = u[1:] != u[:-1]
    group = np.cumsum(first) - 1
    smallest = v[first][group]
    heads = u[first]
    leaves = np.concatenate([v, heads])
    centers = np.concatenate([smallest, v[first]])
    keep = leaves != centers
    return leaves[keep], centers[keep]


def representatives(
    nodes: np.ndarray, components: np.ndarray, scores: np.ndarray | None
) -> np.ndarray:
    """The kept node of each node's component: highest score (NaN lowest), then
    smallest node."""
    rank_score = np.zeros(len(nodes)) if scores is None else np.nan_to_num(scores, nan=-np.inf)
    order = np.lexsort((nodes, -rank_score, components))
    sorted_components = components[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_components[1:] != sorted_components[:-1]
    chosen = nodes[order][first][np.cumsum(first) - 1]
    result = np.empty(len(nodes), dtype=np.int64)
    result[order] = chosen
    return result


def cluster_drops(
    nodes: np.ndarray,
    components: np.ndarray,
    ids: Sequence[str],
    scores: np.ndarray | None,
    similarity: np.ndarray,
) -> pa.Table:
    """DROPS rows for whole components: every member but the representative, with the
    kept id, the cluster id (the id of the component's smallest node) and its best
    edge similarity."""
    kept = representatives(nodes, components, scores)
    id_of = dict(zip(nodes.tolist(), ids, strict=True))
    drop = nodes != kept
    return pa.table(
        {
            "id": pa.array([id_of[x] for x in nodes[drop].tolist()], pa.string()),
            "shard": pa.array(node_shard(nodes[drop]), pa.int32()),
            "ordinal": pa.array(node_ordinal(nodes[drop]), pa.int64()),
            "duplicate_of": pa.array([id_of[x] for x in kept[drop].tolist()], pa.string()),
            "cluster_id": pa.array([id_of[x] for x in components[drop].tolist()], pa.string()),
            "similarity": pa.array(similarity[drop], pa.float64()),
        },
        schema=DROPS_SCHEMA,
    )


def node_similarity(
    src: np.ndarray, dst: np.ndarray, similarity: np.ndarray, nodes: np.ndarray
) -> np.ndarray:
    """For each of ``nodes`` (sorted), the highest similarity over its edges."""
    ends = np.concatenate([src, dst])
    values = np.concatenate([similarity, similarity])
    best = np.full(len(nodes), -np.inf)
    np.maximum.at(best, np.searchsorted(nodes, ends), values)
    return best


def size_histogram(sizes: Sequence[int] | np.ndarray) -> dict[str, int]:
    """Clusters per size: exact up to 8 members, then power-of-two bins ("9-16", ...)."""
    counts: dict[str, int] = {}
    for size in sorted(int(s) for s in sizes):
        if size <= HISTOGRAM_EXACT_SIZES:
            label = str(size)
        else:
            upper = 1 << (size - 1).bit_length()
            label = f"{upper // 2 + 1}-{upper}"
        counts[label] = counts.get(label, 0) + 1
    return counts


def merge_histograms(histograms: Sequence[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for histogram in histograms:
        for label, count in histogram.items():
            total[label] = total.get(label, 0) + count
    return dict(sorted(total.items(), key=lambda item: int(item[0].split("-")[0])))


def candidate_edges(documents: pa.Table, cfg: MinHashConfig):
    """Signatures, bands and bucket edges of a whole table in one process (tests, the
    bench's reference): (signer, src, dst, shared-band counts)."""
    signer = Signer(cfg)
    hashes, offsets = shingle_hashes(documents.column("text").to_pylist(), cfg)
    nodes = node_keys(documents.column("shard"), documents.column("ordinal"))
    live = np.diff(offsets) > 0  # a document without shingles is nobody's duplicate
    keys = signer.band_keys(signer.signatures(hashes, offsets))[live]
    band_nodes = np.repeat(nodes[live], signer.bands)
    center, member = bucket_edges(keys.reshape(-1), band_nodes)
    src, dst = band_nodes[center], band_nodes[member]
    src, dst, counts = unique_pairs(src, dst)
    sets = {
        int(node): shingle_set(hashes[offsets[i] : offsets[i + 1]]) for i, node in enumerate(nodes)
    }
    return signer, src, dst, counts, sets


def find_near_duplicates_in_memory(documents: pa.Table, cfg: MinHashConfig) -> pa.Table:
    """The whole decision on one table (columns id, shard, ordinal, text and the
    ``prefer_column`` if set): the reference the Ray path must equal."""
    if documents.num_rows == 0:
        return DROPS_SCHEMA.empty_table()
    signer, src, dst, counts, sets = candidate_edges(documents, cfg)
    if cfg.verify_candidates:
        similarity = pair_jaccard(src, dst, sets)
        keep = similarity >= cfg.threshold
        src, dst, similarity = src[keep], dst[keep], similarity[keep]
    else:
        similarity = signer.estimated_jaccard(counts)
    if len(src) == 0:
        return DROPS_SCHEMA.empty_table()
    nodes, components = union_find(src, dst)
    all_nodes = node_keys(documents.column("shard"), documents.column("ordinal"))
    position = {int(node): i for i, node in enumerate(all_nodes)}
    rows = [position[int(node)] for node in nodes]
    ids = documents.column("id").take(pa.array(rows)).to_pylist()
    scores = None
    if cfg.prefer_column is not None:
        column = documents.column(cfg.prefer_column).take(pa.array(rows)).cast(pa.float64())
        scores = pc.fill_null(column, float("nan")).to_numpy(zero_copy_only=False)
    best = node_similarity(src, dst, similarity, nodes)
    drops = cluster_drops(nodes, components, ids, scores, best)
    return drops.sort_by([("shard", "ascending"), ("ordinal", "ascending")])
