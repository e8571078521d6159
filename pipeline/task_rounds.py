"""Rounds of Ray tasks for the global steps: the all-to-all exchange they share.

A round is one Ray task per argument tuple. Each task returns a small stats dict and
then ``returns`` Arrow tables, one per destination (``num_returns``), and each task of
the next round takes the matching table of every task before it: a shuffle with no
executor in between, whose objects are (senders x receivers). Tasks work on runs of
consecutive shards (``shard_groups``) and read the documents that survived the earlier
steps themselves (``Survivors``), so texts never travel.

The rounds are submitted by ``pipeline/ray_exec.py`` (``run_round``); this module holds
the pure helpers (``split_rows``, ``shard_groups``, tested without Ray) and what the
task bodies share. A step's task bodies are plain functions, so its rounds can be run
in one process.
"""

from __future__ import annotations

import ctypes
import functools
import posixpath
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.curate import GlobalStep, RunLayout, apply_steps
from pipeline.ray_exec import cluster_cpus
from pipeline.shards import Shard, read_json, write_json_atomic, write_parquet_atomic

TASKS_PER_CPU = 2  # tasks per round and CPU, at least: a slow task is not the round


@dataclass(frozen=True)
class Survivors:
    """How a task reads the documents left after the earlier global steps: put in the
    object store once, passed to each task by reference."""

    layout: RunLayout
    earlier: list[GlobalStep]
    fingerprints: list[str]

    def documents(self, shard: int, columns: list[str]) -> pa.Table:
        """The shard's documents left after the earlier steps, projected to ``columns``."""
        needed = list(dict.fromkeys(["id", *columns]))  # decisions are applied by id
        table = apply_steps(self.layout, shard, self.earlier, self.fingerprints, needed)[0]
        return table.select(columns)


def shard_runs(counts: Sequence[int], shards: Sequence[Shard], wanted: int):
    """(runs of shard indices, group of each shard index as an array): ``wanted`` runs
    of about equal document counts, and at least ``TASKS_PER_CPU`` per CPU of the
    cluster (never more than the shards)."""
    groups = max(wanted, TASKS_PER_CPU * cluster_cpus())
    index = [shard.index for shard in shards]
    runs = [[index[i] for i in run] for run in shard_groups(counts, groups)]
    group_of_shard = np.zeros(max(index, default=-1) + 1, dtype=np.int32)
    for group, run in enumerate(runs):
        group_of_shard[run] = group
    return runs, group_of_shard


def releases_freed_memory(task: Callable[..., tuple]) -> Callable[..., tuple]:
    """Hand the memory freed during ``task`` back to the OS when it ends: Arrow's pool
    (jemalloc) and the C heap (glibc ``malloc_trim``, where numpy's arrays and Python's
    large strings live).

    Workers live for the whole run and both allocators keep freed pages for reuse, so
    without this a worker's private memory creeps up with the number of tasks it ran
    and the largest documents it met, not with the size of any one task."""

    @functools.wraps(task)
    def run(*args, **kwargs) -> tuple:
        try:
            return task(*args, **kwargs)
        finally:
            release_freed_memory()

    return run


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


def release_freed_memory() -> None:
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def split_rows(table: pa.Table, destination: np.ndarray, count: int) -> list[pa.Table]:
    """``table``'s rows by destination (0..count-1), in row order within each: one sort,
    then slices (Ray serialises a slice as its rows only)."""
    order = np.argsort(destination, kind="stable")
    ordered = table.take(pa.array(order, pa.int64()))
    bounds = np.concatenate([[0], np.cumsum(np.bincount(destination, minlength=count))])
    return [ordered.slice(bounds[i], bounds[i + 1] - bounds[i]) for i in range(count)]


def by_shard(table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
    """(shard, its rows) for each shard in ``table``'s ``shard`` column, ascending; rows
    keep their order within a shard."""
    for (shard,), rows in by_key(table, ["shard"]):
        yield int(shard), rows


def by_key(table: pa.Table, columns: list[str]) -> Iterator[tuple[tuple, pa.Table]]:
    """(key, its rows) for each distinct value of ``columns``, keys ascending, rows in
    their order within a key: one stable sort, then slices."""
    if table.num_rows == 0:
        return
    ordered = table.take(pc.sort_indices(table, [(c, "ascending") for c in columns]))
    count = ordered.num_rows
    changes = np.zeros(count - 1, dtype=bool)
    for name in columns:
        column = ordered.column(name)
        changes |= pc.not_equal(column.slice(1), column.slice(0, count - 1)).to_numpy()
    starts = np.concatenate([[0], np.flatnonzero(changes) + 1]).tolist()
    for start, end in zip(starts, [*starts[1:], count], strict=True):
        rows = ordered.slice(start, end - start)
        yield tuple(rows.column(name)[0].as_py() for name in columns), rows


def shard_groups(documents: Sequence[int], groups: int) -> list[list[int]]:
    """Positions of the shards split into at most ``groups`` runs of consecutive shards
    with about equal document counts, none empty."""
    count = len(documents)
    groups = max(1, min(groups, count))
    if count == 0:
        return []
    cumulative = np.cumsum(np.asarray(documents, dtype=np.int64))
    bounds = [0]
    for g in range(1, groups):
        done = cumulative[bounds[-1] - 1] if bounds[-1] else 0
        share = (cumulative[-1] - done) / (groups - g + 1)  # of what is left, evenly
        cut = int(np.searchsorted(cumulative, done + share, side="left")) + 1
        cut = max(cut, bounds[-1] + 1)  # not empty
        cut = min(cut, count - (groups - g))  # a shard left for every later run
        bounds.append(cut)
    bounds.append(count)
    return [list(range(bounds[i], bounds[i + 1])) for i in range(groups)]


def received(outputs: Sequence[Sequence], destination: int) -> list:
    """What task ``destination`` of the next round takes: its table from every sender
    of the round before (the transpose of the senders' outputs)."""
    return [sent[destination] for sent in outputs]


def write_decisions(group: pa.Table, layout: RunLayout, step: str, fingerprint: str) -> pa.Table:
    """One shard's decision rows (a ``groupby("shard")`` group), written atomically."""
    shard = group.column("shard")[0].as_py()
    group = group.sort_by("ordinal")
    write_parquet_atomic(layout.filesystem, layout.decision(step, fingerprint, shard), group)
    return pa.table({"shard": [shard], "rows": [group.num_rows]})


def decision_done(layout: RunLayout, step: str, fingerprint: str) -> bool:
    marker = posixpath.join(layout.decision_dir(step, fingerprint), "_SUCCESS")
    return read_json(layout.filesystem, marker) is not None


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
