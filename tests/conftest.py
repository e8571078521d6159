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
        _start_loopback_ray(ray)
    yield ray
    ray.shutdown()


def _start_loopback_ray(ray) -> None:
    """Start the tests' Ray the way an embedded run starts (loopback only, never joining
    a cluster another process started on this machine), so a test run opens no port to
    the network. The loopback flag stays out of this process's environment afterwards:
    the multi-node tests start clusters of their own in child processes."""
    from pipeline.ray_exec import EMBEDDED_LOOPBACK_ENV, LOOPBACK, _loopback_only

    saved = {key: os.environ.get(key) for key in EMBEDDED_LOOPBACK_ENV}
    _loopback_only()
    try:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address=LOOPBACK,
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    from demo.corpus import generate_demo_corpus

    root = tmp_path_factory.mktemp("demo") / "corpus"
    generate_demo_corpus(root, seed=0)
    return root
