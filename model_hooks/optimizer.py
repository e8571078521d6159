"""AdamW's parameter groups and the LR schedule, continuous across a resume.

``get_lr`` is a pure function of the step (warmup-stable-decay), so it is unit-testable;
``build_optimizer`` puts each parameter in the group its kind asks for (width transfer
scales the hidden matrices' LR). A checkpoint keeps the schedule it was trained with
(``schedule_state``), and ``resume_anchor`` makes a changed schedule take up the LR the
run had reached instead of jumping.
"""

from __future__ import annotations

import math

import torch

from model_hooks.model import Model, parameter_kind
from model_hooks.train_config import TrainConfig


def get_lr(step: int, cfg: TrainConfig, anchor: dict | None = None) -> float:
    """Warmup-stable-decay: linear warmup, constant lr, then a cosine to min_lr over the
    last ``decay_steps``. With decay_steps None this is plain warmup + cosine; a short
    decay keeps the lr flat across curriculum phases and model growth.

    ``anchor`` ({"step", "lr"}, kept in ``train_state``) is where a resumed run took up
    a changed schedule (``resume_anchor``): from that step on, the LR starts from the
    one the run had reached and follows the new schedule's shape from there (flat, then
    the cosine to min_lr at the new ``steps``), so it never jumps."""
    if anchor is not None and step >= anchor["step"]:
        start, lr0 = int(anchor["step"]), float(anchor["lr"])
        decay = cfg.decay_steps if cfg.decay_steps is not None else cfg.steps - start
        decay_start = max(start, cfg.steps - decay)
        if step < decay_start or cfg.steps <= decay_start:
            return lr0
        progress = min((step - decay_start) / (cfg.steps - decay_start), 1.0)
        return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr0 - cfg.min_lr)
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay = cfg.decay_steps if cfg.decay_steps is not None else cfg.steps - cfg.warmup_steps
    decay_start = cfg.steps - decay
    if step < decay_start or decay <= 0:
        return cfg.lr
    progress = min((step - decay_start) / decay, 1.0)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


SCHEDULE_FIELDS = ("steps", "lr", "min_lr", "warmup_steps", "decay_steps")


def schedule_state(cfg: TrainConfig) -> dict:
    """The LR schedule's fields, saved in ``train_state`` so a resume can check it."""
    return {name: getattr(cfg, name) for name in SCHEDULE_FIELDS}


def resume_anchor(train_state: dict, cfg: TrainConfig) -> dict | None:
    """The LR anchor a resumed run continues from. The saved one while the new schedule
    gives the last trained step the LR it was trained with (the same schedule, or more
    ``steps`` that leave the past alone); else a new anchor at this step with that LR,
    so raising ``steps`` after a finished cosine does not jump from min_lr back up to
    the middle of a new cosine. Checkpoints without a saved schedule keep the new one."""
    saved, step = train_state.get("schedule"), int(train_state.get("step", 0))
    anchor = train_state.get("lr_anchor")
    if saved is None or step == 0:
        return anchor
    trained = get_lr(step - 1, cfg.model_copy(update=saved), anchor)
    if math.isclose(trained, get_lr(step - 1, cfg, anchor), rel_tol=1e-9, abs_tol=1e-15):
        return anchor
    return {"step": step, "lr": trained}


def build_optimizer(model: Model, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over named parameters (grow() maps moments by name); matrices decay,
    norm gains do not. Each group's ``lr_scale`` multiplies the schedule's lr: with a
    ``hidden_lr_scale`` other than 1 the hidden matrices get a group of their own (width
    transfer), otherwise there are the two groups checkpoints have always held."""
    named = list(model.named_parameters())
    kinds = {n: parameter_kind(n, p) for n, p in named}

    def group(members: set[str], weight_decay: float, lr_scale: float) -> dict:
        params = [(n, p) for n, p in named if kinds[n] in members]
        return {"params": params, "weight_decay": weight_decay, "lr_scale": lr_scale}

    if cfg.hidden_lr_scale == 1.0:
        groups = [group({"embedding", "hidden"}, cfg.weight_decay, 1.0)]
    else:
        groups = [
            group({"hidden"}, cfg.weight_decay, cfg.hidden_lr_scale),
            group({"embedding"}, cfg.weight_decay, 1.0),
        ]
    groups.append(group({"vector"}, 0.0, 1.0))
    device = next(model.parameters()).device
    fused = cfg.fused_adam if cfg.fused_adam is not None else device.type == "cuda"
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps, fused=fused or None
    )
