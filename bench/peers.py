"""Where the peer libraries live: datatrove in a virtual environment of its own, never
in the project's ``.venv`` (its pins would fight ours: trafilatura 1.x, spaCy).

``find_datatrove`` looks, in order, at ``$DATATROVE_PYTHON`` and at the bench cache's
``datatrove-venv``; with ``install=True`` it creates that venv with pip (the package
registry is the only network it needs). What it returns says why a peer is missing, so
the results table can show "peer not installed" instead of failing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DATATROVE_REQUIREMENTS = (
    "datatrove[processing]==0.10.1",
    "warcio",  # WarcReader, with the next two
    "faust-cchardet",
    "python-magic",
    "spacy",  # the English word tokenizer of the Gopher filters and MinHash
    "lxml_html_clean",  # trafilatura with lxml >= 5.2
    "orjson",
)
_PROBE = "import datatrove, warcio, cchardet, magic, spacy, trafilatura, fasttext, tokenizers"


def cache_dir() -> Path:
    """``$LONGCAT_BENCH_CACHE`` or ``~/.cache/longcat-bench``: downloads and peer venvs."""
    configured = os.environ.get("LONGCAT_BENCH_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "longcat-bench"


@dataclass(frozen=True)
class Peer:
    """A peer's interpreter, or None with the reason in ``status``."""

    name: str
    python: Path | None
    status: str

    @property
    def available(self) -> bool:
        return self.python is not None


def _works(python: Path) -> str | None:
    """None when ``python`` imports everything the peer pipeline needs, else why not."""
    if not python.exists():
        return f"{python} does not exist"
    try:
        done = subprocess.run(
            [str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python}: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        return f"{python}: {last}"
    return None


def _install(venv: Path) -> str | None:
    """Create ``venv`` with datatrove; None on success, else the error's last line."""
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *DATATROVE_REQUIREMENTS],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=1200)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if "Location" not in line]
            return (lines or ["failed"])[-1]
    return None


def find_datatrove(install: bool = False, cache: Path | None = None) -> Peer:
    """The datatrove interpreter to use; with ``install`` the cache venv is created when
    no working one is found."""
    problems = []
    configured = os.environ.get("DATATROVE_PYTHON")
    venv = (cache or cache_dir()) / "datatrove-venv"
    candidates = [Path(configured)] if configured else []
    candidates.append(venv / "bin" / "python")
    for python in candidates:
        problem = _works(python)
        if problem is None:
            return Peer("datatrove", python, "installed")
        problems.append(problem)
    if install:
        error = _install(venv)
        if error is None and _works(venv / "bin" / "python") is None:
            return Peer("datatrove", venv / "bin" / "python", "installed by this run")
        problems.append(f"pip install into {venv} failed: {error}")
    return Peer("datatrove", None, "peer not installed (" + "; ".join(problems) + ")")


PEER_PACKAGES = ("datatrove", "trafilatura", "spacy", "tokenizers")


def peer_versions(python: Path, packages: tuple[str, ...] = PEER_PACKAGES) -> dict[str, str]:
    """Package versions inside the peer's venv (they differ from ours: say which ran)."""
    code = (
        "import json, sys\nfrom importlib import metadata\nout = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n        out[name] = metadata.version(name)\n"
        "    except metadata.PackageNotFoundError:\n        out[name] = 'not installed'\n"
        "print(json.dumps(out))"
    )
    try:
        done = subprocess.run(
            [str(python), "-c", code, *packages], capture_output=True, text=True, timeout=60
        )
        return json.loads(done.stdout) if done.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return {}
