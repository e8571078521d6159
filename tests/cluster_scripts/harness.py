"""What the cluster tests share: a tiny run folder (corpus + config with relative input
paths), output digests, a private Ray head on 127.0.0.1, and teardown.

Teardown never uses ``ray stop`` (it kills every Ray on the machine, other people's
included): each Ray a test starts runs in a new session (``start_new_session``), and
teardown ends the processes of that session, found by session id.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
# A slice of the demo corpus: every reader, 11 small shards, little extraction work.
TINY_INPUTS = (
    ("corpus/crawl/crawl-00000.warc.gz", "crawl"),
    ("corpus/html", "html"),
    ("corpus/code", "code"),
    ("corpus/text/stem.jsonl", "text"),
)
TINY_SHARD_BYTES = 30_000
# The demo's core stages and MinHash, spelled out so the tests do not follow the demo
# config (which needs a trained quality model and eval files).
TINY_STAGES = {
    "extract": {"favor_precision": True, "timeout_seconds": 5.0},
    "langid": {"languages": ["en", "de", "fr", "es", "zh", "ru"], "min_score": 0.5},
    "heuristics": {
        "presets": ["gopher_repetition", "gopher_quality", "c4", "fineweb"],
        "overrides": {"c4": {"reject_curly_bracket": False}},
    },
    "exact_dedup": {"normalize": True},
    "minhash_dedup": {},
}
_NOT_COPIED = ("books.jsonl", "crawl-00001.warc.gz", "crawl-00002.warc.gz")


def ray_env(**extra: str) -> dict[str, str]:
    """The environment for a Ray a test starts: auth and usage stats set explicitly, no
    inherited cluster address, this interpreter's ``python`` first on PATH, and every
    port on 127.0.0.1. (Ray swaps 127.0.0.1 for the machine's address and its GCS listens
    on all interfaces unless multi-node mode is flagged off, which is all this flag does
    on Linux: a head started with it takes no ``ray start --address`` workers.)"""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PIPELINE_PROGRESS="0",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def write_tiny_run(
    demo_corpus: Path,
    run_dir: Path,
    output_dir: Path,
    shard_input_bytes: int = TINY_SHARD_BYTES,
    config_name: str = "curate.yaml",
    driver_round_max_bytes: int | None = None,
) -> Path:
    """Copy the demo corpus into ``run_dir/corpus`` (once) and write a config next to it
    whose inputs are relative and named (ids do not depend on where the folder is) and
    whose output is ``output_dir`` (absolute). ``driver_round_max_bytes=0`` makes the
    global steps' rounds tasks on the workers even on this small corpus."""
    corpus = run_dir / "corpus"
    if not corpus.exists():
        shutil.copytree(demo_corpus, corpus, ignore=shutil.ignore_patterns(*_NOT_COPIED))
    settings = {
        "inputs": [{"path": path, "name": name} for path, name in TINY_INPUTS],
        "output_dir": str(output_dir),
        "shard_input_bytes": shard_input_bytes,
        "reader": {"max_doc_bytes": 5_000_000},
        "stages": TINY_STAGES,
        "ray": {"num_cpus": 2},
    }
    if driver_round_max_bytes is not None:
        settings["ray"]["driver_round_max_bytes"] = driver_round_max_bytes
    config = run_dir / config_name
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    return config


def output_digests(output_dir: Path) -> dict[str, str]:
    """sha256 of every curated and rejects shard, by relative path (temporary files of a
    killed writer are not part of the output)."""
    return {
        str(path.relative_to(output_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in ("docs", "rejects")
        for path in sorted((output_dir / folder).glob("*.parquet"))
    }


def comparable_outputs(output_dir: Path) -> dict[str, object]:
    """Everything two runs of one config into two folders must agree on."""
    manifest = json.loads((output_dir / "manifest.json").read_text())
    return {
        "files": output_digests(output_dir),
        "ledger": json.loads((output_dir / "ledger.json").read_text()),
        "manifest_shards": manifest["shards"],
    }


def pass_markers(output_dir: Path) -> int:
    """Shards whose documents pass is complete (its stats marker exists)."""
    return len(list((output_dir / "work" / "documents").glob("[0-9]*.json")))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_pids(session_id: int) -> list[int]:
    """Live processes of one session (``start_new_session`` makes the child its leader)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if session == session_id and state != "Z":
            found.append(int(entry.name))
    return found


def kill_session(session_id: int, grace_s: float = 5.0) -> None:
    """SIGTERM every process of the session, then SIGKILL what is left after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        pids = session_pids(session_id)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while session_pids(session_id) and time.monotonic() < deadline:
            time.sleep(0.2)


@dataclass
class Head:
    process: subprocess.Popen
    gcs_address: str
    dashboard_url: str
    temp_dir: Path
    log_path: Path


def _wait_for_dashboard(head: Head, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            raise RuntimeError(f"ray start exited: {head.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{head.dashboard_url}/api/version", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the job API did not answer in {timeout_s} s")


@contextlib.contextmanager
def local_head(num_cpus: int = 2, timeout_s: float = 120.0) -> Iterator[Head]:
    """``ray start --head --block`` on 127.0.0.1 with its own temp dir and free ports;
    the dashboard and job API answer on 127.0.0.1 only. Torn down on exit, always."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rayh", dir="/tmp"))  # short: socket paths
    port, dashboard = free_port(), free_port()
    command = [
        str(VENV_BIN / "ray"), "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={port}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--num-cpus={num_cpus}", "--disable-usage-stats", f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    log_path = temp_dir / "ray_start.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            env=ray_env(RAY_TMPDIR=str(temp_dir)),  # its address file stays private too
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    head = Head(process, f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", temp_dir, log_path)
    try:
        _wait_for_dashboard(head, timeout_s)
        yield head
    finally:
        kill_session(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_logged(
    command: Sequence[str], timeout_s: float, env: dict[str, str] | None = None, **kwargs
) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command in its own session (whatever it starts is ended with it); returns the
    completed process (stdout and stderr together) and its wall time in seconds."""
    started = time.monotonic()
    process = subprocess.Popen(
        list(command),
        env=env or ray_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=kwargs.pop("cwd", REPO),
        **kwargs,
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_session(process.pid, grace_s=1.0)
        output, _ = process.communicate()
        raise AssertionError(f"{command} ran past {timeout_s} s:\n{output[-5000:]}") from None
    finally:
        kill_session(process.pid, grace_s=1.0)  # leftovers (an embedded Ray) go with it
    seconds = time.monotonic() - started
    return subprocess.CompletedProcess(process.args, process.returncode, output, None), seconds


def sigkill_when(
    command: Sequence[str], ready: Callable[[], bool], log_path: Path, timeout_s: float = 240.0
) -> subprocess.Popen:
    """Run ``command`` in its own session until ``ready()`` (polled every few ms), then
    SIGKILL the driver and, at once, everything its session started (an embedded Ray's
    workers die with it, as on a real crash). Returns the killed process."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            list(command), env=ray_env(), stdout=log, stderr=subprocess.STDOUT,
            cwd=REPO, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if process.poll() is not None:
                raise AssertionError(f"finished before the kill:\n{log_path.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready in {timeout_s} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        kill_session(process.pid, grace_s=0.0)
    assert process.returncode == -signal.SIGKILL
    return process
