"""The Ray wiring of tokenization and packing (the only Ray calls for these commands).

* ``run_tokenize``: an actor pool maps ``TokenizeShards`` over the pending curated
  shards; each actor loads the tokenizer once and writes whole shards.
* ``ray_map_windows``: for one phase, a map over the tokenized shards cuts out the
  planned units (``slice_shard``), a ``groupby("window")`` brings each window's units
  together (a shuffle of tokens, never of whole shards), and ``map_groups`` packs and
  writes one shard per window (``pack_and_write``). The output does not depend on how
  Ray schedules or splits this: a window's rows depend only on its units in plan order.

The plain work lives in ``pipeline/tokenizing.py`` and ``pipeline/mixing.py``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

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
from pipeline.runner import init_ray
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


def _cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def run_tokenize(config: TokenizeRunConfig, address: str | None = None) -> TokenizeResult:
    """Tokenize every curated shard not already done with this tokenizer."""
    started = time.monotonic()
    entries = curated_shards(config.curated_dir)
    stage = check_tokenizer(config)
    checksum = tokenizer_checksum(config)
    pending = [e for e in entries if not shard_done(config, e, checksum)]
    if pending:
        import ray

        init_ray(address, config.ray.num_cpus)
        numbers = [{"shard": int(shard_number(e))} for e in pending]
        threads = max(1, round(stage.resources.cpus))
        ray.data.from_items(numbers).map_batches(
            TokenizeShards,
            fn_constructor_kwargs={"config": config, "entries": pending, "checksum": checksum},
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(len(pending), _cpus())),
            num_cpus=stage.resources.cpus,
            # tokenizers' thread pool would take every core in every actor otherwise
            runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(threads)}},
        ).take_all()
    manifest = write_tokenized_manifest(config, entries, stage, checksum)
    return TokenizeResult(
        config.output_dir,
        manifest,
        len(pending),
        len(entries) - len(pending),
        time.monotonic() - started,
    )


def _slice(batch: pa.Table, jobs: list[PhaseJob]) -> pa.Table:
    pairs = zip(batch["shard"].to_pylist(), batch["file"].to_pylist(), strict=True)
    return pa.concat_tables([slice_shard(jobs, shard, file) for shard, file in pairs])


def _pack(units: pa.Table, jobs: list[PhaseJob]) -> pa.Table:
    return pack_and_write(jobs, units)


def ray_map_windows(jobs: list[PhaseJob], shards: list[dict[str, Any]]) -> pa.Table:
    """Slice each tokenized shard once for all phases, group by (phase, window), pack
    and write each window (one task each); returns the windows' stats rows."""
    import ray

    items = [{"shard": s["shard"], "file": s["file"]} for s in shards]
    units = ray.data.from_items(items).map_batches(
        _slice, fn_kwargs={"jobs": jobs}, batch_size=1, batch_format="pyarrow", num_cpus=0.5
    )
    partitions = max(1, min(len(shards), 2 * _cpus()))
    rows = (
        units.groupby(["phase", "window"], num_partitions=partitions)
        .map_groups(_pack, fn_args=(jobs,), batch_format="pyarrow", num_cpus=0.5)
        .take_all()
    )
    return pa.Table.from_pylist(rows, schema=WINDOW_STATS_SCHEMA)


def run_mix_on_ray(
    mix: Mix, prepared: Prepared, out_dir: str, seed: int, address: str | None = None
) -> MixResult:
    """``run_mix`` with the slicing and packing distributed by Ray (``prepared`` comes
    from ``prepare_mix``, so every data-dependent error is raised before Ray starts)."""
    init_ray(address)
    return run_mix(mix, prepared, out_dir, seed, ray_map_windows)
