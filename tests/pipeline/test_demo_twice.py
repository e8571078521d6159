"""Two demo runs give the same bytes (issue 15: two full demo runs differed in 76 files).

The demo runs twice at the same path (small ``--train-steps``), the first run's folder
moved aside in between; every file's digest is compared. Files that record time are
left out by name: ``work/inputs.json`` (the input files' mtimes: the corpus is written
anew by each run) and the trainer's wall times (``train/timings.jsonl``). The files the
trainer decides (checkpoint, metrics, the report's training plots) are compared in their
own test."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from report.training import THROUGHPUT_ROW
from tests.cluster_scripts.harness import REPO

TIME_FILES = ("curated/work/inputs.json", "train/timings.jsonl")
"""Files that record time, never compared."""
TRAINED = ("train/", "report.html")
"""Decided by the trainer (its checkpoint, metrics, and the report's training plots)."""


def _without_wall_times(name: str, data: bytes) -> bytes:
    """The report's one row read from the timing file, cut out (its only varying part)."""
    if name != "report.html":
        return data
    row = re.compile(rb"<tr><td>" + re.escape(THROUGHPUT_ROW.encode()) + rb"</td>.*?</tr>", re.S)
    cut, count = row.subn(b"", data)
    assert count <= 1
    return cut


def _digests(root: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_file() and name not in TIME_FILES:
            data = _without_wall_times(name, path.read_bytes())
            digests[name] = hashlib.sha256(data).hexdigest()
    return digests


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
def test_every_training_artifact_is_byte_identical(two_runs):
    first, second = two_runs
    assert _differing(first, second, trained=True) == []
