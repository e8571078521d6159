"""The LongCat-Flash mixture of experts: a router over N FFN experts and Z
zero-computation (identity) experts, the bias controller that steers how many FFN
experts a token gets, the device-level balance loss and the router metrics.

LongCat-Flash technical report: https://arxiv.org/abs/2509.01322 (section 2).
The gate weights are the plain softmax probabilities (not renormalised over the
chosen experts); the bias only changes *which* experts are chosen. A token routed
to a zero expert costs no FFN work: only (token, FFN expert) pairs are dispatched.

Shape suffixes: T tokens, D model width, F expert width, E = N + Z experts,
K experts chosen per token, P dispatched (token, FFN expert) pairs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class RouterInfo(NamedTuple):
    """What one MoE layer's routing leaves behind for the losses and the metrics."""

    probs_TE: torch.Tensor  # fp32 softmax over all N+Z experts, carries the graph
    topk_TK: torch.Tensor  # chosen expert ids; ids >= N are zero experts

    def select(self, keep_T: torch.Tensor) -> RouterInfo:
        """The routing of the kept tokens (e.g. no padding), for the balance loss, the
        bias controller and the statistics; the gather keeps the graph for the loss."""
        if bool(keep_T.all()) or not bool(keep_T.any()):
            return self
        return RouterInfo(self.probs_TE[keep_T], self.topk_TK[keep_T])


class Router(nn.Module):
    """Softmax over N+Z experts in fp32; top-K on probabilities plus a bias buffer."""

    def __init__(self, d_model: int, n_ffn: int, n_zero: int, top_k: int) -> None:
        super().__init__()
        self.n_ffn, self.top_k = n_ffn, top_k
        self.weight = nn.Parameter(torch.empty(n_ffn + n_zero, d_model))
        # A buffer, not a parameter: the controller moves it, the optimiser never does.
        self.register_buffer("bias", torch.zeros(n_ffn + n_zero))

    def forward(self, x_TD: torch.Tensor) -> RouterInfo:
        # fp32 even under autocast: small probability differences decide the routing.
        with torch.autocast(device_type=x_TD.device.type, enabled=False):
            probs_TE = F.linear(x_TD.float(), self.weight.float()).softmax(dim=-1)
        topk_TK = torch.topk(probs_TE.detach() + self.bias, self.top_k, dim=-1).indices
        return RouterInfo(probs_TE, topk_TK)

    @torch.no_grad()
    def update_bias(self, topk_TK: torch.Tensor, mu: float, target_ffn: float) -> None:
        """LongCat's controller: each FFN expert drifts towards a (K_e/K)/N share of the
        picks. Zero experts keep bias 0, so K_e is reached by moving FFN experts only."""
        counts_E = torch.bincount(topk_TK.flatten(), minlength=self.bias.numel())
        share_N = counts_E[: self.n_ffn].float() / (self.top_k * topk_TK.shape[0])
        target = (target_ffn / self.top_k) / self.n_ffn
        self.bias[: self.n_ffn] += mu * (target - share_N)


class SwiGLU(nn.Module):
    """The FFN used by the dense blocks and by every FFN expert."""

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.w_gate = nn.Linear(d_model, d_hidden, bias=False)
        self.w_up = nn.Linear(d_model, d_hidden, bias=False)
        self.w_down = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x_TD: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x_TD)) * self.w_up(x_TD))


