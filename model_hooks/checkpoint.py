"""The trainer's checkpoint: one file with the fixed keys ``model``, ``optimizer``,
``data``, ``train_state`` and ``model_config``, loaded with ``torch.load(...,
weights_only=True)``.

Written atomically (``save_checkpoint``); checked before anything loads
(``check_resumable``: an older layout, or optimiser groups of another config, is refused
with what to do); grown on disk (``grow_checkpoint``, model growth). A local run and a
Ray Train run write the same file, so either resumes the other's.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from model_hooks.model import Model, ModelConfig, grow
from model_hooks.old_checkpoints import (
    OldCheckpointError,
    old_data_state_problem,
    stacked_experts_problem,
)
from model_hooks.optimizer import build_optimizer
from model_hooks.train_config import TrainConfig


def save_checkpoint(
    path: Path, model: Model, opt: torch.optim.Optimizer, data_state: dict, train_state: dict
) -> None:
    """Written to a temporary name and renamed, so a crash never leaves half a file."""
    ckpt = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "data": data_state,
        "train_state": train_state,
        "model_config": model.cfg.model_dump(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def check_resumable(ckpt: dict, path: Path, cfg: TrainConfig) -> dict:
    """``ckpt`` (read from ``path``) when this trainer can resume it; else a ValueError
    that names it and says what to do, before any tensor is loaded: a layout of an older
    version (per-expert weights before the stacked experts, the old Ray Data position;
    ``model_hooks/old_checkpoints.py``) or optimiser groups that are not this
    config's parameters (names compared group by group, on the meta device)."""
    problem = stacked_experts_problem(ckpt, path) or old_data_state_problem(ckpt, path)
    if problem is not None:
        raise OldCheckpointError(problem)
    with torch.device("meta"):
        expected = build_optimizer(Model(ModelConfig(**ckpt["model_config"])), cfg)
    want = [g["param_names"] for g in expected.state_dict()["param_groups"]]
    have = [g.get("param_names") for g in ckpt["optimizer"]["param_groups"]]
    if have != want and None not in have:
        differ = f"{len(have)} parameter groups, this config has {len(want)}"
        for i, (h, w) in enumerate(zip(have, want, strict=False)):
            n = max(len(h), len(w))
            padded = zip(h + [None] * (n - len(h)), w + [None] * (n - len(w)), strict=True)
            pairs = [(a, b) for a, b in padded if a != b]
            if pairs:
                differ = f"group {i} holds {pairs[0][0]!r} where this model has {pairs[0][1]!r}"
                break
        raise OldCheckpointError(
            f"{path}: its optimiser state is for other parameters than this model and "
            f"config ({differ}); resume it with the config it was trained with, or start "
            "a new run folder"
        )
    return ckpt


def grow_checkpoint(src: Path, dst: Path) -> None:
    """Model growth on disk: the same step, lr schedule and data position, twice the
    layers (layers 1..n then 1..n), Adam moments copied per layer."""
    ckpt = load_checkpoint(src)
    model = Model(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    big, opt_state = grow(model, ckpt["optimizer"])
    grown = {**ckpt, "model": big.state_dict(), "optimizer": opt_state}
    tmp = dst.with_suffix(".tmp")
    torch.save({**grown, "model_config": big.cfg.model_dump()}, tmp)
    os.replace(tmp, dst)
