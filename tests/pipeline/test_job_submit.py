"""``ray job submit`` for real: a head on 127.0.0.1, the README's command, the job's
status and logs, and outputs byte-identical to an embedded run of the same config
(run in the test session's local Ray, into another folder)."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.cluster_scripts.harness import (
    REPO,
    VENV_BIN,
    comparable_outputs,
    local_head,
    run_logged,
    write_tiny_run,
)
from tests.cluster_scripts.reference import tiny_reference

# What `--working-dir .` uploads from a checkout (.gitignore keeps .venv and runs out).
PROJECT_PARTS = (
    "pipeline", "stages", "model_hooks", "report", "demo", "strict_config", "configs",
    "pyproject.toml",
)  # fmt: skip


def _working_dir(root):
    """A copy of the project as the job API receives it, with a run folder inside."""
    for part in PROJECT_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, root / part)
    return root


@pytest.mark.slow
def test_job_submit_gives_the_embedded_result(ray_session, demo_corpus, tmp_path, tmp_path_factory):
    # The embedded run: the same config run in this session's local Ray (another folder).
    reference = tiny_reference(ray_session, demo_corpus, tmp_path_factory.getbasetemp())
    work = _working_dir(tmp_path / "checkout")
    job_out = tmp_path / "out-job"
    write_tiny_run(demo_corpus, work / "run", job_out, config_name="curate.yaml")

    with local_head(num_cpus=2) as head:
        submission = f"curate-{int(time.time())}"
        job, job_s = run_logged(
            [
                str(VENV_BIN / "ray"), "job", "submit", "--address", head.dashboard_url,
                "--submission-id", submission, "--working-dir", str(work), "--",
                "python", "-m", "pipeline", "curate", "run/curate.yaml",
            ],
            timeout_s=400,
        )  # fmt: skip
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(head.dashboard_url)
        status = client.get_job_status(submission)
        logs = client.get_job_logs(submission)
    assert job.returncode == 0, job.stdout[-4000:]
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    assert f"({reference['shards']} shards run, 0 already done)" in logs
    assert "holds" in logs  # the funnel's accounting line
    assert "Started a local Ray instance" not in logs  # it joined the cluster
    assert "joined the Ray cluster at" in logs and "started a local Ray" not in logs

    assert comparable_outputs(job_out) == reference["outputs"]
    print(
        f"\njob-submitted run: {job_s:.1f} s (submit to exit: upload, job driver, Ray "
        f"connect, run); embedded run: {reference['seconds']:.1f} s (Ray already up)"
    )