class MoE(nn.Module):
    """gamma * sum over chosen i of p_i * E_i(x); E_i is the identity for zero experts.

    gamma undoes gate dilution and the narrower experts (dense width / expert width).
    The inference ports disagree on whether gamma also scales the identity outputs,
    hence ``gamma_scales_identity``.
    """

    def __init__(
        self,
        d_model: int,
        d_expert: int,
        n_ffn: int,
        n_zero: int,
        top_k: int,
        gamma: float,
        gamma_scales_identity: bool = True,
    ) -> None:
        super().__init__()
        self.n_ffn, self.gamma, self.gamma_scales_identity = n_ffn, gamma, gamma_scales_identity
        self.router = Router(d_model, n_ffn, n_zero, top_k)
        self.experts = nn.ModuleList(SwiGLU(d_model, d_expert) for _ in range(n_ffn))

    def forward(self, x_TD: torch.Tensor) -> tuple[torch.Tensor, RouterInfo]:
        info = self.router(x_TD)
        T, K = info.topk_TK.shape
        gates_TK = info.probs_TE.gather(1, info.topk_TK).to(x_TD.dtype)  # not renormalised
        is_ffn_TK = info.topk_TK < self.n_ffn
        # Zero experts: the identity, weighted by their gates; no FFN work at all.
        zero_gate_T1 = (gates_TK * ~is_ffn_TK).sum(dim=-1, keepdim=True)
        id_scale = self.gamma if self.gamma_scales_identity else 1.0
        out_TD = id_scale * zero_gate_T1 * x_TD
        # FFN experts: sort the (token, expert) pairs by expert, run each on its slice.
        token_P = torch.arange(T, device=x_TD.device).repeat_interleave(K)[is_ffn_TK.flatten()]
        expert_P = info.topk_TK.flatten()[is_ffn_TK.flatten()]
        gate_P = gates_TK.flatten()[is_ffn_TK.flatten()]
        order_P = torch.argsort(expert_P, stable=True)
        token_P, expert_P, gate_P = token_P[order_P], expert_P[order_P], gate_P[order_P]
        counts = torch.bincount(expert_P, minlength=self.n_ffn).tolist()
        x_PD = x_TD[token_P]
        y_parts = [
            expert(chunk_D)
            for expert, chunk_D, n in zip(self.experts, x_PD.split(counts), counts, strict=True)
            if n > 0
        ]
        if y_parts:
            y_PD = torch.cat(y_parts) * gate_P[:, None]
            out_TD = out_TD + self.gamma * torch.zeros_like(x_TD).index_add(0, token_P, y_PD)
        return out_TD, info


def balance_loss(
    info: RouterInfo, n_ffn: int, n_groups: int, target_ffn: float, alpha: float
) -> torch.Tensor:
    """Device-level balance loss: alpha * sum_j f_j * P_j over D groups of FFN experts
    plus one group of all zero experts.

    f_j counts picks (no gradient) and is normalised so a perfectly balanced router
    that gives K_e FFN experts per token has every f_j = 1; P_j is the batch-mean
    probability mass of group j and carries the gradient.
    """
    probs_TE, topk_TK = info.probs_TE, info.topk_TK
    T, K = topk_TK.shape
    n_experts = probs_TE.shape[1]
    group_E = torch.arange(n_experts, device=probs_TE.device) * n_groups // n_ffn
    group_E = group_E.clamp(max=n_groups)  # every zero expert lands in group D
    mass_G = torch.zeros(n_groups + 1, device=probs_TE.device).index_add(
        0, group_E, probs_TE.sum(dim=0)
    )
    P_G = mass_G / T
    picks_G = torch.bincount(group_E[topk_TK.flatten()], minlength=n_groups + 1).float()
    f_ffn = picks_G[:n_groups] * n_groups / (target_ffn * T)
    if n_experts == n_ffn or K - target_ffn <= 0:  # no zero group to balance
        return alpha * (f_ffn * P_G[:n_groups]).sum()
    f_zero = picks_G[n_groups:] / ((K - target_ffn) * T)
    return alpha * (torch.cat([f_ffn, f_zero]) * P_G).sum()


def bias_mu(step: int, mu0: float, decay_steps: int, mu_min: float) -> float:
    """Controller step size: halves every decay_steps, never below mu_min (the report
    gives no values; 0.1, 1000, 0.01 are LONGCAT.md's proposal)."""
    return max(mu0 * 0.5 ** (step // decay_steps), mu_min)


@torch.no_grad()
def router_cosine_similarity(router: Router) -> float:
    """Mean pairwise cosine similarity of the experts' router rows: it climbs when the
    balance loss flattens the router into one shared direction."""
    w_ED = F.normalize(router.weight.float(), dim=-1)
    sim_EE = w_ED @ w_ED.T
    E = sim_EE.shape[0]
    return ((sim_EE.sum() - sim_EE.diagonal().sum()) / (E * (E - 1))).item()


@torch.no_grad()
def routing_stats(info: RouterInfo, n_ffn: int) -> dict[str, float]:
    """Per-layer compute and balance: FFN experts per token, zero share, load spread."""
    T, K = info.topk_TK.shape
    n_ffn_T = (info.topk_TK < n_ffn).sum(dim=-1).float()
    load_N = torch.bincount(info.topk_TK.flatten(), minlength=n_ffn)[:n_ffn].float()
    return {
        "ffn_experts_per_token": n_ffn_T.mean().item(),
        "zero_expert_share": 1.0 - n_ffn_T.sum().item() / (T * K),
        "load_max_over_mean": (load_N.max() / load_N.mean().clamp(min=1e-9)).item(),
    }
