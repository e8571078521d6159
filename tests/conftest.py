"""Shared fixtures: one embedded Ray session for the whole test run (start-up costs
seconds), and the demo corpus generated once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("PIPELINE_PROGRESS", "0")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        # address="local": never join a cluster another process started on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    from demo.corpus import generate_demo_corpus

    root = tmp_path_factory.mktemp("demo") / "corpus"
    generate_demo_corpus(root, seed=0)
    return root
