"""The ``exact_dedup`` global step, declared as rounds (``pipeline/round_driver.py`` runs
them; the pure half is ``stages/exact_dedup.py``).

1. **digests** (map, per shard): the survivors' (id, shard, ordinal, digest), 16 bytes
   of digest a document and never the text, keyed by the digest's first 60 bits;
2. **choose**, per digest partition (``PARTITION_ROWS`` digests each): per digest, every
   copy but the first in input order is dropped; the drops go to their shard's run;
3. **write**: each shard's drops, as its decision.

This replaced two Ray Data ``groupby``s on the default hash shuffle, whose 200
aggregator partitions took 15 s on the 230-document demo.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.round_step import (
    DROPS_SUMMARY,
    Outcome,
    Plan,
    Round,
    RoundStep,
    StepInputs,
    partitions_for,
    to_shard_run,
    write_drops,
)
from stages.duplicates import DROPS_SCHEMA, split_by_drops
from stages.exact_dedup import (
    DIGEST_COLUMN,
    REASON_EXACT_DUPLICATE,
    ExactDedupConfig,
    choose_duplicates,
)

STEP = "exact_dedup"
PARTITION_ROWS = 1_000_000  # digests per choose task: about 80 MB with their ids
COLUMNS = ["id", "shard", "ordinal", DIGEST_COLUMN]


def digest_keys(digests: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Each hex digest's first 60 bits (blake2b: already uniform) as the exchange key."""
    return np.array([int(d[:15], 16) for d in digests.to_pylist()], dtype=np.int64)


def digest_rows(inputs: StepInputs, documents: pa.Table) -> tuple[dict, pa.Table]:
    """Map: the shard's digests, keyed."""
    keys = pa.array(digest_keys(documents.column(DIGEST_COLUMN)), pa.int64())
    return {"documents": documents.num_rows}, documents.append_column("key", keys)


def choose(inputs: StepInputs, plan: Plan, digests: pa.Table) -> tuple[dict, pa.Table]:
    """Round: whole digest groups in, the copies to drop out."""
    drops = choose_duplicates(digests.select(COLUMNS))
    return {"duplicates": drops.num_rows}, drops


def summarize(settings: ExactDedupConfig, outcome: Outcome) -> dict:
    return {"shards_with_decisions": outcome.summary.num_rows}


def apply_exact(
    documents: pa.Table, decision: pa.Table, settings: ExactDedupConfig
) -> tuple[pa.Table, pa.Table]:
    return split_by_drops(documents, decision, REASON_EXACT_DUPLICATE)


EXACT_DEDUP = RoundStep(
    name=STEP,
    decision_schema=DROPS_SCHEMA,
    apply=apply_exact,
    columns=lambda settings: COLUMNS,
    map_name="digests",
    map_shard=digest_rows,
    key="key",
    partitions=lambda settings, documents: partitions_for(documents, PARTITION_ROWS),
    rounds=lambda settings: [Round("choose", choose, to_shard_run("shard"))],
    write_shard=write_drops,
    summary_schema=DROPS_SUMMARY,
    summarize=summarize,
)
