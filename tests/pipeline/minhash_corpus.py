"""Pass-1 outputs for the global-step tests (MinHash, exact dedup), as a run leaves
them: per shard, the documents (id, shard, ordinal, and the text or another column)
and the stats the step sizes its rounds from."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.curate import RunLayout
from pipeline.shards import Shard, write_json_atomic, write_parquet_atomic


def write_pass_one(
    root: Path, texts: list[str], shards: int, column: str = "text"
) -> tuple[RunLayout, list[Shard], pa.Table]:
    """``texts`` dealt round-robin over ``shards`` shards, as the ``column`` of their
    documents (``text``, or e.g. exact dedup's digest): (layout, shards, all documents
    in shard order)."""
    layout = RunLayout.for_output(str(root))
    tables = []
    for shard in range(shards):
        mine = texts[shard::shards]
        table = pa.table(
            {
                "id": [f"s{shard}-{i:03d}" for i in range(len(mine))],
                "shard": pa.array([shard] * len(mine), pa.int32()),
                "ordinal": pa.array(range(len(mine)), pa.int64()),
                column: mine,
            }
        )
        write_parquet_atomic(layout.filesystem, layout.work_documents(shard), table)
        stats = {"documents": {"rows": table.num_rows}}
        write_json_atomic(layout.filesystem, layout.work_stats(shard), stats)
        tables.append(table)
    plan = [Shard(index=i, input_index=0, pieces=()) for i in range(shards)]
    return layout, plan, pa.concat_tables(tables)
