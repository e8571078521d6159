"""The training loop for the LongCat-style MoE, top to bottom in one file.

One optimiser step: forward on a packed batch -> LM loss (masked) + device-level
balance loss + hidden z-loss -> (sometimes) the gradient norm ratio R_g -> backward,
clip, AdamW (eps 1e-16) -> bias controller update -> one JSONL metrics line.
Checkpoints hold the fixed keys ``model``, ``optimizer``, ``data``, ``train_state``,
``model_config`` and load with ``torch.load(..., weights_only=True)``.

Data comes from a source with ``state_dict`` / ``load_state_dict``: a ``TokenStream``
over packed phases (phase after phase; each batch brings its phase's RoPE base, and the
metrics name the phase and count the tokens seen) or synthetic batches.

``run_loop`` is the loop of every run: ``train()`` runs it in this process, and each
Ray Train worker (``model_hooks/ray_train.py``) runs it on its shard of the stream with
the data-parallel hooks of ``model_hooks/data_parallel.py`` (``Replicas``). Both write
the same checkpoint (``data``: the stream's state dict), so either resumes the other's.
A checkpoint of an older layout is refused before anything loads (``check_resumable``).

    python -m model_hooks.train --phases packed/p1 packed/p2 --out runs/x --steps 500
    python -m model_hooks.train --out runs/toy --steps 200      # synthetic batches

The pipeline's way in is ``python -m pipeline train TRAIN.yaml`` (``pipeline/train_cmd.py``:
a validated config, a curriculum.json, model growth, width transfer, Ray Train); this
command stays for quick runs without a config file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from pydantic import Field

from model_hooks.model import (
    Model,
    ModelConfig,
    cu_seqlens_from_doc_index,
    grow,
    parameter_kind,
)
from model_hooks.moe import (
    RouterInfo,
    balance_loss,
    bias_mu,
    router_cosine_similarity,
    routing_stats,
)
from model_hooks.old_checkpoints import (
    OldCheckpointError,
    old_data_state_problem,
    stacked_experts_problem,
)
from model_hooks.synthetic import BATCH_KEYS, SyntheticBatches
from model_hooks.token_stream import StreamLoader, TokenStream
from strict_config import StrictModel, read_yaml

CKPT_NAME, METRICS_NAME, TIMINGS_NAME = "ckpt.pt", "metrics.jsonl", "timings.jsonl"


class BatchSource(Protocol):
    """What the loop needs from data: batches (see synthetic.py and token_stream.py) and
    a tiny state. StopIteration ends the run early."""

    def __next__(self) -> dict: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


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
    bias_mu0: float = Field(default=0.5, ge=0)
    """Gain mu of the bias controller at step 0: the share of the batch's shift taken
    (``quantile``, capped at 1) or the multiplier of the share error (``longcat``,
    where the report's scale is about 0.1; set it when choosing that controller)."""
    bias_mu_decay_steps: int | None = Field(default=None, gt=0)
    """mu halves every this many steps; None scales it to the run: ``steps`` times
    ``bias_mu_decay_fraction`` (a 100-step demo and a 100k-step run both end at the same
    fraction of mu0, instead of a fixed 1000 that never decays in a short run)."""
    bias_mu_decay_fraction: float = Field(default=0.5, gt=0)
    bias_mu_min: float = Field(default=0.01, ge=0)
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


def hidden_z_loss(
    h_BTD: torch.Tensor, lam: float, token_mask_BT: torch.Tensor | None = None
) -> torch.Tensor:
    """(lambda / T) sum_t (logsumexp_i |h_t,i|)^2 over the T real tokens (padding is no
    data: its hidden states neither count nor dilute the mean): keeps massive
    activations in check."""
    z_BT = torch.logsumexp(h_BTD.float().abs(), dim=-1).pow(2)
    if token_mask_BT is None:
        return lam * z_BT.mean()
    mask_BT = token_mask_BT.to(z_BT.dtype)
    return lam * (z_BT * mask_BT).sum() / mask_BT.sum().clamp(min=1.0)


def bias_decay_steps(cfg: TrainConfig) -> int:
    """The controller's half-life in steps: the configured one, else scaled to the run."""
    if cfg.bias_mu_decay_steps is not None:
        return cfg.bias_mu_decay_steps
    return max(1, round(cfg.steps * cfg.bias_mu_decay_fraction))


def _every(step: int, every: int, last_step: int) -> bool:
    return every > 0 and (step % every == 0 or step + 1 == last_step)


def grad_norm_ratio(lm_loss: torch.Tensor, lb_loss: torch.Tensor, infos: list[RouterInfo]) -> float:
    """R_g = |grad(alpha L_LB)| / |grad(L_LM)| w.r.t. the batch-mean router probabilities.
    Moving the batch mean moves every token's probabilities, so that gradient is the
    per-token gradient summed over tokens."""
    probs = [info.probs_TE for info in infos]

    def norm(loss: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(loss, probs, retain_graph=True, allow_unused=True)
        return torch.cat([g.sum(0) for g in grads if g is not None] or [torch.zeros(1)]).norm()

    return (norm(lb_loss) / norm(lm_loss).clamp(min=1e-30)).item()


def domain_metrics(ce_BT: torch.Tensor, batch: dict, infos: list[RouterInfo], n_ffn: int) -> dict:
    """Loss per data domain and FFN experts per token per layer per domain (the
    report's appendix analysis, driven by the pipeline's domain tags)."""
    names, dom_BT, mask_BT = batch["domain_names"], batch["domain_ids"], batch["loss_mask"]
    nd = len(names)

    def per_domain_mean(values_BT: torch.Tensor, where_BT: torch.Tensor) -> list[float | None]:
        sums = torch.zeros(nd, device=values_BT.device)
        sums.index_add_(0, dom_BT[where_BT], values_BT[where_BT].float())
        counts = torch.bincount(dom_BT[where_BT], minlength=nd).tolist()
        return [s / n if n else None for s, n in zip(sums.tolist(), counts, strict=True)]

    real_BT = batch["token_mask"]  # padding routes too, but is no data
    ffn_LD = [  # layers x domains
        per_domain_mean((info.topk_TK < n_ffn).sum(-1).view(dom_BT.shape), real_BT)
        for info in infos
    ]
    return {
        "loss_by_domain": dict(zip(names, per_domain_mean(ce_BT, mask_BT), strict=True)),
        "ffn_experts_per_token_by_domain": {
            name: [layer[d] for layer in ffn_LD] for d, name in enumerate(names)
        },
    }


def train_step(
    model: Model,
    opt: torch.optim.Optimizer,
    batch: dict,
    cfg: TrainConfig,
    step: int,
    lr_anchor: dict | None = None,
) -> dict:
    theta = batch.get("rope_theta")  # a phase's RoPE base, from its manifest
    if theta is not None and float(theta) != model.cfg.rope_theta:
        model.cfg = model.cfg.model_copy(update={"rope_theta": float(theta)})
    mcfg, device = model.cfg, next(model.parameters()).device
    if batch.get("cu_seqlens") is None:  # from the host copy: no device sync later
        batch = {**batch, "cu_seqlens": cu_seqlens_from_doc_index(batch["doc_index"])}
    batch = {k: (v.to(device) if k in BATCH_KEYS else v) for k, v in batch.items()}
    B, T = batch["tokens"].shape
    for group in opt.param_groups:  # checkpoints from before lr_scale have none: 1
        group["lr"] = get_lr(step, cfg, lr_anchor) * group.get("lr_scale", 1.0)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        logits_BTN, h_BTD, infos = model(
            batch["tokens"], batch["positions"], batch["doc_index"], batch.get("cu_seqlens")
        )
    ce_BT = F.cross_entropy(
        logits_BTN.float().flatten(0, 1), batch["targets"].flatten(), reduction="none"
    ).view(B, T)
    mask_BT = batch["loss_mask"].float()
    lm_loss = (ce_BT * mask_BT).sum() / mask_BT.sum().clamp(min=1.0)
    n_ffn, k_e = mcfg.n_ffn_experts, mcfg.target_ffn_experts
    real = [i.select(batch["token_mask"].flatten()) for i in infos]  # padding excluded
    # Mean over layers, so alpha keeps its meaning when the model grows deeper.
    lb_loss = torch.stack(
        [balance_loss(i, n_ffn, cfg.balance_groups, k_e, cfg.balance_alpha) for i in real]
    ).mean()
    z_loss = hidden_z_loss(h_BTD, cfg.z_loss_lambda, batch["token_mask"])
    measure = _every(step, cfg.grad_ratio_every, cfg.steps)
    r_g = grad_norm_ratio(lm_loss, lb_loss, infos) if measure else None
    opt.zero_grad(set_to_none=True)
    (lm_loss + lb_loss + z_loss).backward()
    params = [p for group in opt.param_groups for p in group["params"]]
    max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
    opt.step()
    mu = bias_mu(step, cfg.bias_mu0, bias_decay_steps(cfg), cfg.bias_mu_min)
    for layer, info in zip(model.layers, real, strict=True):
        if cfg.bias_controller == "quantile":
            layer.moe.router.update_bias_quantile(info.probs_TE, min(mu, 1.0), k_e)
        else:
            layer.moe.router.update_bias(info.topk_TK, mu, k_e)
    stats = [routing_stats(info, n_ffn) for info in real]
    cos = (
        [router_cosine_similarity(layer.moe.router) for layer in model.layers]
        if _every(step, cfg.router_cosine_every, cfg.steps)
        else None
    )
    return {
        "step": step + 1,  # optimiser steps done, as saved in train_state
        "phase": batch.get("phase"),
        "lr": get_lr(step, cfg, lr_anchor),
        "lm_loss": lm_loss.item(),
        **domain_metrics(ce_BT.detach(), batch, infos, n_ffn),
        "balance_loss": lb_loss.item(),
        "z_loss": z_loss.item(),
        "grad_norm": grad_norm,
        "grad_norm_ratio": r_g,
        "router_cosine_sim": sum(cos) / len(cos) if cos is not None else None,
        "router_cosine_sim_per_layer": cos,
        "ffn_experts_per_token": [s["ffn_experts_per_token"] for s in stats],
        "zero_expert_share": [s["zero_expert_share"] for s in stats],
        "load_max_over_mean": [s["load_max_over_mean"] for s in stats],
        "bias_mu": mu,
        "tokens": int(batch["token_mask"].sum()),  # padding excluded
    }


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


def _keep_metrics_until(path: Path, step: int) -> None:
    """On resume, drop log lines of steps the checkpoint does not contain."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


class Replicas:
    """What the loop asks of the data-parallel world around it. This base is one process
    alone (every hook a no-op); ``model_hooks.data_parallel.DataParallel`` is N ranks
    over ``torch.distributed`` (the Ray Train workers). The loop calls the collective
    hooks in the same order on every rank, so the ranks stay in step."""

    rank, world_size = 0, 1

    def prepare(self, model: Model) -> None:
        """Once the model holds its starting weights (fresh or resumed), before step 1."""

    def all_have_batch(self, has_batch: bool) -> bool:
        """Whether every rank got a batch: the ranks step together or not at all."""
        return has_batch

    def begin_step(self, model: Model) -> None:
        """Before ``train_step`` (a data-parallel run keeps the router biases here)."""

    def end_step(self, model: Model, record: dict) -> dict:
        """After ``train_step``: the record of the global batch."""
        return record

    def checked(self, record: dict, model: Model) -> dict:
        """A checkpointed step's record (data parallel: with the replicas' differences)."""
        return record


class RunLog(Protocol):
    """Where the loop's records and checkpoints go: ``RunFolder`` (out_dir, as the run
    goes) or, on Ray Train, the workers' reports (``model_hooks.ray_train``)."""

    def log(self, record: dict, timing: dict) -> None: ...
    def checkpoint(
        self, model: Model, opt: torch.optim.Optimizer, data: dict, state: dict, record: dict
    ) -> None: ...


