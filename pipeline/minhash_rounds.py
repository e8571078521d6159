"""The ``minhash_dedup`` global step, declared as rounds (``pipeline/round_driver.py``
runs them; the pure halves are ``stages/minhash.py`` and ``stages/minhash_lsh.py``).

No process holds all documents or all signatures, and each task's share is bounded by a
size from the config, so a worker's memory does not grow with the corpus.

1. **sign** (map, per shard): the shard's surviving texts, shingled 1 MiB at a time,
   become signatures and one row per (document, band), keyed by the band key;
   ``partitions`` of about ``partition_rows`` rows each.
2. **bucket**, per band partition: equal keys become star edges, each with how many
   bands the pair shares, sent to the run of shards of the edge's first document.
3. **send sets**, per run (with ``verify_candidates``): the run's distinct edges; it
   re-reads and shingles their first documents, one shard at a time, and sends each
   edge to the run of its second document. A first document's shingle set rides on
   one of its edges per destination run (``shingles``, empty on the others), so it
   travels once per destination.
4. **verify**, per run: the second documents are shingled one shard at a time, each
   pair's exact Jaccard is taken and pairs below the threshold are dropped. Without
   verification, rounds 3 and 4 are one **merge** per run: the bands each pair shares
   summed, the similarity estimated from them.

The runs of rounds 3 and 4 are sized after the map from the shingle counts it returns:
``verify_partition_bytes`` of shingle sets (8 bytes a shingle) per run.

Then components (``minhash_components.py``): up to ``union_find_max_edges`` edges meet
in the driver for union-find; above it, alternating large/small-star task rounds.
Each shard's drops are written with the driver's dedup write.

Why plain task rounds rather than Ray Data groupbys: the same decision through Ray
Data's sort shuffle spent most of its CPU in Ray itself (sampling, the executor and its
extra workers). The rounds here are the step's own all-to-all exchanges, with nothing
else in between (figures in the README).
"""

from __future__ import annotations

import functools
from collections import ChainMap
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.curate import RunLayout
from pipeline.minhash_components import components
from pipeline.round_step import (
    Outcome,
    Plan,
    Round,
    RoundStep,
    StepInputs,
    partitions_for,
    to_partition,
    to_shard_run,
    write_drops,
)
from pipeline.shards import Shard
from pipeline.task_rounds import release_freed_memory
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
    merge_histograms,
    node_keys,
    node_ordinal,
    node_shard,
    pair_jaccard,
    pair_totals,
    size_histogram,
)

STEP = "minhash_dedup"
SIGN_BATCH_BYTES = 1 << 20  # text shingled at once

BAND_SCHEMA = pa.schema(
    [
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
# Round 3's edges: the first document's shingle set on one edge per destination run.
SENT_SCHEMA = pa.schema([*_PAIR_FIELDS, ("shingles", pa.list_(pa.uint64()))])
EDGE_SCHEMA = pa.schema([*_PAIR_FIELDS, ("similarity", pa.float64())])
SUMMARY_SCHEMA = pa.schema(
    [("shard", pa.int64()), ("rows", pa.int64()), ("sizes", pa.list_(pa.int64()))]
)


def shingle_sets(
    inputs: StepInputs, nodes: np.ndarray
) -> Iterator[tuple[np.ndarray, dict[int, np.ndarray]]]:
    """Per shard of the given nodes: (its nodes, node -> shingle set), re-read and
    shingled one shard at a time, so a caller holds one shard's sets. (The sets are too
    big to keep from the map for every document, 16 KB a document, where only the
    candidates need them.)"""
    nodes = np.unique(nodes)
    shards = node_shard(nodes)
    for shard in np.unique(shards).tolist():
        mine = nodes[shards == shard]
        documents = inputs.documents(shard, ["ordinal", "text"])
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
            hashes, offsets = shingle_hashes(batch.column("text").to_pylist(), inputs.settings)
            for i, node in enumerate(mine[done : done + batch.num_rows].tolist()):
                sets[node] = shingle_set(hashes[offsets[i] : offsets[i + 1]])
            done += batch.num_rows
        yield mine, sets
        del sets, candidates
        release_freed_memory()


@functools.cache
def _signer(settings: str) -> Signer:
    """One signer per process and config (datasketch's permutations are built once)."""
    return Signer(MinHashConfig.model_validate_json(settings))


def sign(inputs: StepInputs, documents: pa.Table) -> tuple[dict, pa.Table]:
    """Map: one shard's documents, in batches of about ``SIGN_BATCH_BYTES`` of text, to
    one row per (document, band)."""
    signer = _signer(inputs.settings.model_dump_json())
    tables, shingles = [BAND_SCHEMA.empty_table()], 0
    for batch in text_batches(documents, SIGN_BATCH_BYTES):
        rows, shingle_count = band_rows(batch, signer)
        tables.append(rows)
        shingles += shingle_count
    table = pa.concat_tables(tables)
    return {"documents": documents.num_rows, "shingles": shingles, "rows": table.num_rows}, table


def band_rows(batch: pa.Table, signer: Signer) -> tuple[pa.Table, int]:
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
            "key": keys,
            "node": np.repeat(nodes, signer.bands),
            "id": batch.column("id").take(rows),
            "score": _scores(batch, cfg).take(rows),
        },
        schema=BAND_SCHEMA,
    )
    return table, len(hashes)


