"""The README's quick-start commands run as written. After ``python -m pipeline demo``
(what ``make demo`` runs; here with ``--train-steps 2``), every block the README marks
``<!-- readme-test -->`` runs in order from a folder laid out like a checkout: shell
blocks with bash (``.venv/bin/python`` is this interpreter), Python blocks with this
interpreter. A block that exits non-zero, prints a traceback or an ERROR-level log line
fails the test (the demo too), so a README command that stops working breaks it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MARK = "<!-- readme-test -->"
BLOCK = re.compile(r"^" + re.escape(MARK) + r"\n```(bash|python)\n(.*?)```", re.S | re.M)
# An ERROR-level line: Ray's native log format, or Python logging's (Ray's and ours).
ERROR_LINE = re.compile(r"^\[\S+ \S+ E \d+ \d+\].*$|^\d{4}-\d\d-\d\d [\d:,]+\s+ERROR\b.*$", re.M)
CHECKOUT_PARTS = (
    "configs", "mixes", "pipeline", "stages", "model_hooks", "report", "demo", "strict_config",
    "bench",
)  # fmt: skip


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of every marked block, in README order."""
    text = (REPO / "README.md").read_text()
    blocks = [(m.group(1), m.group(2)) for m in BLOCK.finditer(text)]
    markers = len(re.findall(r"^" + re.escape(MARK) + r"$", text, re.M))
    assert len(blocks) == markers, "a marker not followed by a bash/python block"
    return blocks


def test_the_marked_blocks_are_found() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 4
    commands = "\n".join(code for language, code in blocks if language == "bash")
    for command in ("curate", "tokenize", "mix", "train", "grow", "width_transfer"):
        assert command in commands


def _run(command: list[str], cwd: Path, timeout_s: int) -> str:
    env = os.environ | {
        "PYTHONPATH": str(cwd),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "PIPELINE_PROGRESS": "0",
    }
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command[-1][:300]}\nexit {done.returncode}\n{output[-6000:]}"
    assert "Traceback (most recent call last)" not in output, output[-6000:]
    errors = ERROR_LINE.findall(output)
    assert not errors, errors[:5]
    return output


@pytest.mark.slow
def test_readme_quick_start_commands_run_as_written(tmp_path: Path) -> None:
    for part in CHECKOUT_PARTS:  # a checkout's layout: the commands name these paths
        (tmp_path / part).symlink_to(REPO / part)
    python = sys.executable
    _run([python, "-m", "pipeline", "demo", "--out", "runs/demo", "--train-steps", "2"],
         tmp_path, 1800)  # fmt: skip
    for language, code in readme_blocks():
        if language == "bash":
            script = "set -euo pipefail\n" + code.replace(".venv/bin/python", python)
            _run(["bash", "-c", script], tmp_path, 900)
        else:
            _run([python, "-c", code], tmp_path, 600)
