"""The LR schedule as a pure function of the step (``model_hooks/optimizer.py``). Its
continuity across a resume is shown on real runs in ``test_train.py``."""

from __future__ import annotations

import pytest

from model_hooks.optimizer import get_lr
from model_hooks.train_config import TrainConfig


def test_get_lr_warmup_stable_decay() -> None:
    cfg = TrainConfig(out_dir="x", steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert get_lr(0, cfg) == pytest.approx(0.1) and get_lr(9, cfg) == pytest.approx(1.0)
    assert get_lr(10, cfg) == pytest.approx(1.0)
    assert get_lr(55, cfg) == pytest.approx(0.55)  # cosine midpoint
    assert get_lr(100, cfg) == pytest.approx(0.1)
    wsd = cfg.model_copy(update={"decay_steps": 20})
    assert get_lr(79, wsd) == 1.0 and get_lr(90, wsd) == pytest.approx(0.55)
    assert [get_lr(s, cfg) for s in range(100)] == [get_lr(s, cfg) for s in range(100)]
