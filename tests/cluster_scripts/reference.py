"""The undisturbed run of the tiny config, computed once per test session in the shared
embedded Ray and compared against the crashed, resumed and node-loss runs."""

from __future__ import annotations

from pathlib import Path

from tests.cluster_scripts.harness import comparable_outputs, write_tiny_run

_CACHE: dict[str, dict] = {}


def tiny_reference(ray_session, demo_corpus: Path, base_dir: Path) -> dict:
    """``outputs`` (``comparable_outputs``) of an undisturbed tiny run under ``base_dir``,
    its ``shards`` and ``seconds`` (in the session's Ray, so no start-up included)."""
    if "outputs" not in _CACHE:
        from pipeline.config import load_curate_config
        from pipeline.runner import plan, run_curate

        run_dir = base_dir / "tiny-reference"
        run_dir.mkdir(parents=True, exist_ok=True)
        config = load_curate_config(write_tiny_run(demo_corpus, run_dir, run_dir / "out"))
        result = run_curate(config)
        assert result.ledger["identity_holds"]
        _CACHE["outputs"] = comparable_outputs(run_dir / "out")
        _CACHE["shards"] = len(plan(config))
        _CACHE["seconds"] = result.seconds
    return dict(_CACHE)
