"""Run the ``minhash_dedup`` decision on a multi-node ``ray.cluster_utils.Cluster``.

Used by ``tests/pipeline/test_minhash_ray.py`` in a subprocess (``python -m
tests.pipeline.minhash_cluster_run``): a Cluster is its own Ray session and must not meet the
test session's ``ray_session``. Arguments: the run folder (pass-1
documents already written), the number of shards, the decision fingerprint, the number
of nodes, and the config as JSON. Prints one JSON line: the node ids Ray saw and the
drops as rows.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.pop("RAY_ADDRESS", None)


def main(argv: list[str]) -> int:
    import pyarrow as pa
    import ray
    from ray.cluster_utils import Cluster

    from pipeline.curate import RunLayout
    from pipeline.minhash_rounds import MINHASH_DEDUP, STEP
    from pipeline.round_driver import decide
    from pipeline.shards import Shard, read_parquet
    from stages.duplicates import DROPS_SCHEMA
    from stages.minhash import MinHashConfig

    output_dir, shard_count, fingerprint, nodes, settings = argv
    cfg = MinHashConfig.model_validate_json(settings)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        for _ in range(int(nodes) - 1):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        layout = RunLayout.for_output(output_dir)
        shards = [Shard(index=i, input_index=0, pieces=()) for i in range(int(shard_count))]
        # Rounds of tasks spread over the nodes, not the driver's small path.
        decide(MINHASH_DEDUP, layout, shards, [], [], fingerprint, cfg, driver_max_bytes=0)
        drops = pa.concat_tables(
            [
                read_parquet(
                    layout.filesystem, layout.decision(STEP, fingerprint, s.index), DROPS_SCHEMA
                )
                for s in shards
            ]
        )
        alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        print(json.dumps({"nodes": alive, "drops": drops.to_pylist()}))
    finally:
        ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