class RunFolder:
    """``out_dir`` as a local run writes it: ckpt.pt, metrics.jsonl and timings.jsonl
    (wall times in their own file keep metrics.jsonl reproducible). A resume keeps the
    log lines up to the checkpoint's step; a fresh run starts fresh logs."""

    def __init__(self, out_dir: Path, resumed_step: int | None) -> None:
        self.ckpt_path = out_dir / CKPT_NAME
        logs = (out_dir / METRICS_NAME, out_dir / TIMINGS_NAME)
        for path in logs:
            if resumed_step is None:
                path.unlink(missing_ok=True)
            else:
                _keep_metrics_until(path, resumed_step)
        self._metrics, self._timings = (path.open("a") for path in logs)

    def log(self, record: dict, timing: dict) -> None:
        for file, line in ((self._metrics, record), (self._timings, timing)):
            file.write(json.dumps(line) + "\n")
            file.flush()

    def checkpoint(
        self, model: Model, opt: torch.optim.Optimizer, data: dict, state: dict, record: dict
    ) -> None:
        save_checkpoint(self.ckpt_path, model, opt, data, state)

    def close(self) -> None:
        self._metrics.close()
        self._timings.close()


@contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` (warn-only) for the run, then as before."""
    if not enabled:
        yield
        return
    was_on = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=warn_only)


def train(
    cfg: TrainConfig,
    source: BatchSource,
    model_cfg: ModelConfig | None = None,
    stop_at_step: int | None = None,
) -> list[dict]:
    """Runs (or resumes) to cfg.steps, or until the source ends, and returns this call's
    metric records. With a checkpoint in out_dir its model_config is used unless model_cfg
    is given; shapes must match either way. A batch's ``rope_theta`` overrides the RoPE
    base (each curriculum phase brings its own). ``stop_at_step`` pauses earlier with a
    checkpoint, on the schedule of the whole run (e.g. to grow the model there)."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CKPT_NAME
    ckpt = None
    if cfg.resume and ckpt_path.exists():
        ckpt = check_resumable(load_checkpoint(ckpt_path), ckpt_path, cfg)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run_log = RunFolder(out, ckpt["train_state"]["step"] if ckpt is not None else None)
    try:
        with deterministic_mode(cfg.deterministic):
            return run_loop(cfg, source, model_cfg, ckpt, run_log, Replicas(), device,
                            stop_at_step)  # fmt: skip
    finally:
        run_log.close()


def run_loop(
    cfg: TrainConfig,
    source: BatchSource,
    model_cfg: ModelConfig | None,
    ckpt: dict | None,
    run_log: RunLog,
    replicas: Replicas,
    device: torch.device,
    stop_at_step: int | None = None,
) -> list[dict]:
    """The training loop of every run, local or on Ray Train: build (or resume) the
    model, optimiser and data position from ``ckpt``, then batch -> ``train_step`` ->
    record -> checkpoint every ``ckpt_every`` steps and at the end. What a data-parallel
    run adds comes in through ``replicas``; where records and checkpoints go, through
    ``run_log``. ``source`` is this rank's share of the data (``TokenStream(rank=...,
    world_size=...)``); its ``state_dict()`` is the checkpoint's ``data``."""
    last_step = cfg.steps if stop_at_step is None else min(cfg.steps, stop_at_step)
    torch.manual_seed(cfg.seed)
    if ckpt is not None:
        model_cfg = model_cfg or ModelConfig(**ckpt["model_config"])
    model = Model(model_cfg or ModelConfig()).to(device)
    if model.cfg.n_ffn_experts % cfg.balance_groups:
        raise ValueError("balance_groups must divide n_ffn_experts")
    opt = build_optimizer(model, cfg)
    state = {"step": 0, "tokens_seen": 0, "phase": None, "lr_anchor": None}  # train_state
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        source.load_state_dict(ckpt["data"])
        state.update(ckpt["train_state"])
        state["lr_anchor"] = resume_anchor(ckpt["train_state"], cfg)
    replicas.prepare(model)
    records, saved = [], state["step"]
    while state["step"] < last_step:
        started = time.perf_counter()
        batch = next(source, None)
        if not replicas.all_have_batch(batch is not None):
            break  # the curriculum is done
        replicas.begin_step(model)
        record = train_step(model, opt, batch, cfg, state["step"], state["lr_anchor"])
        record = replicas.end_step(model, record)
        record["phase_start"] = record["phase"] != state["phase"]
        state = {"step": state["step"] + 1, "phase": record["phase"],
                 "tokens_seen": state["tokens_seen"] + record["tokens"],
                 "schedule": schedule_state(cfg), "lr_anchor": state["lr_anchor"]}  # fmt: skip
        record["tokens_seen"] = state["tokens_seen"]
        save = state["step"] % cfg.ckpt_every == 0 or state["step"] == cfg.steps
        if save:
            record = replicas.checked(record, model)
        timing = {"step": record["step"], "step_time_s": time.perf_counter() - started}
        run_log.log(record, timing)
        records.append(record)
        if save:
            run_log.checkpoint(model, opt, source.state_dict(), state, record)
            saved = state["step"]
    if saved != state["step"]:  # paused (stop_at_step) or the data ended
        record = replicas.checked(records[-1], model)
        run_log.checkpoint(model, opt, source.state_dict(), state, record)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the LongCat-style toy MoE.")
    parser.add_argument("--phases", nargs="+", help="packed phase folders, trained in order "
                        "(default: synthetic batches)")  # fmt: skip
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--steps", type=int, help="default: every batch of the phases, or 200")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1, help="passes over each phase")
    parser.add_argument("--seq-len", type=int, default=128, help="synthetic batches only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader processes")
    parser.add_argument("--model", help="JSON or YAML file of ModelConfig fields")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    fields = read_yaml(args.model) if args.model else {}
    source: BatchSource
    if args.phases:
        stream = TokenStream(args.phases, batch_size=args.batch_size, seed=args.seed,
                             epochs=args.epochs)  # fmt: skip
        fields = {"vocab_size": max(p.vocab_size for p in stream.phases), **fields}
        steps = args.steps or stream.num_batches()
        source = StreamLoader(stream, args.num_workers) if args.num_workers else stream
    else:
        steps = args.steps or 200
        vocab = fields.get("vocab_size", ModelConfig().vocab_size)
        source = SyntheticBatches(args.batch_size, args.seq_len, vocab, seed=args.seed)
    cfg = TrainConfig(out_dir=args.out, steps=steps, lr=args.lr, seed=args.seed,
                      device=args.device)  # fmt: skip
    resuming = (Path(args.out) / CKPT_NAME).exists()  # then the checkpoint's config holds
    for r in train(cfg, source, None if resuming else ModelConfig(**fields)):
        if r["phase_start"] or r["step"] % 10 == 0 or r["step"] == cfg.steps:
            print(f"step {r['step']:5d} {r['phase'] or ''} tokens {r['tokens_seen']} "
                  f"lm {r['lm_loss']:.3f} ffn/token {r['ffn_experts_per_token']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
