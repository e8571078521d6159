"""The one module of the curation, tokenize and mix commands that talks to Ray.

Everything the commands distribute is a plain function of picklable arguments, run
here as a Ray **task**, never through Ray Data:

* ``map_items`` runs one function per item (a shard) on a bounded number of tasks in
  flight, largest item first: every CPU stays busy and the pass ends within about one
  item's time of its last start, with a live progress line (items, documents, /s).
  Work that loads models (the documents pass, tokenization) passes a *worker factory*:
  each Ray worker process builds it once on its first item and keeps it, so models load
  once per process, like an actor pool, without the actors' extra processes.
* ``run_round`` runs one all-to-all exchange round (the global steps' driver,
  ``pipeline/round_driver.py``, and the mix's pack): a task per argument tuple, each
  returning a stats dict and then one table per destination, handed by reference to
  the next round.

Why tasks rather than Ray Data or actors (issue 18, measured in bench/RESULTS.md):
a task runs on its worker's main thread, so the extract stage's per-page limit is a
plain CPU-time signal; the same worker processes serve the documents pass, every
global round and the finalize pass, so memory stays flat; there is no executor
thread, no helper actors and no ``ray.data`` import (about 140 MiB a process); and a
task lost with its node is retried by Ray (``max_retries``) and rebuilt from lineage.

**In-process executor** (``ray.executor``, issue 18): an embedded run on one CPU gains
nothing from Ray and pays its fixed cost (about 6 CPU-seconds, 3 s of start and 800 MiB
of daemons and a worker before any work). There ``init_ray`` starts no Ray, and the
functions below run the same bodies in this process, in the order the Ray path submits
them at one slot: ``map_items`` builds the worker once and calls it per item on the
main thread (the extract limit's signal works there), ``run_round`` calls the round's
function per argument tuple, ``put``/``get`` pass values through. The outputs are the
same bytes (``tests/pipeline/test_run_settings.py``); callers do not change.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

log = logging.getLogger("pipeline")

LOOPBACK = "127.0.0.1"
EMBEDDED_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
TASK_RETRIES = 3  # a task whose worker or node dies runs again, up to this often
PROGRESS_EVERY_S = 10.0  # a progress line at most this often when stdout is no terminal


EXECUTORS = ("auto", "ray", "in_process")
"""``ray.executor`` values: ``auto`` runs in this process when the run is embedded (no
address, no $RAY_ADDRESS) on one CPU (``ray.num_cpus: 1``), on Ray otherwise."""

_in_process = False
"""Whether the current command runs in this process (set by ``init_ray``; restored by
``executor_scope`` when a command ends)."""


def in_process() -> bool:
    """Whether the passes run in this process rather than as Ray tasks."""
    return _in_process


def wants_in_process(executor: str, address: str | None, num_cpus: int | None) -> bool:
    """The ``ray.executor`` decision: ``auto`` is in-process for an embedded run on one
    CPU, where Ray's daemons and worker would cost more than the work they spread."""
    if executor not in EXECUTORS:
        raise ValueError(f"ray.executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    if executor != "auto":
        return executor == "in_process"
    embedded = not (address or os.environ.get("RAY_ADDRESS"))
    return embedded and num_cpus == 1


@contextlib.contextmanager
def executor_scope() -> Iterator[None]:
    """Restore the executor a command found when it ends: the demo and the tests run
    several commands in one process, and a command that ran in-process must not leave
    the next caller of ``map_items`` off its Ray session."""
    global _in_process
    saved = _in_process
    try:
        yield
    finally:
        _in_process = saved


def is_ray_error(exc: BaseException) -> bool:
    """Whether ``exc`` came through Ray (a lost task, worker or node, or an error in a
    task, which a node dying under a running task can also surface as). Never in an
    in-process run: there is no node to lose, so its errors are raised as they are,
    without the retries a lost node asks for."""
    if _in_process:
        return False
    from ray.exceptions import RayError

    return isinstance(exc, RayError)


def progress_enabled() -> bool:
    return os.environ.get("PIPELINE_PROGRESS", "1") != "0"


def _loopback_only() -> None:
    """Keep an embedded Ray on 127.0.0.1. Ray's servers bind to loopback only when the
    node address is 127.0.0.1, and Ray swaps 127.0.0.1 for the machine's address unless
    multi-node mode is off: its flag is read from the environment when ``ray`` is first
    imported (so the driver's copy is set here too) and by every process Ray starts."""
    from ray._private import ray_constants

    os.environ.update(EMBEDDED_LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False


def init_ray(
    address: str | None,
    num_cpus: int | None = None,
    object_store_memory_bytes: int | None = None,
    executor: str = "auto",
) -> None:
    """Join the cluster at ``address`` (or $RAY_ADDRESS); otherwise start Ray in-process.
    Every command that uses Ray starts it here; a second call in the same process (the
    demo runs every command in one) reuses the session. With ``executor`` in-process
    (``wants_in_process``) no Ray starts: the command runs in this process."""
    global _in_process
    _in_process = wants_in_process(executor, address, num_cpus)
    if _in_process:
        log.info("ray: not started; the run executes in this process (ray.executor: %s)", executor)
        return
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's own INFO lines (start-up) only at the user's level: the CLI sets WARNING
    # unless -v; the pipeline's one line per pass stays.
    ray_level = max(logging.INFO, logging.getLogger().getEffectiveLevel())
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        # Under `ray job submit` the job's runtime env (working dir) applies; add nothing.
        ray.init(address=address, logging_level=ray_level)
        log.info("ray: joined the Ray cluster at %s", address)
        return
    # A token file left by another Ray must not turn auth on for an embedded session,
    # and address="local" keeps a cluster someone started on this machine from being
    # joined by accident (--address / RAY_ADDRESS do that).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Workers inherit the driver's environment: Arrow's default pool (mimalloc) keeps
    # what a shard freed, about 25 MiB a worker more at a run's peak than the system
    # allocator, measured on the crawl (issue 18). Set the variable to choose another.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", EMBEDDED_ARROW_MEMORY_POOL)
    _loopback_only()
    with _lean_local_node() as skipped:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            object_store_memory=object_store_memory_bytes or EMBEDDED_OBJECT_STORE_BYTES,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            logging_level=ray_level,
        )
    atexit.register(shutdown_embedded_ray)  # runs before Ray's own handler (last in, first out)
    log.info(
        "ray: started a local Ray (%s CPUs%s)",
        ray.cluster_resources().get("CPU"),
        f"; not started: {', '.join(skipped)}" if skipped else "",
    )


def shutdown_embedded_ray() -> None:
    """Stop the embedded Ray when the command's process exits, before Ray's own exit
    handler would: that one (``ray.shutdown(_exiting_interpreter=True)``) first sleeps
    0.5 s so that worker output still on its way reaches the console, a fixed half
    second at the end of every command (issue 18: measured 1.5 s from the last line to
    the process's end, 1.0 s without the sleep). Every task of a command has returned
    its result by then; a line a worker wrote in its last half second may miss the
    console (it stays in Ray's session log folder). Registered by ``init_ray`` for an
    embedded session only; a joined cluster keeps Ray's handler, which only
    disconnects."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


EMBEDDED_ARROW_MEMORY_POOL = "system"

FULL_RAY_START_ENV = "PIPELINE_RAY_FULL_START"
"""Set to 1 to start an embedded Ray with every daemon ``ray.init`` starts (the dashboard
process and the autoscaler monitor included), e.g. to look at ``ray status``."""


@contextlib.contextmanager
def _lean_local_node() -> Iterator[list[str]]:
    """While ``ray.init`` starts an embedded node, leave out the two head daemons a
    single-machine run never uses, and start the dashboard agent without its HTTP side
    (issue 18: 200 MiB and about 1.7 CPU-seconds of start-up on this machine).

    * The dashboard process: Ray 2.60 starts it even with ``include_dashboard=False``
      (``Node.start_head_processes`` always calls ``start_api_server``; it then loads
      only ``UsageStatsHead``, which does nothing with usage stats off). 115 MiB.
    * The autoscaler monitor: a fixed local node has nothing to scale. ``RayParams``
      has ``no_monitor`` (``ray start --no-monitor``) but ``ray.init`` does not pass it.
      81 MiB.
    * The dashboard agent is started ``--minimal`` (what Ray does when its dashboard
      packages are missing): no HTTP server, and the driver does not import the
      dashboard's aiohttp stack to decide it (24 MiB in the driver).

    ``ray.init`` has no public switch for any of them, so the Node methods are swapped
    for this one call and restored after it; a Ray without them (another version)
    starts as usual. The raylet, GCS, the runtime-env agent, the dashboard agent
    (metrics, node reporting) and the log monitor (worker output to the console) stay.
    Yields the names of what was left out."""
    skipped: list[str] = []
    if os.environ.get(FULL_RAY_START_ENV, "0") == "1":
        yield skipped
        return
    try:
        from ray._private import node as ray_node
        from ray._private import utils as ray_utils
    except ImportError:  # pragma: no cover - another Ray layout: the usual start
        yield skipped
        return
    replaced = [
        (cls, name, replacement, label)
        for cls, name, replacement, label in (
            (ray_node.Node, "start_api_server", _no_api_server, "dashboard"),
            (ray_node.Node, "start_monitor", _no_monitor, "autoscaler monitor"),
            (ray_utils, "get_dashboard_dependency_error", _minimal_dashboard_agent, None),
        )
        if hasattr(cls, name)
    ]
    saved = [(cls, name, getattr(cls, name)) for cls, name, _, _ in replaced]
    for cls, name, replacement, label in replaced:
        setattr(cls, name, replacement)
        if label:
            skipped.append(label)
    try:
        yield skipped
    finally:
        for cls, name, original in saved:
            setattr(cls, name, original)


# The stand-ins take any arguments: the signatures of the methods they replace differ
# across the Ray versions pyproject.toml accepts.
def _no_api_server(node: Any, *args: Any, **kwargs: Any) -> None:
    node._webui_url = None  # what Ray records when the dashboard failed to start


def _no_monitor(node: Any, *args: Any, **kwargs: Any) -> None:
    return None


def _minimal_dashboard_agent(*args: Any, **kwargs: Any) -> ImportError:
    return ImportError("embedded run: the dashboard agent starts --minimal")


EMBEDDED_OBJECT_STORE_BYTES = 512 * 1024**2
"""The object store of an embedded run holds shard summaries and the global rounds'
small tables (digests, signatures, drops), never documents: 512 MiB, where Ray's
default takes 30% of the machine's memory (7 GiB here) of /dev/shm. Spilling to disk
covers a larger exchange; ``ray.object_store_memory_bytes`` sets it."""


def cluster_cpus() -> int:
    if _in_process:
        return 1
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def put(value: Any) -> Any:
    """Put ``value`` in the object store once; tasks take the reference (in-process: the
    value itself)."""
    if _in_process:
        return value
    import ray

    return ray.put(value)


def get(refs: Any) -> Any:
    if _in_process:
        return refs
    import ray

    return ray.get(refs)


@functools.cache
def _remote_function(function: Callable, cpus: float, returns: int, memory: int | None = None):
    import ray

    options: dict[str, Any] = {"memory": memory} if memory else {}
    return ray.remote(
        num_cpus=cpus,
        num_returns=returns,
        max_retries=TASK_RETRIES,
        retry_exceptions=False,
        **options,
    )(function)


# --- map over items -------------------------------------------------------------------

_PROCESS_WORKERS: dict[str, Any] = {}
"""The worker a process built for the current ``map_items`` run (at most one kept)."""


def _call_worker(key: str, factory: Callable[[], Callable[[Any], dict]], item: Any) -> dict:
    """Task body: build the run's worker once per process, then run it on ``item``.
    What the item freed goes back to the OS when it ends (``release_freed_memory``):
    a worker lives for the whole run, and a pass after this one (tokenize after curate)
    would otherwise start from the high-water mark of the largest shard it met."""
    from pipeline.task_rounds import release_freed_memory

    worker = _PROCESS_WORKERS.get(key)
    if worker is None:
        if _PROCESS_WORKERS:  # a previous run's models: released before loading ours
            _PROCESS_WORKERS.clear()
            release_freed_memory()
        worker = _PROCESS_WORKERS[key] = factory()
    try:
        return worker(item)
    finally:
        release_freed_memory()


def _call_plain(function: Callable[[Any], dict], item: Any) -> dict:
    from pipeline.task_rounds import release_freed_memory

    try:
        return function(item)
    finally:
        release_freed_memory()


class Progress:
    """One live line per pass: items done, documents and documents/s. On a terminal the
    line is rewritten in place; otherwise (a log, CI) a line at most every
    ``PROGRESS_EVERY_S``; nothing when ``PIPELINE_PROGRESS=0``."""

    def __init__(
        self, label: str, total: int, count_key: str | None, count_label: str | None = None
    ) -> None:
        self.label, self.total, self.count_key = label, total, count_key
        self.count_label = count_label or count_key
        self.done = self.count = 0
        self.started = self.last = time.monotonic()
        self.enabled = progress_enabled()
        self.live = self.enabled and sys.stdout.isatty()

    def advance(self, result: dict, running: int) -> None:
        self.done += 1
        if self.count_key is not None:
            self.count += int(result.get(self.count_key, 0))
        now = time.monotonic()
        if self.live:
            print(f"\r{self.line(running)}", end="", flush=True)
        elif self.enabled and now - self.last >= PROGRESS_EVERY_S and self.done < self.total:
            print(self.line(running), flush=True)
            self.last = now

    def line(self, running: int) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        text = f"{self.label}: {self.done}/{self.total} shards"
        if self.count_key is not None:
            text += f", {self.count:,} {self.count_label} ({self.count / seconds:,.1f}/s)"
        return text + (f", {running} running" if running else "") + f", {seconds:.0f} s"

    def close(self) -> None:
        if self.live:
            print("\r\033[K", end="", flush=True)


def map_items(
    label: str,
    items: Sequence[Any],
    *,
    factory: Callable[[], Callable[[Any], dict]] | None = None,
    function: Callable[[Any], dict] | None = None,
    cpus: float = 1.0,
    memory: int | None = None,
    sizes: Sequence[int] | None = None,
    count_key: str | None = None,
    count_label: str | None = None,
) -> list[dict]:
    """Run ``factory()(item)`` (a worker built once per process) or ``function(item)``
    for every item, as Ray tasks of ``cpus`` each; returns the results in item order. At
    most as many tasks are in flight as the cluster has slots, taken largest ``sizes``
    first, so no long item starts last, except the smallest, which starts first: the
    first output (or the first failure) of a long pass shows as soon as one small item
    is done, at the cost of one small item out of its place. The factory or function (a
    ``functools.partial`` carries its other arguments) goes to the object store once.
    ``memory`` (bytes) reserves Ray's memory resource per task. In-process: the same
    bodies, one item at a time in the same order as one slot (``_map_in_process``)."""
    if not items:
        return []
    if (factory is None) == (function is None):
        raise ValueError("map_items needs exactly one of factory and function")
    if _in_process:
        return _map_in_process(label, items, factory, function, sizes, count_key, count_label)
    import ray

    if factory is not None:
        body, shared = _call_worker, (uuid.uuid4().hex, ray.put(factory))
    else:
        body, shared = _call_plain, (ray.put(function),)
    remote = _remote_function(body, cpus, 1, memory)
    slots = max(1, int(cluster_cpus() // cpus))
    order = submission_order(sizes, len(items), slots)
    progress = Progress(label, len(items), count_key, count_label)
    results: list[dict | None] = [None] * len(items)
    running: dict[Any, int] = {}
    queue = iter(order)
    try:
        for position in queue:
            running[remote.remote(*shared, items[position])] = position
            if len(running) >= slots:
                break
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            position = running.pop(ready[0])
            results[position] = ray.get(ready[0])
            next_position = next(queue, None)
            if next_position is not None:
                running[remote.remote(*shared, items[next_position])] = next_position
            progress.advance(results[position], len(running))
    finally:
        # Tasks still running are left to finish or to die with the session: cancelling
        # them here raced their completion in Ray 2.60's core worker (a fatal
        # "Tried to complete task that was not pending" on Ctrl-C), and every task's
        # output is idempotent, so a retried pass may safely meet one still running.
        progress.close()
    return results  # type: ignore[return-value]


def _map_in_process(
    label: str,
    items: Sequence[Any],
    factory: Callable[[], Callable[[Any], dict]] | None,
    function: Callable[[Any], dict] | None,
    sizes: Sequence[int] | None,
    count_key: str | None,
    count_label: str | None,
) -> list[dict]:
    """``map_items`` in this process: the task bodies (``_call_worker``, ``_call_plain``,
    so memory is handed back after each item as on a worker), in the order one Ray slot
    runs them, with the same progress line. The worker is dropped when the pass ends:
    the driver goes on to the global rounds, where a Ray worker would idle with it.
    An item's exception is raised as it is (the Ray path raises a ``RayTaskError`` that
    is also an instance of the item's exception class, with the same message)."""
    from pipeline.task_rounds import release_freed_memory

    key = uuid.uuid4().hex
    progress = Progress(label, len(items), count_key, count_label)
    results: list[dict | None] = [None] * len(items)
    order = submission_order(sizes, len(items), 1)
    try:
        for done, position in enumerate(order, start=1):
            if factory is not None:
                results[position] = _call_worker(key, factory, items[position])
            else:
                results[position] = _call_plain(function, items[position])  # type: ignore[arg-type]
            progress.advance(results[position], 1 if done < len(order) else 0)  # type: ignore[arg-type]
    finally:
        progress.close()
        if _PROCESS_WORKERS.pop(key, None) is not None:
            release_freed_memory()
    return results  # type: ignore[return-value]


def submission_order(sizes: Sequence[int] | None, count: int, slots: int) -> list[int]:
    """Item positions in the order ``map_items`` submits them: largest first (a stable
    sort, so equal sizes keep item order), with the smallest moved to the front when
    there are more items than slots (with fewer, every item starts at once anyway)."""
    order = sorted(range(count), key=lambda i: -(sizes[i] if sizes else 0))
    if sizes and count > slots:
        order.insert(0, order.pop())
    return order


# --- exchange rounds ------------------------------------------------------------------


def run_round(
    step: str, name: str, function: Callable, calls: list[tuple], returns: int, cpus: float = 1.0
) -> tuple[list, list]:
    """Submit one round (a task per argument tuple, returning its stats dict and then
    ``returns`` tables; with none, the stats dict alone) and wait for the stats: (stats
    per task, output references per task). A line per round when progress is on.
    In-process: the function called per argument tuple, its tables as the "references"."""
    started = time.perf_counter()
    if _in_process:
        outputs = [function(*args) for args in calls]
        refs = [list(out) if returns else [out] for out in outputs]
        stats = [task[0] for task in refs]
    else:
        import ray

        remote = _remote_function(function, cpus, returns + 1)
        refs = [remote.remote(*args) for args in calls]
        refs = [task if isinstance(task, list) else [task] for task in refs]  # stats only
        stats = ray.get([task[0] for task in refs])
    if progress_enabled():
        totals: dict[str, int] = {}
        for entry in stats:
            for key, value in entry.items():
                totals[key] = totals.get(key, 0) + value
        counts = ", ".join(f"{key} {value:,}" for key, value in totals.items())
        print(
            f"{step} {name}: {len(calls)} tasks, {counts} ({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
    return stats, [task[1:] for task in refs]
