"""Run the per-stage bench scripts as subprocesses with ``--json`` and turn each into a
results section; a script that fails, times out or lacks ``--json`` becomes a section
saying so, and the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.contract import validate

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class StageScript:
    """One per-stage script: its module, what it compares, how it takes the data folder
    (None: it takes none; "" the data root; "web" the root's web/ folder), the
    arguments of the default (non-quick) ``bench all`` size, and how many times the
    per-script time limit it may take (its Ray runs start Ray several times)."""

    name: str
    module: str
    what: str
    data: str | None
    default_args: tuple[str, ...] = ()
    timeout_factor: float = 1.0


STAGE_SCRIPTS = (
    StageScript("Extraction", "bench.extract",
                "Our extract stage against a bare `trafilatura.extract` loop, same options.",
                "web", ("--rounds", "1")),
    StageScript("Language id", "bench.langid",
                "The langid stage against raw fastText `predict` on lingua's sentences.", ""),
    StageScript("Filter recall per language", "bench.filter_recall",
                "Genuine articles kept per language and junk rejected: the default extract,"
                " langid and heuristics against the previous defaults and datatrove's presets.",
                "", (), 3.0),
    StageScript("Quality and domains", "bench.quality",
                "Domain tagger and quality classifier on the shared corpus.", ""),
    StageScript("MinHash dedup", "bench.dedup",
                "MinHash against brute-force Jaccard and datatrove's MinHash stages: the"
                " full corpus at 1x, 4x and 16x, datatrove at 1x (at 4x it alone takes"
                " about 4 minutes; the README has that run).", "",
                ("--peer-scale", "1"), 3.0),
    StageScript("Tokenization", "bench.tokenizer_bench",
                "The tokenize stage against raw `encode_batch` on the same batches.", "",
                ("--max-mb", "4")),
    StageScript("Packing", "bench.pack",
                "Best-fit-decreasing packing against concatenate-and-chunk.", "",
                ("--stream-tokens", "64M", "--windows", "16", "256", "1024", "--max-mb", "8")),
    StageScript("Token stream", "bench.stream",
                "The training token stream against raw memory-mapped Arrow reads.", None),
    StageScript("Zero-computation experts", "bench.moe",
                "Training tokens/s of the MoE with zero experts against without.", None),
)  # fmt: skip


def _run(
    command: list[str], env: dict[str, str], limit: float
) -> subprocess.CompletedProcess | None:
    """Run in a session of its own, so that on timeout the script and the Ray processes
    it started (raylet, GCS: same process group) are killed together; None on timeout."""
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_stage_script(
    script: StageScript,
    *,
    quick: bool,
    data: Path,
    timeout: float,
    env: dict[str, str],
) -> dict[str, Any]:
    """Run one script; return its section (rows and notes, or why there are none)."""
    section: dict[str, Any] = {"name": f"Per stage: {script.name}", "what": script.what,
                               "status": "ok", "rows": [], "notes": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-stage-") as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, "-m", script.module, "--json", str(out)]
        command += ["--quick"] if quick else list(script.default_args)
        if script.data is not None:
            command += ["--data", str(data / script.data if script.data else data)]
        started = time.monotonic()
        limit = timeout * script.timeout_factor
        done = _run(command, env, limit)
        if done is None:
            section["status"] = f"timed out after {limit:.0f} s (not run to the end)"
            return section
        seconds = time.monotonic() - started
        section["command"] = " ".join(["python", *command[1:]]).replace(str(out), "OUT.json")
        if (
            done.returncode != 0
            and "unrecognized arguments" in done.stderr
            and "--json" in (done.stderr)
        ):
            section["status"] = "not run: no --json (the script does not take the contract yet)"
            return section
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
            section["status"] = f"failed: exit status {done.returncode}: {tail[:300]}"
            return section
        if not out.is_file():
            section["status"] = "not run: no --json (the script wrote no JSON)"
            return section
        try:
            payload = json.loads(out.read_text())
        except json.JSONDecodeError as exc:
            section["status"] = f"failed: {script.module} wrote invalid JSON: {exc}"
            return section
    problems = validate(payload, script.module)
    if problems:
        section["status"] = "failed: " + "; ".join(problems[:3])
        return section
    section["rows"] = payload["rows"]
    section["notes"] = [*payload.get("notes", []), f"`{section['command']}`: {seconds:.0f} s"]
    if not payload["rows"]:
        skipped = [n for n in payload.get("notes", []) if n.startswith("skipped")]
        section["status"] = skipped[0] if skipped else "no rows: the script reported nothing"
    return section


def run_stage_scripts(
    *, quick: bool, data: Path, timeout: float, datatrove_python: Path | None, log: Any = print
) -> list[dict[str, Any]]:
    """Every per-stage script in turn (never two at once: they time themselves)."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PIPELINE_PROGRESS": "0"}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if datatrove_python is not None:
        env["DATATROVE_PYTHON"] = str(datatrove_python)
    sections = []
    for script in STAGE_SCRIPTS:
        log(f"per stage: {script.module} ...")
        section = run_stage_script(script, quick=quick, data=data, timeout=timeout, env=env)
        log(f"  {section['status']} ({len(section['rows'])} rows)")
        sections.append(section)
    return sections
