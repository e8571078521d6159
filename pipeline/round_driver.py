"""The one driver of the global curation steps: a step declares its rounds, this runs them.

A global step (``exact_rounds.py``, ``minhash_rounds.py``, ``template_rounds.py``) is a
``RoundStep`` (``round_step.py``): pure functions over Arrow tables, and where their
rows go.

1. **map**, per shard: the documents that survived the earlier steps in, small rows
   out (digests, band keys, line hashes), routed by a partition of an int64 key;
2. **rounds**, each a function of the rows routed to it (``Round``): to a partition of
   a key (``to_partition``) or to the run of consecutive shards that holds a shard
   (``to_shard_run``); the last one routes by shard;
3. **write**, per shard: its rows become its decision file, and a few summary rows;
4. **summarize**: the ``_SUCCESS`` summary from the rounds' stats and the summary rows.

This module does the rest, once for every step: resume (a step whose ``_SUCCESS`` is
written is not decided again), the exchange between rounds (a task returns one table
per destination, and task d of the next round takes table d of every sender, so no
process holds every row), and where the rounds run. The map always runs as tasks on
the workers, which read the texts. Then, while its rows fit under
``ray.driver_round_max_bytes``, they meet here and every later round is one plain call
in this process: no exchange objects and no further tasks. Beyond the limit each round
is Ray tasks (``pipeline/ray_exec.py``). Both give the same decisions, because no
round's result depends on how its rows were cut (``tests/pipeline/test_round_driver.py``
forces each path and compares the bytes). A step whose rounds are not known in advance
(MinHash's connected components, which loop until the stars converge) declares a
``finish`` that gets the running ``StepRun`` and calls its ``round`` as often as needed.
"""

from __future__ import annotations

import functools
import posixpath
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import ray_exec
from pipeline.config import RayConfig
from pipeline.curate import GlobalStep, RunLayout
from pipeline.round_step import Exchange, Outcome, Plan, RoundStep, Route, StepInputs
from pipeline.shards import Shard, read_json, write_json_atomic
from pipeline.task_rounds import (
    by_shard,
    release_freed_memory,
    releases_freed_memory,
    shard_groups,
    split_rows,
)
from stages.base import StageConfig
from stages.minhash_lsh import partition_of

TASKS_PER_CPU = 2  # tasks per round and CPU, at least: a slow task is not the round
DRIVER_ROUND_MAX_BYTES = RayConfig.model_fields["driver_round_max_bytes"].default
"""The map's rows up to which the later rounds run in the driver process (the config's
``ray.driver_round_max_bytes``)."""


# --- executors --------------------------------------------------------------------------


class RayTasks:
    """Rounds as Ray tasks (``ray_exec.run_round``), inputs through the object store;
    partitions and runs as the step's sizes and the cluster's CPUs ask."""

    partitions: int | None = None
    groups: int | None = None

    def cpus(self) -> int:
        return ray_exec.cluster_cpus()

    def put(self, value: Any) -> Any:
        return ray_exec.put(value)

    def get(self, refs: Any) -> Any:
        return ray_exec.get(refs)

    def run_round(self, step: str, name: str, function: Callable, calls: list, returns: int):
        return ray_exec.run_round(step, name, function, calls, returns)


@dataclass
class InProcess:
    """Rounds as plain calls in this process. The driver path uses it with one
    partition and one run (and a line per round, as ``run_round`` prints for tasks);
    tests use it to force any ``partitions``, ``groups`` and map runs (``cpus``)
    without Ray."""

    cpus_: int = 1
    partitions: int | None = None
    groups: int | None = None
    announce: bool = False

    def cpus(self) -> int:
        return self.cpus_

    def put(self, value: Any) -> Any:
        return value

    def get(self, refs: Any) -> Any:
        return refs

    def run_round(self, step: str, name: str, function: Callable, calls: list, returns: int):
        started = time.perf_counter()
        outputs = [function(*args) for args in calls]
        stats = outputs if returns == 0 else [out[0] for out in outputs]
        if self.announce and ray_exec.progress_enabled():
            totals: dict[str, int] = {}
            for entry in stats:
                _add(totals, entry)
            counts = ", ".join(f"{key} {value:,}" for key, value in totals.items())
            seconds = time.perf_counter() - started
            print(f"{step} {name}: in the driver, {counts} ({seconds:.1f} s)", flush=True)
        return stats, [[] if returns == 0 else list(out[1:]) for out in outputs]


# --- task bodies ------------------------------------------------------------------------


