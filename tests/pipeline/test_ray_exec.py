"""``pipeline/ray_exec.py``: the task pool every curation, tokenize and mix pass runs on."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import ray_exec
from pipeline.task_rounds import by_key


class CountingWorker:
    """A worker that remembers how often its process built it."""

    built = 0

    def __init__(self, tag: str) -> None:
        CountingWorker.built += 1
        self.tag = tag
        self.calls = 0

    def __call__(self, item: int) -> dict:
        self.calls += 1
        return {
            "item": item,
            "pid": os.getpid(),
            "builds": CountingWorker.built,
            "calls": self.calls,
            "main_thread": threading.current_thread() is threading.main_thread(),
            "docs": item,
        }


def started_at(item: int) -> dict:
    started = time.monotonic_ns()
    time.sleep(0.05)
    return {"item": item, "started": started}


def test_workers_are_built_once_per_process_and_run_on_its_main_thread(ray_session) -> None:
    items = list(range(12))
    results = ray_exec.map_items("test", items, factory=lambda: CountingWorker("x"))
    assert [r["item"] for r in results] == items  # results in item order
    assert all(r["main_thread"] for r in results)  # signals (the extract limit) work there
    for pid in {r["pid"] for r in results}:
        mine = sorted((r for r in results if r["pid"] == pid), key=lambda r: r["calls"])
        assert {r["builds"] for r in mine} == {1}  # one worker for every item it ran
        assert [r["calls"] for r in mine] == list(range(1, len(mine) + 1))


def test_the_smallest_item_starts_first_then_the_largest(ray_session) -> None:
    sizes = [5, 90, 1, 40, 7]
    # Two CPUs a task on this two-CPU session: one at a time, so the order is visible.
    results = ray_exec.map_items("test", list(range(5)), function=started_at, cpus=2.0, sizes=sizes)
    order = [r["item"] for r in sorted(results, key=lambda r: r["started"])]
    assert order == [2, 1, 3, 4, 0]


@pytest.mark.parametrize(
    ("sizes", "slots", "order"),
    [([5, 90, 1, 40, 7], 2, [2, 1, 3, 4, 0]), ([5, 90, 1], 3, [1, 0, 2]),
     ([3, 3, 3], 1, [2, 0, 1]), (None, 1, [0, 1, 2])],
)  # fmt: skip
def test_submission_order(sizes, slots, order) -> None:
    assert ray_exec.submission_order(sizes, 3 if sizes is None else len(sizes), slots) == order


def test_progress_lines_count_documents(ray_session, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PIPELINE_PROGRESS", "1")
    monkeypatch.setattr(ray_exec, "PROGRESS_EVERY_S", 0.0)
    ray_exec.map_items("counting", [3, 4, 5], factory=lambda: CountingWorker("y"), count_key="docs")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("counting")]
    assert lines and "docs (" in lines[-1] and "/s)" in lines[-1]
    assert lines[-1].startswith("counting: 2/3 shards, ")  # the last shard's line is the log's


def test_a_failing_item_raises_in_the_driver(ray_session) -> None:
    with pytest.raises(Exception, match=r"ZeroDivisionError|division by zero"):
        ray_exec.map_items("test", [1, 0], function=lambda item: {"x": 1 / item})


def test_by_key_groups_rows_by_several_columns() -> None:
    table = pa.table({"phase": ["b", "a", "b", "a"], "window": [1, 2, 1, 0], "row": [0, 1, 2, 3]})
    groups = [
        (key, part.column("row").to_pylist()) for key, part in by_key(table, ["phase", "window"])
    ]
    assert groups == [(("a", 0), [3]), (("a", 2), [1]), (("b", 1), [0, 2])]
    assert list(by_key(table.slice(0, 0), ["phase"])) == []


def test_the_documents_pass_asks_for_what_its_stages_declare(monkeypatch) -> None:
    """Issue 19: the ``Resources`` stages declare size the tasks (the most of any enabled
    stage, at least a CPU)."""
    from pipeline.config import CurateConfig
    from pipeline.runner import documents_pass_resources
    from stages import STAGES
    from stages.base import Resources

    def config(**stages) -> CurateConfig:
        document = {"inputs": [{"path": "x"}], "output_dir": "/tmp/out", "stages": stages}
        return CurateConfig.model_validate(document)

    assert documents_pass_resources(config()) == (1.0, None)
    monkeypatch.setattr(STAGES["langid"], "resources", Resources(cpus=2.0, memory_bytes=123))
    assert documents_pass_resources(config()) == (2.0, 123)
    assert documents_pass_resources(config(langid=None)) == (1.0, None)


LEAN_DRIVER = """
import sys
from pipeline import ray_exec
ray_exec.init_ray(None, 1, executor="ray")  # Ray itself is under test: not in-process
import ray
def pool():
    import pyarrow
    return pyarrow.default_memory_pool().backend_name
