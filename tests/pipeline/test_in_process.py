"""``ray.executor`` (issue 18): an embedded one-CPU run executes in the driver process,
without Ray; ``executor: ray`` keeps Ray at one CPU. The outputs against Ray's, byte for
byte and across a resume both ways, are in ``tests/pipeline/test_run_settings.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import ray_exec, runner
from pipeline.config import ConfigError, load_curate_config
from tests.cluster_scripts.harness import REPO

# Runs one curate command through the CLI in a fresh process, then reports what Ray
# left behind in that process: whether Ray was imported and initialized, and the names
# of the process's descendants (an embedded Ray's raylet and GCS are its children and
# live until the process exits).
_PROBE = """
import json, os, sys
from bench.processes import descendants
from pipeline import cli

code = cli.main(["curate", sys.argv[1]])

def children(pid):
    names = []
    for child in descendants(pid)[1:]:
        try:
            names.append(open(f"/proc/{child}/comm").read().strip())
        except OSError:
            continue
    return names

ray = sys.modules.get("ray")
print(json.dumps({
    "code": code,
    "ray_imported": ray is not None,
    "ray_initialized": bool(ray and ray.is_initialized()),
    "children": children(os.getpid()),
}))
"""


def _articles(folder: Path, count: int) -> None:
    folder.mkdir()
    for number in range(count):
        (folder / f"article-{number}.txt").write_text(
            f"Article {number} tells how the river town rebuilt its old bridge. " * 12
        )


def _config(path: Path, data: Path, ray: str) -> Path:
    path.write_text(
        f"inputs: [{{path: {data}}}]\noutput_dir: {path.stem}-out\n"
        "stages: {langid: null, heuristics: null, domain: null}\n"
        f"ray: {ray}\n"
    )
    return path


def _probe(config: Path) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", PIPELINE_PROGRESS="0")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(config)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _documents(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted((folder / "docs").iterdir()))


def test_one_cpu_embedded_starts_no_ray_and_executor_ray_does(tmp_path):
    _articles(tmp_path / "data", 4)
    inside, log = _probe(_config(tmp_path / "auto.yaml", tmp_path / "data", "{num_cpus: 1}"))
    assert inside["code"] == 0
    assert "ray: not started; the run executes in this process" in log
    assert not inside["ray_imported"]  # not even imported (about 140 MiB and 1 CPU-s)
    assert not inside["ray_initialized"]
    assert not {"raylet", "gcs_server"} & set(inside["children"]), inside["children"]

    # The control: the same run with executor: ray at one CPU starts an embedded Ray.
    on_ray, log = _probe(
        _config(tmp_path / "ray.yaml", tmp_path / "data", "{num_cpus: 1, executor: ray}")
    )
    assert on_ray["code"] == 0
    assert "started a local Ray (1.0 CPUs" in log
    assert on_ray["ray_initialized"]
    assert {"raylet", "gcs_server"} <= set(on_ray["children"]), on_ray["children"]
    assert _documents(tmp_path / "auto-out") == _documents(tmp_path / "ray-out")


@pytest.mark.parametrize(
    ("executor", "address", "num_cpus", "expected"),
    [("auto", None, 1, True), ("auto", None, 2, False), ("auto", None, None, False),
     ("auto", "127.0.0.1:6379", 1, False), ("ray", None, 1, False),
     ("in_process", None, 2, True), ("in_process", "127.0.0.1:6379", None, True)],
)  # fmt: skip
def test_the_executor_setting(monkeypatch, executor, address, num_cpus, expected):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_exec.wants_in_process(executor, address, num_cpus) is expected


def test_ray_address_in_the_environment_means_ray_for_auto(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert not ray_exec.wants_in_process("auto", None, 1)


def test_an_unknown_executor_is_a_config_error(tmp_path):
    _articles(tmp_path / "data", 1)
    config = _config(tmp_path / "bad.yaml", tmp_path / "data", "{executor: threads}")
    with pytest.raises(ConfigError, match=r"ray\.executor"):
        load_curate_config(config)


def _divide(item: int) -> dict:
    return {"x": 1 / item}


def _raised(function) -> BaseException:
    with pytest.raises(ZeroDivisionError) as caught:
        function()
    return caught.value


def test_a_failing_item_is_raised_as_on_ray(ray_session):
    """Both paths raise an exception that ``except ZeroDivisionError`` catches, with the
    item's message (Ray's ``RayTaskError`` subclasses the item's exception); only the
    Ray one is a Ray error, which ``runner._with_retries`` runs again (a lost node can
    surface as one); in-process there is no node to lose and it is raised at once."""

    def run() -> list[dict]:
        return ray_exec.map_items("test", [1, 0, 2], function=_divide)

    on_ray = _raised(run)
    assert ray_exec.is_ray_error(on_ray)
    with ray_exec.executor_scope():
        ray_exec.init_ray(None, 1)
        assert ray_exec.in_process()
        inside = _raised(run)
        assert not ray_exec.is_ray_error(inside)
        assert str(inside) in str(on_ray)  # "division by zero"

        attempts = []

        def failing_pass() -> None:
            attempts.append(1)
            run()

        with pytest.raises(ZeroDivisionError):
            runner._with_retries("documents pass", failing_pass)
        assert len(attempts) == 1
    assert not ray_exec.in_process()  # the scope gives the session back to Ray


def test_in_process_runs_every_item_once_in_order_with_one_worker():
    with ray_exec.executor_scope():
        ray_exec.init_ray(None, 1)
        built = []

        def factory():
            built.append(1)
            return lambda item: {"item": item, "pid": os.getpid()}

        results = ray_exec.map_items("test", [0, 1, 2, 3], factory=factory, sizes=[5, 90, 1, 40])
        assert [r["item"] for r in results] == [0, 1, 2, 3]
        assert {r["pid"] for r in results} == {os.getpid()}
        assert len(built) == 1
        assert not ray_exec._PROCESS_WORKERS  # dropped when the pass ends
        stats, outputs = ray_exec.run_round(
            "step", "round", lambda a, b: ({"n": a + b}, a, b), [(1, 2), (3, 4)], 2
        )
        assert stats == [{"n": 3}, {"n": 7}] and outputs == [[1, 2], [3, 4]]
        assert ray_exec.get(ray_exec.put(outputs)) is outputs
        assert ray_exec.cluster_cpus() == 1


def test_in_process_progress_lines_are_the_ray_paths(monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_PROGRESS", "1")
    monkeypatch.setattr(ray_exec, "PROGRESS_EVERY_S", 0.0)
    with ray_exec.executor_scope():
        ray_exec.init_ray(None, 1)
        ray_exec.map_items(
            "counting", [3, 4, 5], function=lambda item: {"docs": item}, count_key="docs"
        )
        ray_exec.run_round("exact_dedup", "map", lambda n: {"rows": n}, [(2,), (3,)], 0)
    lines = capsys.readouterr().out.splitlines()
    counting = [line for line in lines if line.startswith("counting")]
    assert counting[0].startswith("counting: 1/3 shards, ") and "1 running" in counting[0]
    assert counting[-1].startswith("counting: 2/3 shards, ") and "docs (" in counting[-1]
    assert any(line.startswith("exact_dedup map: 2 tasks, rows 5 (") for line in lines)
