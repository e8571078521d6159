"""Worker nodes killed in the middle of curation (the documents pass, the exact-dedup
rounds, the MinHash step) do not change the result: the outputs are byte-identical to
an undisturbed run and the accounting identity holds. The run under test sends every
global round to the workers as tasks (``driver_round_max_bytes: 0``); the undisturbed
reference decides its small rounds in the driver."""

from __future__ import annotations

import json

import pytest

from tests.cluster_scripts.harness import (
    VENV_BIN,
    comparable_outputs,
    run_logged,
    write_tiny_run,
)
from tests.cluster_scripts.reference import tiny_reference


@pytest.mark.slow
def test_losing_worker_nodes_mid_run_changes_nothing(
    ray_session, demo_corpus, tmp_path, tmp_path_factory
):
    reference = tiny_reference(ray_session, demo_corpus, tmp_path_factory.getbasetemp())
    output_dir = tmp_path / "out"
    config = write_tiny_run(demo_corpus, tmp_path, output_dir, driver_round_max_bytes=0)
    summary_path = tmp_path / "summary.json"

    run, _ = run_logged(
        [str(VENV_BIN / "python"), "-m", "tests.cluster_scripts.node_loss", str(config),
         str(summary_path)],
        timeout_s=420,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:]
    summary = json.loads(summary_path.read_text())
    print(f"\nnode loss: {json.dumps(summary)}")
    kills = [event for event in summary["events"] if "killed" in event]
    assert [kill["killed"] for kill in kills] == ["worker-a", "worker-b", "replacement-1"], summary
    assert 1 <= kills[0]["pass_markers"] < summary["shards"], "kill A must land mid-pass"
    assert not kills[1]["decided"]["exact_dedup"], "kill B must land before dedup is decided"
    assert summary["shards_run"] == summary["shards"]
    assert summary["identity_holds"]
    assert comparable_outputs(output_dir) == reference["outputs"]
