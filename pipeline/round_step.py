"""What a global curation step declares, and what its tasks get; ``round_driver.py`` runs it.

A global step (``exact_rounds.py``, ``minhash_rounds.py``, ``template_rounds.py``) is a
``RoundStep``: a per-shard map, ``Round``s of pure functions over Arrow tables with
where their rows go (``Route``: ``to_partition`` or ``to_shard_run``), a per-shard
write and a summary. Every task reads the same ``StepInputs``; the rows are cut by a
``Plan``; a round's output is an ``Exchange``; ``summarize`` gets an ``Outcome``. None
of this knows how the rounds run (Ray tasks or this process): that is the driver's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.curate import GlobalStep, RunLayout, apply_steps
from pipeline.shards import Shard, write_parquet_atomic
from pipeline.task_rounds import received
from stages.duplicates import DROPS_SCHEMA
from stages.minhash_lsh import partition_of

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
    ``finish``, where set, runs after the rounds with the driver in hand (its
    ``round_driver.StepRun``), for work whose rounds are not known in advance
    (MinHash's connected components)."""

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
    finish: Callable[[Any, Exchange], Exchange] | None = None
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


# --- helpers the declarations share -----------------------------------------------------


def partitions_for(rows: int, rows_per_partition: int, least: int = 1) -> int:
    return max(least, math.ceil(rows / rows_per_partition))


def write_drops(inputs: StepInputs, shard: int, rows: pa.Table) -> pa.Table:
    """A dedup step's write: the shard's drops in ordinal order; summary (shard, rows)."""
    inputs.write_decision(shard, rows.select(DROPS_SCHEMA.names).sort_by("ordinal"))
    return pa.table({"shard": [shard], "rows": [rows.num_rows]}, schema=DROPS_SUMMARY)


DROPS_SUMMARY = pa.schema([("shard", pa.int64()), ("rows", pa.int64())])
