"""Shared set-up for the model tests: one thread (the CI box has two cores shared with
other test processes, and tiny matmuls gain nothing from threads), deterministic
kernels and fixed seeds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_seeded() -> Iterator[None]:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)
