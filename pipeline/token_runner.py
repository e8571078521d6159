"""The Ray wiring of tokenization and packing, through ``pipeline/ray_exec.py``.

* ``run_tokenize``: one task per pending curated shard, largest first; each worker
  process loads the tokenizer once (``tokenize_worker``) and writes whole shards.
* ``ray_map_windows``: for one mix, two rounds of tasks. *Slice*: per run of tokenized
  shards, cut out the planned units of every phase (``slice_shard``) and split them by
  (phase, window) partition; *pack*: per partition, pack and write each of its windows
  (``pack_and_write``). Tokens travel once, whole shards never. The output does not
  depend on how the work is cut: a window's rows depend only on its units, which
  ``pack_window`` orders by plan position.

The plain work lives in ``pipeline/tokenizing.py`` and ``pipeline/mixing.py``.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import ray_exec
from pipeline.mix_config import Mix
from pipeline.mixing import (
    WINDOW_STATS_SCHEMA,
    MixResult,
    PhaseJob,
    Prepared,
    pack_and_write,
    run_mix,
    slice_shard,
)
from pipeline.ray_exec import init_ray
from pipeline.task_rounds import by_key, received, releases_freed_memory, shard_groups, split_rows
from pipeline.tokenizing import (
    TokenizeRunConfig,
    TokenizeShards,
    check_tokenizer,
    curated_shards,
    shard_done,
    shard_number,
    tokenizer_checksum,
    write_tokenized_manifest,
)

log = logging.getLogger("pipeline")


@dataclass
class TokenizeResult:
    output_dir: str
    manifest: dict[str, Any]
    shards_run: int
    shards_skipped: int
    seconds: float


def tokenize_worker(
    config: TokenizeRunConfig, entries: list[dict[str, Any]], checksum: str, threads: int
) -> Callable[[int], dict[str, Any]]:
    """Built once per worker process. tokenizers' thread pool would take every core in
    every worker: its size is fixed here, before the tokenizer's first use."""
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    return TokenizeShards(config, entries, checksum).tokenize_shard


def run_tokenize(config: TokenizeRunConfig, address: str | None = None) -> TokenizeResult:
    """Tokenize every curated shard not already done with this tokenizer, on Ray or in
    this process as ``ray.executor`` says."""
    with ray_exec.executor_scope():
        return _run_tokenize(config, address)


def _run_tokenize(config: TokenizeRunConfig, address: str | None) -> TokenizeResult:
    started = time.monotonic()
    entries = curated_shards(config.curated_dir)
    stage = check_tokenizer(config)
    checksum = tokenizer_checksum(config)
    pending = [e for e in entries if not shard_done(config, e, checksum)]
    if pending:
        init_ray(address, config.ray.num_cpus, executor=config.ray.executor)
        threads = max(1, round(stage.resources.cpus))
        ray_exec.map_items(
            "tokenize",
            [int(shard_number(e)) for e in pending],
            factory=functools.partial(tokenize_worker, config, pending, checksum, threads),
            cpus=stage.resources.cpus,
            sizes=[int(e.get("bytes", 0)) for e in pending],
            count_key="tokens",
        )
    manifest = write_tokenized_manifest(config, entries, stage, checksum)
    return TokenizeResult(
        config.output_dir,
        manifest,
        len(pending),
        len(entries) - len(pending),
        time.monotonic() - started,
    )


def window_partition(units: pa.Table, partitions: int) -> np.ndarray:
    """The pack task of each unit: a stable hash of its (phase, window)."""
    keys = zip(units["phase"].to_pylist(), units["window"].to_pylist(), strict=True)
    codes = [zlib.crc32(f"{phase}\0{window}".encode()) for phase, window in keys]
    return (np.asarray(codes, dtype=np.int64) % partitions).astype(np.int32)


@releases_freed_memory
def slice_run(jobs: list[PhaseJob], shards: list[dict[str, Any]], partitions: int) -> tuple:
    """Round 1, a run of tokenized shards: their units, one table per pack task."""
    units = pa.concat_tables([slice_shard(jobs, s["shard"], s["file"]) for s in shards])
    parts = split_rows(units, window_partition(units, partitions), partitions)
    return {"units": units.num_rows}, *parts


@releases_freed_memory
def pack_partition(jobs: list[PhaseJob], *parts: pa.Table) -> tuple:
    """Round 2, one partition: pack and write each of its windows; their stats rows."""
    units = pa.concat_tables(parts)
    rows = [pack_and_write(jobs, window) for _, window in by_key(units, ["phase", "window"])]
    stats = pa.concat_tables([WINDOW_STATS_SCHEMA.empty_table(), *rows])
    return {"windows": stats.num_rows}, stats


def ray_map_windows(jobs: list[PhaseJob], shards: list[dict[str, Any]]) -> pa.Table:
    """Slice each tokenized shard once for all phases, route each unit to the task of
    its (phase, window), pack and write every window; returns the windows' stats rows."""
    cpus = ray_exec.cluster_cpus()
    partitions = max(1, min(len(shards), 2 * cpus))
    runs = shard_groups([int(s.get("bytes", 1)) for s in shards], 2 * cpus)
    shared = ray_exec.put(jobs)
    _, sliced = ray_exec.run_round(
        "mix",
        "slice",
        slice_run,
        [(shared, [shards[i] for i in run], partitions) for run in runs],
        partitions,
    )
    calls = [(shared, *received(sliced, p)) for p in range(partitions)]
    _, packed = ray_exec.run_round("mix", "pack", pack_partition, calls, 1)
    tables = ray_exec.get(received(packed, 0))
    return pa.concat_tables([WINDOW_STATS_SCHEMA.empty_table(), *tables])


def run_mix_on_ray(
    mix: Mix, prepared: Prepared, out_dir: str, seed: int, address: str | None = None
) -> MixResult:
    """``run_mix`` with the slicing and packing distributed by Ray (``prepared`` comes
    from ``prepare_mix``, so every data-dependent error is raised before Ray starts)."""
    init_ray(address)
    return run_mix(mix, prepared, out_dir, seed, ray_map_windows)
