"""The trainer's knobs: optimisation, balancing and the run folder (``TrainConfig``).

The architecture is ``model_hooks.model.ModelConfig``; this is everything else a run
needs. Each field is validated when the config is built (pydantic ``Field`` bounds,
unknown keys refused by ``StrictModel``), so a bad TRAIN.yaml fails before a model is
built. The ``train:`` section of ``pipeline train``'s TRAIN.yaml is these fields but
``out_dir`` and ``seed`` (``pipeline/train_cmd.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from strict_config import StrictModel


class TrainConfig(StrictModel):
    """Optimisation, balancing and run-folder knobs (the architecture is ModelConfig)."""

    out_dir: str
    """Run folder: ckpt.pt and metrics.jsonl live here."""
    steps: int = Field(default=100, gt=0)
    """Total optimiser steps; a resumed run continues up to this number."""
    lr: float = Field(default=3e-3, gt=0)
    min_lr: float = Field(default=3e-4, ge=0)
    warmup_steps: int = Field(default=10, ge=0)
    decay_steps: int | None = Field(default=None, ge=0)
    """Length of the final cosine decay; None decays over every post-warmup step."""
    hidden_lr_scale: float = Field(default=1.0, gt=0)
    """LR multiplier of the hidden matrices and the unembedding (the embedding and the norm
    gains keep ``lr``). Width transfer sets it to 1/s for a model s times wider than the
    tuned proxy (``model_hooks/width_transfer.py``); 1.0 keeps one LR for everything."""
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = Field(default=1e-16, gt=0)
    """LongCat: epsilon must stay far below the gradient RMS, which shrinks with scale."""
    grad_clip: float | None = Field(default=1.0, gt=0)
    balance_alpha: float = Field(default=1e-3, ge=0)
    """alpha of the device-level balance loss (the report gives none). The bias controller
    does the balancing; 1e-3 keeps grad_norm_ratio near the report's < 0.1 on the toy
    once past the first steps. Watch grad_norm_ratio when changing it."""
    balance_groups: int = Field(default=2, gt=0)
    """D: expert-parallel groups of FFN experts in the balance loss."""
    z_loss_lambda: float = Field(default=1e-7, ge=0)
    bias_controller: Literal["longcat", "quantile"] = "quantile"
    """How the router biases steer to K_e: ``longcat`` is the report's update, mu times
    the share error (``moe.Router.update_bias``); ``quantile`` moves each bias by mu
    times the shift that would have given its expert its share of the batch
    (``moe.Router.update_bias_quantile``), a gain in the router's own units."""
    bias_mu0: float = Field(default=1.0, ge=0)
    """Gain mu of the bias controller at step 0: the share of the batch's shift taken
    (``quantile``, capped at 1: all of it, since with ``bias_after_step`` the shift is
    measured on the model that routes the next batch) or the multiplier of the share
    error (``longcat``, where the report's scale is about 0.1; set it when choosing that
    controller)."""
    bias_mu_decay_steps: int | None = Field(default=None, gt=0)
    """mu halves every this many steps; None scales it to the run: ``steps`` times
    ``bias_mu_decay_fraction`` (a 100-step demo and a 100k-step run both end at the same
    fraction of mu0, instead of a fixed 1000 that never decays in a short run)."""
    bias_mu_decay_fraction: float = Field(default=0.5, gt=0)
    bias_mu_min: float = Field(default=0.01, ge=0)
    bias_after_step: bool = True
    """Steer the biases from the batch routed again by the model after the optimiser
    step (``Model.routing``: the layers without the unembedding, no backward), layer by
    layer, instead of from the routing the step started from: the controller then also
    undoes how far the step itself moved the routing, which is the next batch's (on
    the demo the step moved FFN experts per token by up to 0.5 while the controller
    steered from before it). Costs a forward without the unembedding and no backward."""
    grad_ratio_every: int = Field(default=10, ge=0)
    """Measure R_g every this many steps (about one extra backward: +25% step time when
    every step); 0 never. Steps without it log null."""
    router_cosine_every: int = Field(default=10, ge=0)
    """Router cosine similarity every this many steps (and at the last); 0 never."""
    ckpt_every: int = Field(default=50, gt=0)
    resume: bool = True
    """Continue from out_dir/ckpt.pt when it exists."""
    seed: int = 0
    device: str | None = None
    """None: cuda when available, else cpu."""
    bf16: bool = False
    """bf16 autocast for the forward pass (the router stays fp32)."""
    fused_adam: bool | None = None
    """AdamW's fused kernel (one launch for every parameter); None: on CUDA only."""
    deterministic: bool = True
    """``torch.use_deterministic_algorithms`` for the run (warn-only): on CPU two runs
    on the same data write byte-identical checkpoints and metrics.jsonl. On CUDA the
    flash attention backward still accumulates with atomics (see the README)."""