@releases_freed_memory
def map_task(
    map_shard: Callable,
    key: str,
    columns: list[str],
    inputs: StepInputs,
    plan: Plan,
    shards: list[int],
) -> tuple:
    """The map over a run of shards, one shard at a time: (stats, rows per partition
    of the ``key`` column)."""
    tables, totals = [], {}
    for shard in shards:
        stats, rows = map_shard(inputs, inputs.documents(shard, columns))
        tables.append(rows)
        _add(totals, stats)
        release_freed_memory()  # between shards too: a task may read many
    rows = pa.concat_tables(tables)
    totals["bytes"] = rows.nbytes
    destination = partition_of(rows.column(key).to_numpy(), plan.partitions)
    return totals, *split_rows(rows, destination, plan.partitions)


@releases_freed_memory
def round_task(
    run: Callable, route: Route, inputs: Any, plan: Plan, counts: tuple[int, ...], *parts
) -> tuple:
    """One task of a round: the parts received from each input exchange (``counts``
    of them each) concatenated, ``run``, and its rows split by ``route``."""
    tables, start = [], 0
    for count in counts:
        tables.append(pa.concat_tables(parts[start : start + count]))
        start += count
    stats, rows = run(inputs, plan, *tables)
    return stats, *split_rows(rows, route.destinations(rows, plan), route.count(plan))


@releases_freed_memory
def write_task(write_shard: Callable, inputs: StepInputs, schema: pa.Schema, *parts) -> tuple:
    """One run of shards: each shard's rows written as its decision (a shard without
    rows gets no file: it reads as an empty decision); the summary rows."""
    summaries = [
        write_shard(inputs, shard, rows) for shard, rows in by_shard(pa.concat_tables(parts))
    ]
    summary = pa.concat_tables(summaries) if summaries else schema.empty_table()
    return {"shards_with_decisions": len(summaries)}, summary


def _add(totals: dict[str, int], stats: dict[str, int]) -> None:
    for key, value in stats.items():
        totals[key] = totals.get(key, 0) + value


# --- the driver -------------------------------------------------------------------------


class StepRun:
    """One step being decided: its inputs, its plan, and the executor of its rounds
    (Ray tasks, or this process once the rows met here)."""

    def __init__(self, step: RoundStep, inputs: StepInputs, plan: Plan, executor) -> None:
        self.step, self.inputs, self.plan, self.executor = step, inputs, plan, executor
        self.inputs_ref = executor.put(inputs)
        self.stats: dict[str, list[dict]] = {}
        self.path = "tasks"

    def map(self, columns: list[str]) -> Exchange:
        calls = [
            (self.step.map_shard, self.step.key, columns, self.inputs_ref, self.plan, run)
            for run in self.plan.runs
        ]
        stats, parts = self.executor.run_round(
            self.step.name, self.step.map_name, map_task, calls, self.plan.partitions
        )
        self.stats[self.step.map_name] = stats
        return Exchange(parts)

    def to_driver(self, exchange: Exchange) -> Exchange:
        """The rows meet here; every later round is one plain call in this process."""
        rows = self.gather(exchange)
        self.executor = InProcess(announce=True)
        self.inputs_ref = self.inputs
        everything = [sorted({s for run in self.plan.runs for s in run})]
        self.plan = replace(
            self.plan,
            partitions=1,
            runs=everything,
            group_of_shard=np.zeros_like(self.plan.group_of_shard),
        )
        self.path = "driver"
        return Exchange([[rows]])

    def round(self, name: str, run: Callable, inputs: Sequence[Exchange], route: Route) -> Exchange:
        """Run ``run`` once per destination of ``inputs`` (all with the same count),
        each on what every sender sent it; returns its rows routed by ``route``."""
        counts = tuple(len(exchange.parts) for exchange in inputs)
        calls = [
            (run, route, self.inputs_ref, self.plan, counts,
             *[part for exchange in inputs for part in exchange.received(d)])
            for d in range(inputs[0].destinations)
        ]  # fmt: skip
        stats, parts = self.executor.run_round(
            self.step.name, name, round_task, calls, route.count(self.plan)
        )
        self.stats[name] = stats
        return Exchange(parts)

    def gather(self, exchange: Exchange) -> pa.Table:
        """Every row of ``exchange`` in this process (what the caller bounded)."""
        return pa.concat_tables(self.executor.get([p for sent in exchange.parts for p in sent]))

    def scatter(self, rows: pa.Table, route: Route) -> Exchange:
        """Rows made in this process, routed as a round's would be."""
        destinations = route.destinations(rows, self.plan)
        return Exchange([split_rows(rows, destinations, route.count(self.plan))])

    def write(self, exchange: Exchange) -> pa.Table:
        calls = [
            (self.step.write_shard, self.inputs_ref, self.step.summary_schema,
             *exchange.received(g))
            for g in range(exchange.destinations)
        ]  # fmt: skip
        stats, parts = self.executor.run_round(self.step.name, "write", write_task, calls, 1)
        self.stats["write"] = stats
        tables = self.executor.get([sent[0] for sent in parts])
        summary = pa.concat_tables(tables) if tables else self.step.summary_schema.empty_table()
        return summary.sort_by("shard")


