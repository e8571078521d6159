"""SIGKILL the driver of ``python -m pipeline curate`` half-way through the documents
pass; the same command again finishes only the missing shards, and the output is the
one an undisturbed run gives."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from tests.cluster_scripts.harness import (
    VENV_BIN,
    comparable_outputs,
    kill_session,
    pass_markers,
    ray_env,
    run_logged,
    write_tiny_run,
)
from tests.cluster_scripts.reference import tiny_reference

START_TIMEOUT_S = 240


def _kill_after_first_shard(command: list[str], output_dir, log_path) -> int:
    """Run ``command`` until one shard's documents pass is complete, then SIGKILL the
    driver (and the embedded Ray it started, which dies with it). Returns the shards
    that were complete at that moment."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, env=ray_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while pass_markers(output_dir) < 1:
            assert process.poll() is None, f"finished before the kill:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        kill_session(process.pid, grace_s=0.0)
    assert process.returncode == -signal.SIGKILL
    return pass_markers(output_dir)


@pytest.mark.slow
def test_sigkill_then_rerun_finishes_only_missing_shards(
    ray_session, demo_corpus, tmp_path, tmp_path_factory
):
    reference = tiny_reference(ray_session, demo_corpus, tmp_path_factory.getbasetemp())
    shards = reference["shards"]
    output_dir = tmp_path / "out"
    config = write_tiny_run(demo_corpus, tmp_path, output_dir)
    command = [str(VENV_BIN / "python"), "-m", "pipeline", "curate", str(config)]

    done = _kill_after_first_shard(command, output_dir, tmp_path / "killed.log")
    assert 1 <= done < shards, f"the kill should land mid-pass ({done} of {shards} done)"
    assert not (output_dir / "ledger.json").exists()

    rerun, _ = run_logged(command, timeout_s=400)
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    match = re.search(r"\((\d+) shards run, (\d+) already done\)", rerun.stdout)
    assert match, rerun.stdout[-2000:]
    assert (int(match[1]), int(match[2])) == (shards - done, done)
    assert comparable_outputs(output_dir) == reference["outputs"]
    leftovers = [p.name for p in output_dir.rglob("*") if ".tmp-" in p.name]
    assert all(name.startswith(".") for name in leftovers)  # readers skip hidden files
