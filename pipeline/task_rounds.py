"""The pure helpers of an all-to-all exchange of Arrow tables between rounds of tasks.

A round is one task per argument tuple. Each task returns a small stats dict and then
one Arrow table per destination (``split_rows``), and each task of the next round takes
the matching table of every task before it (``received``): a shuffle with no executor
in between, whose objects are (senders x receivers). Tasks work on runs of consecutive
shards (``shard_groups``); ``by_key`` / ``by_shard`` cut what a task received into its
groups, and ``releases_freed_memory`` hands a task's freed memory back when it ends.

Used by the global steps' driver (``pipeline/round_driver.py``) and the mix's pack
(``pipeline/token_runner.py``); the rounds themselves are submitted by
``pipeline/ray_exec.py`` (``run_round``). Nothing here imports Ray or the rest of the
pipeline, so all of it is tested in one process.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