def decide(
    step: RoundStep,
    layout: RunLayout,
    shards: Sequence[Shard],
    earlier: list[GlobalStep],
    fingerprints: list[str],
    fingerprint: str,
    settings: Any,
    *,
    driver_max_bytes: int = DRIVER_ROUND_MAX_BYTES,
    executor: RayTasks | InProcess | None = None,
) -> None:
    """Decide ``step`` on what the ``earlier`` steps kept: map -> rounds -> write, then
    ``_SUCCESS`` with its summary. Nothing to do when the summary is already there."""
    if decision_done(layout, step.name, fingerprint):
        return
    if step.check is not None:
        step.check(layout, shards, settings)
    executor = executor or RayTasks()
    counts = document_counts(layout, shards)
    cpus = executor.cpus()
    partitions = executor.partitions or step.partitions(settings, sum(counts))
    task_settings = settings if step.task_settings is None else step.task_settings(settings)
    inputs = StepInputs(layout, earlier, fingerprints, step.name, fingerprint, task_settings)
    runs, group_of_shard = shard_runs(counts, shards, partitions, cpus)
    run = StepRun(step, inputs, Plan(partitions, runs, group_of_shard), executor)
    summary = step.summary_schema.empty_table()
    if shards:
        exchange = run.map(step.columns(settings))
        totals: dict[str, int] = {}
        for stats in run.stats[step.map_name]:
            _add(totals, stats)
        wanted = executor.groups or (
            partitions if step.groups is None else step.groups(settings, totals)
        )
        runs, group_of_shard = shard_runs(counts, shards, wanted, cpus)
        run.plan = Plan(partitions, runs, group_of_shard, totals)
        if totals["bytes"] <= driver_max_bytes:
            exchange = run.to_driver(exchange)
        for declared in step.rounds(settings):
            exchange = run.round(declared.name, declared.run, [exchange], declared.route)
        if step.finish is not None:
            exchange = step.finish(run, exchange)
        summary = run.write(exchange)
    planned = Plan(partitions, runs, group_of_shard, run.plan.totals)
    result = step.summarize(settings, Outcome(run.stats, summary, planned, run.path))
    # How the work was cut depends on the cluster's CPUs and the limit: kept beside the
    # step's figures, out of the ledger, which must be the same for any cluster.
    result["layout"] = {
        "cpus": cpus,
        "path": run.path,
        "map_tasks": len(run.stats.get(step.map_name, [])),
        "map_bytes": run.plan.totals.get("bytes", 0),  # what the limit is compared with
        "partitions": partitions,
        "groups": len(runs),
    }
    mark_decision_done(layout, step.name, fingerprint, result)


def global_step(step: RoundStep, settings: StageConfig, driver_max_bytes: int) -> GlobalStep:
    """The runner's view of a declared step: ``apply`` for finalize, ``decide`` here."""
    return GlobalStep(
        name=step.name,
        settings=settings,
        decision_schema=step.decision_schema,
        apply=step.apply,
        decide=functools.partial(decide, step, driver_max_bytes=driver_max_bytes),
    )


# --- shards, markers --------------------------------------------------------------------


def shard_runs(counts: Sequence[int], shards: Sequence[Shard], wanted: int, cpus: int):
    """(runs of shard indices, run of each shard index as an array): ``wanted`` runs
    of about equal document counts, and at least ``TASKS_PER_CPU`` per CPU (never more
    than the shards)."""
    groups = max(wanted, TASKS_PER_CPU * cpus)
    index = [shard.index for shard in shards]
    runs = [[index[i] for i in run] for run in shard_groups(counts, groups)]
    group_of_shard = np.zeros(max(index, default=-1) + 1, dtype=np.int32)
    for group, run in enumerate(runs):
        group_of_shard[run] = group
    return runs, group_of_shard


def decision_summary(layout: RunLayout, step: str, fingerprint: str) -> dict | None:
    """The ``_SUCCESS`` summary of a decided step; None while it is not decided."""
    marker = posixpath.join(layout.decision_dir(step, fingerprint), "_SUCCESS")
    return read_json(layout.filesystem, marker)


def decision_done(layout: RunLayout, step: str, fingerprint: str) -> bool:
    return decision_summary(layout, step, fingerprint) is not None


def mark_decision_done(layout: RunLayout, step: str, fingerprint: str, summary: dict) -> None:
    marker = posixpath.join(layout.decision_dir(step, fingerprint), "_SUCCESS")
    write_json_atomic(layout.filesystem, marker, summary)


def document_counts(layout: RunLayout, shards: Sequence[Shard]) -> list[int]:
    """Pass-1 documents per shard, from the shards' stats (no data read)."""
    counts = []
    for shard in shards:
        stats = read_json(layout.filesystem, layout.work_stats(shard.index)) or {}
        counts.append(stats.get("documents", {}).get("rows", 0))
    return counts