def bucket(inputs: StepInputs, plan: Plan, bands: pa.Table) -> tuple[dict, pa.Table]:
    """Round, one band partition: equal keys become star edges (distinct pairs, with the
    bands each shares)."""
    keys, nodes = bands.column("key").to_numpy(), bands.column("node").to_numpy()
    center, member = bucket_edges(keys, nodes)
    src, dst = nodes[center], nodes[member]
    first, shared = pair_totals(src, dst, np.ones(len(src), np.int64))
    center_rows = pa.array(center[first], pa.int64())
    member_rows = pa.array(member[first], pa.int64())
    edges = pa.table(
        {
            "src": src[first],
            "dst": dst[first],
            "src_id": bands.column("id").take(center_rows),
            "dst_id": bands.column("id").take(member_rows),
            "src_score": bands.column("score").take(center_rows),
            "dst_score": bands.column("score").take(member_rows),
            "bands": shared,
        },
        schema=CANDIDATE_SCHEMA,
    )
    return {"candidates": edges.num_rows}, edges


def send_sets(inputs: StepInputs, plan: Plan, candidates: pa.Table) -> tuple[dict, pa.Table]:
    """Round, one run (edges whose first document is here): the distinct edges, with
    the first document's shingle set on one edge per destination run of the second
    document. Sets are made one shard at a time."""
    edges = distinct_candidates([candidates])
    src, dst = edges.column("src").to_numpy(), edges.column("dst").to_numpy()
    destination = plan.group_of_shard[node_shard(dst)].astype(np.int64)
    carrier = np.zeros(len(src), dtype=bool)
    carrier[np.unique(np.stack([src, destination], axis=1), axis=0, return_index=True)[1]] = True
    values: list[np.ndarray | None] = [None] * len(src)
    for nodes, sets in shingle_sets(inputs, src[carrier]):
        for row in np.flatnonzero(carrier & np.isin(src, nodes)).tolist():
            values[row] = sets[int(src[row])]
    empty = np.zeros(0, np.uint64)
    lengths = np.array([0 if v is None else len(v) for v in values], dtype=np.int64)
    shingles = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32()),
        pa.array(np.concatenate([empty, *[v for v in values if v is not None]]), pa.uint64()),
    )
    sent = edges.drop_columns(["bands"]).append_column("shingles", shingles)
    stats = {"candidates": edges.num_rows, "sets_sent": int(np.count_nonzero(carrier))}
    return stats, sent


def _received_sets(edges: pa.Table) -> dict[int, np.ndarray]:
    """first document -> shingle set, as zero-copy numpy views into the received Arrow
    buffers (the edges that carry one)."""
    sets: dict[int, np.ndarray] = {}
    for nodes, shingles in zip(
        edges.column("src").chunks, edges.column("shingles").chunks, strict=True
    ):
        values = shingles.values.to_numpy()  # the chunk's child buffer, no copy
        offsets = shingles.offsets.to_numpy()
        for row, node in enumerate(nodes.to_numpy().tolist()):
            if offsets[row + 1] > offsets[row]:
                sets[node] = values[offsets[row] : offsets[row + 1]]
    return sets


def verify(inputs: StepInputs, plan: Plan, sent: pa.Table) -> tuple[dict, pa.Table]:
    """Round, one run (edges whose second document is here): exact Jaccard of every
    edge, one shard of second documents at a time; pairs below the threshold go."""
    received = _received_sets(sent)  # views of the input
    src, dst = sent.column("src").to_numpy(), sent.column("dst").to_numpy()
    similarity = np.zeros(len(src))
    for nodes, sets in shingle_sets(inputs, dst):
        rows = np.flatnonzero(np.isin(dst, nodes))
        similarity[rows] = pair_jaccard(src[rows], dst[rows], ChainMap(sets, received))
    keep = similarity >= inputs.settings.threshold
    edges = sent.drop_columns(["shingles"]).filter(pa.array(keep))
    edges = edges.append_column("similarity", pa.array(similarity[keep], pa.float64()))
    return {"candidates": sent.num_rows, "edges": edges.num_rows}, edges


