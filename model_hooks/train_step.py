"""One optimiser step of the LongCat-style MoE, and the losses and metrics it needs.

``train_step``: forward on a packed batch -> LM loss (masked) + device-level balance loss
+ hidden z-loss -> (sometimes) the gradient norm ratio R_g -> backward, clip, AdamW (eps
1e-16) -> bias controller update (its gain from ``bias_decay_steps``) -> the step's
metric record (one JSONL line, with loss and experts per token per data domain). The
loop around it is ``model_hooks/train.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model_hooks.model import Model, cu_seqlens_from_doc_index
from model_hooks.moe import (
    Router,
    RouterInfo,
    balance_loss,
    bias_mu,
    router_cosine_similarity,
    routing_stats,
)
from model_hooks.optimizer import get_lr
from model_hooks.synthetic import BATCH_KEYS
from model_hooks.train_config import TrainConfig


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
    keep_T = batch["token_mask"].flatten()

    def steer(router: Router, info: RouterInfo) -> None:
        if cfg.bias_controller == "quantile":
            router.update_bias_quantile(info.probs_TE, min(mu, 1.0), k_e)
        else:
            router.update_bias(info.topk_TK, mu, k_e)

    if cfg.bias_after_step:  # layer by layer, from the stepped model's routing
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            inputs = (batch["tokens"], batch["positions"], batch["doc_index"], batch["cu_seqlens"])
            model.routing(*inputs, steer=lambda r, i: steer(r, i.select(keep_T)))
    else:
        for layer, info in zip(model.layers, real, strict=True):
            steer(layer.moe.router, info)
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
