"""SIGKILL the driver of ``python -m pipeline curate`` half-way through the documents
pass; the same command again finishes only the missing shards, and the output is the
one an undisturbed run gives."""

from __future__ import annotations

import re

import pytest

from tests.cluster_scripts.harness import (
    VENV_BIN,
    comparable_outputs,
    pass_markers,
    run_logged,
    sigkill_when,
    write_tiny_run,
)
from tests.cluster_scripts.reference import tiny_reference


@pytest.mark.slow
def test_sigkill_then_rerun_finishes_only_missing_shards(
    ray_session, demo_corpus, tmp_path, tmp_path_factory
):
    reference = tiny_reference(ray_session, demo_corpus, tmp_path_factory.getbasetemp())
    shards = reference["shards"]
    output_dir = tmp_path / "out"
    config = write_tiny_run(demo_corpus, tmp_path, output_dir)
    command = [str(VENV_BIN / "python"), "-m", "pipeline", "curate", str(config)]

    sigkill_when(command, lambda: pass_markers(output_dir) >= 1, tmp_path / "killed.log")
    done = pass_markers(output_dir)
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
