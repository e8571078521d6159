"""Two demo runs give the same bytes (issue 15: two full demo runs differed in 76 files).

The demo runs twice at the same path (small ``--train-steps``), the first run's folder
moved aside in between; every file's digest is compared. Files that record time are
left out by name: ``work/inputs.json`` (the input files' mtimes: the corpus is written
anew by each run) and the trainer's timing file. Training determinism belongs to the
trainer (model_hooks); the files it decides are compared in their own test, which is
expected to fail until that lands (xfail, not strict: it passes once they match)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster_scripts.harness import REPO

TIME_FILES = ("curated/work/inputs.json", "train/timing.jsonl", "train/metrics.jsonl")
"""Files that record time, never compared. (``train/metrics.jsonl`` records wall times
until the trainer moves them to its timing file; then only the latter is listed.)"""
TRAINED = ("train/", "report.html")
"""Decided by the trainer (its checkpoint, metrics, and the report's training plots)."""


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and str(path.relative_to(root)) not in TIME_FILES
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[dict[str, str], dict[str, str]]:
    base = tmp_path_factory.mktemp("demo-twice")
    out = base / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PIPELINE_PROGRESS"] = "0"
    results = []
    for number in (1, 2):
        subprocess.run(
            [sys.executable, "-m", "pipeline", "demo", "--out", str(out), "--train-steps", "3"],
            cwd=REPO, env=env, check=True, capture_output=True, timeout=1500,
        )  # fmt: skip
        results.append(_digests(out))
        shutil.move(out, base / f"run-{number}")
    return results[0], results[1]


def _differing(first: dict[str, str], second: dict[str, str], trained: bool) -> list[str]:
    names = sorted(set(first) | set(second))
    names = [n for n in names if n.startswith(TRAINED) == trained]
    return [n for n in names if first.get(n) != second.get(n)]


@pytest.mark.slow
def test_every_pipeline_artifact_is_byte_identical(two_runs):
    first, second = two_runs
    assert len(first) > 100  # corpus, quality model, curated, tokenizer, tokenized, packed
    assert _differing(first, second, trained=False) == []


@pytest.mark.slow
@pytest.mark.xfail(reason="trainer determinism (model_hooks, issue 15) not landed here")
def test_every_training_artifact_is_byte_identical(two_runs):
    first, second = two_runs
    assert _differing(first, second, trained=True) == []
