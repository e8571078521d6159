"""The one driver of the global curation steps: a step declares its rounds, this runs them.

A global step (``exact_rounds.py``, ``minhash_rounds.py``, ``template_rounds.py``) is a
``RoundStep``: pure functions over Arrow tables, and where their rows go.

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
import math
import posixpath
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import ray_exec
from pipeline.config import RayConfig
from pipeline.curate import GlobalStep, RunLayout, apply_steps
from pipeline.shards import Shard, read_json, write_json_atomic, write_parquet_atomic
from pipeline.task_rounds import (
    by_shard,
    received,
    release_freed_memory,
    releases_freed_memory,
    shard_groups,
    split_rows,
)
from stages.base import StageConfig
from stages.duplicates import DROPS_SCHEMA
from stages.minhash_lsh import partition_of

TASKS_PER_CPU = 2  # tasks per round and CPU, at least: a slow task is not the round
DRIVER_ROUND_MAX_BYTES = RayConfig.model_fields["driver_round_max_bytes"].default
"""The map's rows up to which the later rounds run in the driver process (the config's
``ray.driver_round_max_bytes``)."""


# --- what a step declares ---------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """Where a round's rows go next: to a partition of the int64 ``column``
    (``to_partition``), or to the run of shards holding the shard in ``column``
    (``to_shard_run``; ``shard_of`` turns the column's values into shard numbers)."""

    column: str
    to_shards: bool
    shard_of: Callable[[np.ndarray], np.ndarray] | None = None

    def count(self, plan: Plan) -> int:
        return plan.groups if self.to_shards else plan.partitions

    def destinations(self, rows: pa.Table, plan: Plan) -> np.ndarray:
        values = rows.column(self.column).to_numpy()
        if not self.to_shards:
            return partition_of(values, plan.partitions)
        return plan.group_of_shard[values if self.shard_of is None else self.shard_of(values)]


def to_partition(column: str) -> Route:
    return Route(column, to_shards=False)


def to_shard_run(column: str, shard_of: Callable[[np.ndarray], np.ndarray] | None = None) -> Route:
    return Route(column, to_shards=True, shard_of=shard_of)


@dataclass(frozen=True)
class Round:
    """One round: ``run(inputs, plan, rows)`` -> (stats of ints, rows), once per
    destination of the round before; its rows go on by ``route``."""

    name: str
    run: Callable[..., tuple[dict, pa.Table]]
    route: Route


@dataclass(frozen=True)
class RoundStep:
    """A global step, declared: what it reads, its rounds and how it writes.

    ``apply`` and ``decision_schema`` are what finalize needs (``curate.GlobalStep``).
    ``finish``, where set, runs after the rounds with this driver in hand, for work
    whose rounds are not known in advance (MinHash's connected components)."""

    name: str
    decision_schema: pa.Schema
    apply: Callable[[pa.Table, pa.Table, Any], tuple[pa.Table, pa.Table]]
    columns: Callable[[Any], list[str]]
    """Settings -> the survivors' columns the map reads."""
    map_name: str
    map_shard: Callable[[StepInputs, pa.Table], tuple[dict, pa.Table]]
    """One shard's documents -> (stats of ints, rows with the ``key`` column)."""
    key: str
    """The int64 column of the map's rows whose partition routes them."""
    partitions: Callable[[Any, int], int]
    """(settings, documents) -> how many partitions of the key."""
    rounds: Callable[[Any], Sequence[Round]]
    write_shard: Callable[[StepInputs, int, pa.Table], pa.Table]
    """(inputs, shard, its rows) -> summary rows (``summary_schema``), after writing
    the shard's decision."""
    summary_schema: pa.Schema
    summarize: Callable[[Any, Outcome], dict]
    groups: Callable[[Any, dict[str, int]], int] | None = None
    """(settings, the map's totals) -> runs of shards wanted; None: the partitions."""
    finish: Callable[[StepRun, Exchange], Exchange] | None = None
    task_settings: Callable[[Any], Any] | None = None
    """The settings as tasks get them (MinHash: with its band layout filled in)."""
    check: Callable[[RunLayout, Sequence[Shard], Any], None] | None = None
    """Fails before any work (a misspelt column)."""


# --- what tasks get ---------------------------------------------------------------------


@dataclass(frozen=True)
class StepInputs:
    """What every task of a step reads: the documents left after the earlier global
    steps, the settings and where decisions go. Put in the object store once."""

    layout: RunLayout
    earlier: list[GlobalStep]
    fingerprints: list[str]
    step: str
    fingerprint: str
    settings: Any

    def documents(self, shard: int, columns: list[str]) -> pa.Table:
        """The shard's documents left after the earlier steps, projected to ``columns``."""
        needed = list(dict.fromkeys(["id", *columns]))  # decisions are applied by id
        table = apply_steps(self.layout, shard, self.earlier, self.fingerprints, needed)[0]
        return table.select(columns)

    def write_decision(self, shard: int, decision: pa.Table) -> None:
        write_parquet_atomic(
            self.layout.filesystem,
            self.layout.decision(self.step, self.fingerprint, shard),
            decision,
        )


@dataclass(frozen=True)
class Plan:
    """How a step's rows are cut: key partitions, runs of consecutive shards (and the
    run of each shard) and the map's stats summed."""

    partitions: int
    runs: list[list[int]]
    group_of_shard: np.ndarray
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def groups(self) -> int:
        return len(self.runs)


@dataclass(frozen=True)
class Exchange:
    """A round's output: ``parts[sender][destination]``, tables or Ray references."""

    parts: list[list[Any]]

    def received(self, destination: int) -> list[Any]:
        """What task ``destination`` of the next round takes: its table from every
        sender (the transpose of the senders' outputs)."""
        return received(self.parts, destination)

    @property
    def destinations(self) -> int:
        return len(self.parts[0]) if self.parts else 0


@dataclass
class Outcome:
    """What ``summarize`` gets: each round's stats, the write's summary rows, the plan
    as computed from the corpus (whichever path ran) and the path."""

    stats: dict[str, list[dict]]
    summary: pa.Table
    plan: Plan
    path: str


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


def partitions_for(rows: int, rows_per_partition: int, least: int = 1) -> int:
    return max(least, math.ceil(rows / rows_per_partition))


def write_drops(inputs: StepInputs, shard: int, rows: pa.Table) -> pa.Table:
    """A dedup step's write: the shard's drops in ordinal order; summary (shard, rows)."""
    inputs.write_decision(shard, rows.select(DROPS_SCHEMA.names).sort_by("ordinal"))
    return pa.table({"shard": [shard], "rows": [rows.num_rows]}, schema=DROPS_SUMMARY)


DROPS_SUMMARY = pa.schema([("shard", pa.int64()), ("rows", pa.int64())])


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