print("READY", ray.get(ray.remote(pool).remote()), flush=True)
sys.stdin.read()  # held until the test has listed the processes
"""


def _embedded_ray_commands(tmp_path, **env: str) -> str:
    """Start an embedded Ray in a child process of its own session and return the
    command lines of every process of that session once a task has run."""
    import subprocess
    import sys
    import tempfile

    from tests.cluster_scripts.harness import REPO, kill_session, session_pids

    ray_tmp = tempfile.mkdtemp(prefix="rl-")  # short: Ray's socket paths have 107 bytes
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PIPELINE_RAY"))}
    driver = subprocess.Popen(
        [sys.executable, "-c", LEAN_DRIVER],
        cwd=REPO,
        env={**clean, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0", **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output = []
        for line in driver.stdout:
            output.append(line)
            if line.startswith("READY"):
                break
        assert output and output[-1].startswith("READY"), "".join(output[-30:])
        commands = [output[-1]]
        for pid in session_pids(driver.pid):
            with contextlib.suppress(OSError):
                commands.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "))
        return "\n".join(commands)
    finally:
        kill_session(driver.pid)
        driver.wait(timeout=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_an_embedded_ray_starts_no_dashboard_and_no_autoscaler(tmp_path) -> None:
    """Issue 18: Ray 2.60 starts a dashboard process even with include_dashboard=False,
    and an autoscaler monitor, neither of which an embedded run uses (about 200 MiB);
    the lean start leaves both out, and ``PIPELINE_RAY_FULL_START=1`` brings them back
    (which also shows the check below can fail)."""
    lean = _embedded_ray_commands(tmp_path)
    assert "gcs_server" in lean and "raylet" in lean  # not vacuous: Ray is up
    assert "READY system" in lean  # the workers' Arrow pool: what a shard freed goes back
    assert "dashboard/agent.py" in lean and "--minimal" in lean  # the agent stays, minimal
    assert "dashboard/dashboard.py" not in lean
    assert "autoscaler/_private/monitor.py" not in lean
    full = _embedded_ray_commands(tmp_path, PIPELINE_RAY_FULL_START="1")
    assert "dashboard/dashboard.py" in full
    assert "autoscaler/_private/monitor.py" in full


def test_a_task_hands_back_what_its_item_freed_even_when_it_fails(monkeypatch) -> None:
    """The documents and tokenize passes' task bodies release freed memory after every
    item (the worker lives for the whole run; measured: 1,256 -> 1,199 MiB at the 16x
    bench corpus's peak), also after an item that raised, and before a later run's
    worker is built over the models of the one before."""
    from pipeline import task_rounds

    releases: list[str] = []
    monkeypatch.setattr(task_rounds, "release_freed_memory", lambda: releases.append("x"))
    monkeypatch.setattr(ray_exec, "_PROCESS_WORKERS", {})

    def failing(item: int) -> dict:
        raise ValueError(item)

    ray_exec._call_worker("first", lambda: CountingWorker("a"), 1)
    ray_exec._call_worker("first", lambda: CountingWorker("a"), 2)
    assert len(releases) == 2
    ray_exec._call_worker("second", lambda: CountingWorker("b"), 3)
    assert len(releases) == 4  # the first run's worker dropped and released, then the item
    with pytest.raises(ValueError):
        ray_exec._call_worker("third", lambda: failing, 4)
    assert len(releases) == 6
    with pytest.raises(ValueError):
        ray_exec._call_plain(failing, 5)
    assert len(releases) == 7


EXIT_DRIVER = """
import atexit, sys, time

slept = []
real_sleep = time.sleep
def recording_sleep(seconds):
    slept.append((sys._getframe(1).f_globals.get("__name__"), seconds))
    real_sleep(seconds)
time.sleep = recording_sleep

def report():  # registered first, so it runs after every other exit handler
    import ray
    ray_sleeps = [s for name, s in slept if name == "ray._private.worker"]
    print("AT EXIT", ray.is_initialized(), ray_sleeps, flush=True)
atexit.register(report)

from pipeline import ray_exec
ray_exec.init_ray(None, num_cpus=1, executor="ray")  # Ray is under test
if sys.argv[1] == "without":
    atexit.unregister(ray_exec.shutdown_embedded_ray)
import ray
assert ray.get(ray.remote(lambda: 1).remote()) == 1
"""


@pytest.mark.parametrize("ours", [True, False])
def test_an_embedded_ray_is_shut_down_at_exit_without_rays_half_second_sleep(ours) -> None:
    """Issue 18: Ray's own exit handler sleeps 0.5 s before it stops the node, at the end
    of every command; ``init_ray`` registers ``shutdown_embedded_ray``, which runs first
    and stops the node without it. Without ours (the control), Ray's sleep is seen."""
    import subprocess
    import sys
    import tempfile

    from tests.cluster_scripts.harness import REPO

    ray_tmp = tempfile.mkdtemp(prefix="rx-")  # short: Ray's socket paths have 107 bytes
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PIPELINE_RAY"))}
    try:
        done = subprocess.run(
            [sys.executable, "-c", EXIT_DRIVER, "with" if ours else "without"],
            cwd=REPO,
            env={**clean, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("AT EXIT")]
    assert line == ("AT EXIT False []" if ours else "AT EXIT False [0.5]")