def merge(inputs: StepInputs, plan: Plan, candidates: pa.Table) -> tuple[dict, pa.Table]:
    """Rounds 3-4 without verification: the similarity each pair's shared bands
    estimate."""
    edges = distinct_candidates([candidates])
    similarity = Signer(inputs.settings).estimated_jaccard(edges.column("bands").to_numpy())
    return {"candidates": edges.num_rows, "edges": edges.num_rows}, _with_similarity(
        edges, similarity
    )


def rounds(settings: MinHashConfig) -> list[Round]:
    """bucket -> (send sets -> verify | merge); the edges leave keyed by their second
    document, as the components' rounds take them."""
    bucketed = Round("bucket", bucket, to_shard_run("src", node_shard))
    if not settings.verify_candidates:
        return [bucketed, Round("merge", merge, to_partition("dst"))]
    return [
        bucketed,
        Round("send sets", send_sets, to_shard_run("dst", node_shard)),
        Round("verify", verify, to_partition("dst")),
    ]


def write_shard(inputs: StepInputs, shard: int, drops: pa.Table) -> pa.Table:
    """The shard's drops, written; summary: their count and the sizes of the clusters
    whose first drop row is here (each cluster's size rides on one row)."""
    summary = write_drops(inputs, shard, drops)
    sizes = drops.column("cluster_size").to_numpy()
    sizes_column = pa.array([sizes[sizes > 0].tolist()], pa.list_(pa.int64()))
    return summary.append_column("sizes", sizes_column)


def summarize(settings: MinHashConfig, outcome: Outcome) -> dict:
    """The ``_SUCCESS`` summary; its ``report`` goes into the ledger (the same for any
    cluster and either path)."""
    sizes = [size for row in outcome.summary.column("sizes").to_pylist() for size in row]
    histogram = size_histogram(sizes)
    final = outcome.stats.get("verify" if settings.verify_candidates else "merge", [])
    report = {
        "cluster_sizes": merge_histograms([histogram]),
        "clusters": sum(histogram.values()),
        "dropped": sum(outcome.summary.column("rows").to_pylist()),
        "documents": sum(entry["documents"] for entry in outcome.stats.get("sign", [])),
        "candidates": sum(entry["candidates"] for entry in final),
        "edges": sum(entry["edges"] for entry in final),
        "components": "distributed stars" if "large star" in outcome.stats else "driver union-find",
        "partitions": outcome.plan.partitions,
        "config_fingerprint": settings.fingerprint(),
    }
    return {"shards_with_decisions": outcome.summary.num_rows, "report": report}


def columns(settings: MinHashConfig) -> list[str]:
    extra = [] if settings.prefer_column is None else [settings.prefer_column]
    return ["id", "shard", "ordinal", "text", *extra]


def partitions(settings: MinHashConfig, documents: int) -> int:
    bands, _ = settings.band_layout()
    return partitions_for(documents * bands, settings.partition_rows, least=2)


def verify_runs(settings: MinHashConfig, totals: dict[str, int]) -> int:
    """Runs of shards for the verification rounds: ``verify_partition_bytes`` of
    shingle sets each."""
    return partitions_for(8 * totals.get("shingles", 0), settings.verify_partition_bytes)


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


def _scores(batch: pa.Table, cfg: MinHashConfig) -> pa.Array:
    if cfg.prefer_column is None:
        return pa.nulls(batch.num_rows, pa.float64())
    return batch.column(cfg.prefer_column).combine_chunks().cast(pa.float64())


def distinct_candidates(parts: Sequence[pa.Table]) -> pa.Table:
    """Candidate edges from every band partition: one row per pair, its bands summed."""
    table = pa.concat_tables(parts)
    src, dst = table.column("src").to_numpy(), table.column("dst").to_numpy()
    first, shared = pair_totals(src, dst, table.column("bands").to_numpy())
    picked = table.take(pa.array(first, pa.int64()))
    return picked.set_column(
        CANDIDATE_SCHEMA.get_field_index("bands"), "bands", pa.array(shared, pa.int64())
    )


def _with_similarity(edges: pa.Table, similarity: np.ndarray) -> pa.Table:
    return edges.drop_columns(["bands"]).append_column(
        "similarity", pa.array(similarity, pa.float64())
    )


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


MINHASH_DEDUP = RoundStep(
    name=STEP,
    decision_schema=DROPS_SCHEMA,
    apply=apply_near_duplicates,
    columns=columns,
    map_name="sign",
    map_shard=sign,
    key="key",
    partitions=partitions,
    rounds=rounds,
    write_shard=write_shard,
    summary_schema=SUMMARY_SCHEMA,
    summarize=summarize,
    groups=verify_runs,
    finish=components,
    task_settings=lambda settings: settings.with_band_layout(),
    check=_check_prefer_column,
)
