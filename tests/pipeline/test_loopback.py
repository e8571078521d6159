"""An embedded Ray listens on loopback only (issue 15, F11: GCS, raylet, workers and the
dashboard and runtime-env agents listened on 0.0.0.0 / ::, with auth disabled).

A real ``curate`` runs embedded in a child process of its own session; once it has
finished (Ray still up, its actor pool and workers started), every listening TCP socket
held by a process of that session is read from /proc and must be on 127.0.0.1 / ::1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from bench.processes import descendants
from tests.cluster_scripts.harness import REPO, kill_session, session_pids
from tests.cluster_scripts.listening import Listener, listeners

DRIVER = textwrap.dedent(
    """
    import sys, time
    from pipeline.config import load_curate_config
    from pipeline.runner import run_curate

    result = run_curate(load_curate_config(sys.argv[1]))
    print("READY", result.ledger["identity_holds"], flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", False),
     ("::", False), ("192.0.2.2", False), ("::ffff:192.0.2.2", False)],
)  # fmt: skip
def test_the_checker_tells_loopback_from_the_rest(address, loopback):
    assert Listener(1, "x", address, 1).loopback is loopback


def test_an_embedded_run_listens_on_loopback_only(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for number in range(4):
        (data / f"doc-{number}.txt").write_text(f"Document {number} about rivers. " * 20)
    config = tmp_path / "curate.yaml"
    config.write_text(
        "inputs: [{path: data}]\noutput_dir: out\nshard_input_bytes: 1000\n"
        "stages: {extract: null, langid: null, heuristics: null, domain: null}\n"
        "ray: {num_cpus: 2}\n"
    )
    ray_tmp = tempfile.mkdtemp(prefix="rl-")  # short: Ray's socket paths have 107 bytes
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=ray_tmp, PIPELINE_PROGRESS="0", RAY_USAGE_STATS_ENABLED="0")
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = []
    try:
        for line in driver.stdout:
            output.append(line)
            if line.startswith("READY"):
                break
        assert output and output[-1].startswith("READY True"), "".join(output[-30:])
        found = listeners(session_pids(driver.pid))
        commands = " ".join(listener.command for listener in found)
        assert "gcs_server" in commands and "raylet" in commands, found  # not vacuous
        exposed = [listener for listener in found if not listener.loopback]
        print(f"\n{len(found)} listening sockets, {len(exposed)} not on loopback")
        assert not exposed, "\n".join(f"{x.address}:{x.port} {x.command}" for x in exposed)
    finally:
        kill_session(driver.pid)
        driver.wait(timeout=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_test_suites_ray_listens_on_loopback_only(ray_session):
    """The suite's own session Ray (tests/conftest.py) exposes nothing either: a test run
    on a developer's machine opens no port to the network."""
    ray_session.get(ray_session.remote(lambda: 1).remote())  # a worker has started
    found = listeners(descendants(os.getpid()))
    commands = " ".join(listener.command for listener in found)
    assert "gcs_server" in commands and "raylet" in commands, found  # not vacuous
    exposed = [listener for listener in found if not listener.loopback]
    assert not exposed, "\n".join(f"{x.address}:{x.port} {x.command}" for x in exposed)
