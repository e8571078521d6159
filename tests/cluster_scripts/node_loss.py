"""Curation on a cluster on this machine while worker nodes die, one per phase.

    python -m tests.cluster_scripts.node_loss CONFIG SUMMARY.json

A head (no CPUs: it only hosts the driver) and two worker nodes of 2 CPUs each, all on
127.0.0.1 under a private temp dir. A watcher thread kills nodes without a graceful
shutdown (their processes get SIGKILL) and adds a replacement after each kill, as an
autoscaler would:

* worker A as soon as the first shard's documents pass is complete;
* worker B as soon as the last one is (the exact-dedup rounds are starting);
* the first replacement as soon as exact dedup is decided (the MinHash step runs).

The summary JSON says when each kill landed and what the run returned. Run by
``tests/pipeline/test_node_loss.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path

# Set before Ray is imported. A private RAY_TMPDIR keeps this cluster's sessions and its
# "current cluster" address file away from any other Ray on the machine. With cluster
# mode flagged off, ray.init keeps 127.0.0.1 as given instead of swapping in the
# machine's outward address, on which a cluster bound to loopback cannot be reached.
TEMP_DIR = tempfile.mkdtemp(prefix="rayn", dir="/tmp")  # short: socket paths
os.environ["RAY_TMPDIR"] = TEMP_DIR
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("PIPELINE_PROGRESS", "0")

NODE = {"num_cpus": 2, "node_ip_address": "127.0.0.1", "object_store_memory": 200 * 1024**2}
POLL_S = 0.05
DEDUP_KILL_DELAY_S = 0.0  # the global rounds run on warm workers: seconds, not more


def _markers(output_dir: Path) -> int:
    return len(list((output_dir / "work" / "documents").glob("[0-9]*.json")))


def _decided(output_dir: Path, step: str) -> bool:
    return any((output_dir / "work" / step).glob("*/_SUCCESS"))


def _wait(condition, stop) -> bool:
    while not condition():
        if stop.is_set():
            return False
        time.sleep(POLL_S)
    return True


def _watch(cluster, workers, output_dir: Path, shards: int, events: list, stop) -> None:
    """Kill a node per phase (see the module docstring), adding a replacement each time.
    A replacement starts on a thread of its own: starting a node takes seconds, longer
    than the global rounds on warm workers, and the next kill must not wait for it."""
    replacements: list[threading.Thread] = []

    def kill(node, name: str) -> None:
        state = {step: _decided(output_dir, step) for step in ("exact_dedup", "minhash_dedup")}
        cluster.remove_node(node, allow_graceful=False)
        events.append({"killed": name, "pass_markers": _markers(output_dir), "decided": state})
        previous = replacements[-1] if replacements else None

        def replace() -> None:
            if previous is not None:
                previous.join()  # nodes are added one at a time, in kill order
            workers.append(cluster.add_node(**NODE))

        replacements.append(threading.Thread(target=replace, daemon=True))
        replacements[-1].start()

    try:
        if not _wait(lambda: _markers(output_dir) >= 1, stop):
            return
        kill(workers[0], "worker-a")
        if not _wait(lambda: _markers(output_dir) >= shards, stop):
            return
        time.sleep(DEDUP_KILL_DELAY_S)
        kill(workers[1], "worker-b")
        if not _wait(lambda: _decided(output_dir, "exact_dedup") and len(workers) > 2, stop):
            return
        kill(workers[2], "replacement-1")
        for thread in replacements:
            thread.join()
    except Exception:
        events.append({"watcher_error": traceback.format_exc()})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("summary", type=Path)
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from pipeline.config import load_curate_config
    from pipeline.runner import plan, run_curate

    config = load_curate_config(args.config)
    shards = len(plan(config))
    head = {**NODE, "num_cpus": 0, "include_dashboard": False}
    summary: dict = {"shards": shards, "events": []}
    stop = threading.Event()
    # No exit hooks: they install signal handlers, which a node added from the watcher
    # thread cannot; the finally below (and the test's session teardown) cleans up.
    cluster = Cluster(initialize_head=True, head_node_args=head, shutdown_at_exit=False)
    try:
        workers = [cluster.add_node(**NODE), cluster.add_node(**NODE)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        watcher = threading.Thread(
            target=_watch,
            args=(cluster, workers, Path(config.output_dir), shards, summary["events"], stop),
            daemon=True,
        )
        watcher.start()
        started = time.monotonic()
        result = run_curate(config)
        summary["seconds"] = time.monotonic() - started
        stop.set()
        watcher.join(timeout=60)
        summary["shards_run"] = result.shards_run
        summary["identity_holds"] = result.ledger["identity_holds"]
        summary["alive_nodes"] = sum(node["Alive"] for node in ray.nodes())
    finally:
        stop.set()
        args.summary.write_text(json.dumps(summary, indent=2))
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(TEMP_DIR, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
