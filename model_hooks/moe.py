"""The LongCat-Flash mixture of experts: a router over N FFN experts and Z
zero-computation (identity) experts, the bias controller that steers how many FFN
experts a token gets, the device-level balance loss and the router metrics.

LongCat-Flash technical report: https://arxiv.org/abs/2509.01322 (section 2).
The gate weights are the plain softmax probabilities (not renormalised over the
chosen experts); the bias only changes *which* experts are chosen. A token routed
to a zero expert costs no FFN work: only (token, FFN expert) pairs are computed.

Expert dispatch is grouped: the T*K (token, expert) pairs are sorted by expert (zero
experts last), and ``torch._grouped_mm`` runs every FFN expert on its contiguous slice
in one call per matrix, given the slice ends as a tensor. Nothing in the forward asks
the host how many tokens an expert got (no ``.tolist()``, no boolean indexing), so the
block traces into one graph (``torch.compile``) and a GPU never waits on the CPU; there
the pairs come back to their tokens by the inverse permutation and a sum over K, not an
``index_add`` (no atomics: the same sums in the same order every run). On the CPU, where
reading a tensor costs the host nothing, one op of our own (``swiglu_experts_cpu``)
touches only the FFN pairs and adds them back with a serial ``index_add_``.

Shape suffixes: T tokens, D model width, F expert width, E = N + Z experts,
K experts chosen per token, P = T*K (token, expert) pairs.
"""

from __future__ import annotations

import math
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


def ffn_count_shift(
    ffn_TN: torch.Tensor, zero_TZ: torch.Tensor, top_k: int, target_ffn: float
) -> torch.Tensor:
    """The shift of every FFN expert's score that gives these T tokens ``target_ffn``
    FFN experts each on average in their top ``top_k`` (a 0-d tensor; 0 without a
    crossing to find). Token t holds at least m FFN experts once its m-th best FFN score
    plus the shift beats its (K-m+1)-th best zero-expert score: the T*K thresholds of
    those events, sorted, put T*K_e of them below the shift halfway past the T*K_e-th."""
    T, K = ffn_TN.shape[0], top_k
    never_TK = ffn_TN.new_full((T, K), -math.inf)
    ffn_TK = torch.cat([ffn_TN.sort(dim=-1, descending=True).values, never_TK], 1)
    zero_TK = torch.cat([zero_TZ.sort(dim=-1, descending=True).values, never_TK], 1)
    # m = 1..K: shift past which token t holds at least m FFN experts.
    thresholds = (zero_TK[:, :K].flip(-1) - ffn_TK[:, :K]).flatten().sort().values
    k = min(max(round(T * target_ffn), 1), T * K - 1)
    common = 0.5 * (thresholds[k - 1] + thresholds[k])
    return torch.nan_to_num(common, nan=0.0, posinf=0.0, neginf=0.0)


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

    @torch.no_grad()
    def update_bias_quantile(self, probs_TE: torch.Tensor, step: float, target_ffn: float) -> None:
        """A controller in the router's own units: the shift of the FFN experts' biases
        that would have given this batch K_e FFN experts per token, plus the shifts
        that would have given each FFN expert an equal share of them, then ``step``
        (0..1] of the sum (a damped Newton step: the next batch differs).

        The balance: expert i is picked by token t when its score beats the K-th best
        of the others; a (K_e/N) share of the tokens picks it when its bias moves by
        minus the (1 - K_e/N) quantile of those margins; these shifts, less their mean,
        move load between FFN experts, but not at a constant total: lowering a busy
        expert and raising an idle one by the same amount rarely trades equal numbers
        of picks. So the common shift is taken after them, on the balanced scores:
        token t gets at least m FFN experts once its m-th best FFN score plus the shift
        beats its (K-m+1)-th best zero-expert score; with the T*K thresholds of those
        events sorted, K_e per token on average is the shift past the T*K_e-th. The
        sum of both then gives this batch K_e FFN experts per token at ``step`` 1
        (taken independently, the balance moved the count by up to 0.6 of K_e = 2.5
        at K = 4 with skewed loads, a steady offset while training keeps the loads
        apart). Unlike
        ``update_bias`` (a step proportional to the share error, whose right size
        depends on how spread the router's probabilities are: too small while they
        differ by a hair, overshooting once they part) the step scales with the router."""
        N, K = self.n_ffn, self.top_k
        scores_TE = probs_TE.detach().float() + self.bias
        T = scores_TE.shape[0]
        if T == 0:
            return
        best_TK1 = scores_TE.topk(K + 1, dim=-1).values
        kth_T1, next_T1 = best_TK1[:, K - 1 : K], best_TK1[:, K : K + 1]
        # The K-th best of the others: the (K+1)-th if i is in the top K, else the K-th.
        others_TE = torch.where(scores_TE >= kth_T1, next_T1, kth_T1)
        margin_TN = (scores_TE - others_TE)[:, :N]
        share = min(target_ffn / N, 1.0)  # of the tokens, each FFN expert
        balance_N = -torch.quantile(margin_TN, 1.0 - share, dim=0)
        balance_N = torch.nan_to_num(balance_N - balance_N.mean(), nan=0.0, posinf=0.0, neginf=0.0)
        common = ffn_count_shift(scores_TE[:, :N] + balance_N, scores_TE[:, N:], K, target_ffn)
        self.bias[:N] += step * (common + balance_N)


@torch.library.custom_op("longcat::grouped_mm", mutates_args=())
def grouped_mm(x_PD: torch.Tensor, w_NDF: torch.Tensor, ends_N: torch.Tensor) -> torch.Tensor:
    """``torch._grouped_mm(x, w, offs=ends)``: rows ends[i-1]:ends[i] times w[i], and
    zeros after ends[-1] (``_grouped_mm`` leaves them unwritten). Wrapped as an op of
    our own because the pinned torch's meta function of ``_grouped_mm`` accepts bf16
    only, so tracing (dynamo, ``torch.compile``) of the float32 CPU path would break
    there; the fake function below gives the shape, and the backward is two more
    grouped matmuls. On CPU the rows after the end are not even read (the host knows
    the end at no cost); on a GPU reading the end would be a sync: the whole buffer
    goes through and the tail is zeroed on the device."""
    if x_PD.is_cuda:
        out = torch._grouped_mm(x_PD, w_NDF, offs=ends_N)
        rows_P1 = torch.arange(out.shape[0], device=out.device)[:, None]
        return out.masked_fill_(rows_P1 >= ends_N[-1], 0.0)
    end = int(ends_N[-1])
    tail = x_PD.new_zeros(x_PD.shape[0] - end, w_NDF.shape[-1])
    if not end:
        return tail
    return torch.cat([torch._grouped_mm(x_PD[:end], w_NDF, offs=ends_N), tail])


@grouped_mm.register_fake
def _grouped_mm_fake(x_PD: torch.Tensor, w_NDF: torch.Tensor, ends_N: torch.Tensor) -> torch.Tensor:
    return x_PD.new_empty(x_PD.shape[0], w_NDF.shape[-1])


@torch.library.custom_op("longcat::grouped_mm_weight_grad", mutates_args=())
def grouped_mm_weight_grad(
    x_PD: torch.Tensor, grad_PF: torch.Tensor, ends_N: torch.Tensor
) -> torch.Tensor:
    """Per group i: x[rows of i]^T @ grad[rows of i], (N, D, F); rows after ends[-1]
    take no part."""
    return torch._grouped_mm(x_PD.transpose(0, 1), grad_PF, offs=ends_N)


@grouped_mm_weight_grad.register_fake
def _weight_grad_fake(
    x_PD: torch.Tensor, grad_PF: torch.Tensor, ends_N: torch.Tensor
) -> torch.Tensor:
    return x_PD.new_empty(ends_N.shape[0], x_PD.shape[1], grad_PF.shape[1])


def _grouped_mm_setup(ctx, inputs: tuple, output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _grouped_mm_backward(ctx, grad_PF: torch.Tensor) -> tuple:
    x_PD, w_NDF, ends_N = ctx.saved_tensors
    grad_x = grouped_mm(grad_PF, w_NDF.transpose(-2, -1), ends_N)  # zeros past the end
    return grad_x, grouped_mm_weight_grad(x_PD, grad_PF, ends_N), None


grouped_mm.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup)


def _transposed(w_NOI: torch.Tensor) -> torch.Tensor:
    """(N, in, out), contiguous, from weights stored (N, out, in)."""
    return w_NOI.transpose(-2, -1).contiguous()


@torch.library.custom_op("longcat::swiglu_experts_cpu", mutates_args=())
def swiglu_experts_cpu(
    x_TD: torch.Tensor,
    w_gate_NFD: torch.Tensor,
    w_up_NFD: torch.Tensor,
    w_down_NDF: torch.Tensor,
    order_P: torch.Tensor,
    ends_N: torch.Tensor,
    gates_P: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every FFN expert's SwiGLU on the CPU, from tokens to tokens: (y_TD, and the gate
    and up pre-activations a_PF, b_PF of the FFN pairs, kept for the backward).

    Pair p is (token p // K, its pick p % K); ``order_P`` lists the pairs sorted by
    expert, FFN experts first, ``ends_N`` where each expert's run ends, ``gates_P`` the
    gates in pair order; the weights come as stored (out x in), so the backward returns
    their gradients in that layout without transposed copies. On the CPU the host reads
    where the FFN pairs end at no cost, so only they are gathered, multiplied, gated and
    added back to their tokens; the zero-expert pairs (a third of them at K_e = 2K/3)
    are not touched at all. Each token's pairs are added in expert order, one index at
    a time (``index_add_`` runs serially on the CPU: the same sums every run). One op of
    our own, with a fake function, so the block still traces without a graph break;
    its backward is ``swiglu_experts_cpu_backward``. Rows of a_PF and b_PF past the FFN
    pairs are never written nor read."""
    T, P, end = x_TD.shape[0], order_P.shape[0], int(ends_N[-1])
    y_TD = x_TD.new_zeros(T, w_down_NDF.shape[1])
    a_PF, b_PF = (x_TD.new_empty(P, w_gate_NFD.shape[1]) for _ in range(2))
    if end:
        pair_R = order_P[:end]
        token_R = torch.div(pair_R, P // T, rounding_mode="floor")
        x_RD = x_TD.index_select(0, token_R)
        # x W^T with W^T a contiguous copy (2 MB at 64 experts): less than the strided
        # reads of a transposed operand in three grouped matmuls.
        a_RF = torch._grouped_mm(x_RD, _transposed(w_gate_NFD), offs=ends_N)
        b_RF = torch._grouped_mm(x_RD, _transposed(w_up_NFD), offs=ends_N)
        h_RF = F.silu(a_RF).mul_(b_RF).mul_(gates_P.index_select(0, pair_R)[:, None])
        y_RD = torch._grouped_mm(h_RF, _transposed(w_down_NDF), offs=ends_N)
        y_TD.index_add_(0, token_R, y_RD)
        a_PF[:end], b_PF[:end] = a_RF, b_RF
    return y_TD, a_PF, b_PF


@swiglu_experts_cpu.register_fake
def _swiglu_experts_cpu_fake(x_TD, w_gate_NFD, w_up_NFD, w_down_NDF, order_P, ends_N, gates_P):
    P, F_ = order_P.shape[0], w_gate_NFD.shape[1]
    y_TD = x_TD.new_empty(x_TD.shape[0], w_down_NDF.shape[1])
    return y_TD, x_TD.new_empty(P, F_), x_TD.new_empty(P, F_)


@torch.library.custom_op("longcat::swiglu_experts_cpu_backward", mutates_args=())
def swiglu_experts_cpu_backward(
    grad_y_TD: torch.Tensor,
    x_TD: torch.Tensor,
    w_gate_NFD: torch.Tensor,
    w_up_NFD: torch.Tensor,
    w_down_NDF: torch.Tensor,
    order_P: torch.Tensor,
    ends_N: torch.Tensor,
    gates_P: torch.Tensor,
    a_PF: torch.Tensor,
    b_PF: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``swiglu_experts_cpu`` for (x, w_gate, w_up, w_down, gates), over the
    FFN pairs only (zero-expert pairs get a zero gate gradient). Per pair, h = silu(a) b
    and y = g h W_down^T (weights out x in): dW_down = dy^T (g h), d(g h) = dy W_down,
    dg = sum d(g h) h, da = g d(g h) b silu'(a), db = g d(g h) silu(a), dW_gate = da^T x,
    dW_up = db^T x, dx = da W_gate + db W_up; x's pair gradients go back to their tokens
    as the forward's outputs did. Every weight is read as stored."""
    T, P, end = x_TD.shape[0], order_P.shape[0], int(ends_N[-1])
    grad_x_TD, grad_gates_P = torch.zeros_like(x_TD), torch.zeros_like(gates_P)
    if not end:
        zeros = (torch.zeros_like(w) for w in (w_gate_NFD, w_up_NFD, w_down_NDF))
        return grad_x_TD, *zeros, grad_gates_P
    pair_R = order_P[:end]
    token_R = torch.div(pair_R, P // T, rounding_mode="floor")
    x_RD, dy_RD = x_TD.index_select(0, token_R), grad_y_TD.index_select(0, token_R)
    g_R1 = gates_P.index_select(0, pair_R)[:, None]
    a_RF, b_RF = a_PF[:end], b_PF[:end]
    silu_RF = F.silu(a_RF)
    h_RF = silu_RF * b_RF
    dgh_RF = torch._grouped_mm(dy_RD, w_down_NDF, offs=ends_N)
    grad_w_down = torch._grouped_mm(dy_RD.transpose(0, 1), h_RF * g_R1, offs=ends_N)
    grad_gates_P.index_copy_(0, pair_R, h_RF.mul_(dgh_RF).sum(dim=-1))
    dh_RF = dgh_RF.mul_(g_R1)
    da_RF = torch.ops.aten.silu_backward(dh_RF * b_RF, a_RF)  # times silu'(a), fused
    db_RF = dh_RF.mul_(silu_RF)
    dx_RD = torch._grouped_mm(da_RF, w_gate_NFD, offs=ends_N)
    dx_RD += torch._grouped_mm(db_RF, w_up_NFD, offs=ends_N)
    grad_x_TD.index_add_(0, token_R, dx_RD)
    grad_w_gate = torch._grouped_mm(da_RF.transpose(0, 1), x_RD, offs=ends_N)
    grad_w_up = torch._grouped_mm(db_RF.transpose(0, 1), x_RD, offs=ends_N)
    return grad_x_TD, grad_w_gate, grad_w_up, grad_w_down, grad_gates_P


@swiglu_experts_cpu_backward.register_fake
def _swiglu_experts_cpu_backward_fake(
    grad_y_TD, x_TD, w_gate_NFD, w_up_NFD, w_down_NDF, order_P, ends_N, gates_P, a_PF, b_PF
) -> tuple:
    return (torch.empty_like(x_TD), torch.empty_like(w_gate_NFD), torch.empty_like(w_up_NFD),
            torch.empty_like(w_down_NDF), torch.empty_like(gates_P))  # fmt: skip


def _swiglu_setup(ctx, inputs: tuple, output: tuple) -> None:
    ctx.save_for_backward(*inputs, output[1], output[2])


def _swiglu_backward(ctx, grad_y_TD: torch.Tensor, *_pre_activations: torch.Tensor) -> tuple:
    """Only y carries a gradient; the pre-activations are outputs for the backward's sake."""
    x_TD, w_gate, w_up, w_down, order_P, ends_N, gates_P, a_PF, b_PF = ctx.saved_tensors
    grad_x, grad_w_gate, grad_w_up, grad_w_down, grad_gates = swiglu_experts_cpu_backward(
        grad_y_TD, x_TD, w_gate, w_up, w_down, order_P, ends_N, gates_P, a_PF, b_PF
    )
    return grad_x, grad_w_gate, grad_w_up, grad_w_down, None, None, grad_gates


swiglu_experts_cpu.register_autograd(_swiglu_backward, setup_context=_swiglu_setup)


def grouped_mm_usable(x: torch.Tensor, *widths: int) -> bool:
    """Whether ``torch._grouped_mm`` takes this input: float32/bf16/fp16 on CPU, bf16
    on CUDA (Hopper and later), and rows of every operand a multiple of 16 bytes."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if x.is_cuda:
        if x.dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device)[0] < 9:
            return False
    elif x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    return all(w * x.element_size() % 16 == 0 for w in widths)


class _PairsFromTokens(torch.autograd.Function):
    """x_TD -> x_PD with pair p reading token ``order_P[p] // K``; its backward adds
    each token's K pair gradients by the inverse permutation and a sum over K: the
    same additions in the same order every run (index_select's own backward is an
    index_add, atomic on a GPU)."""

    @staticmethod
    def forward(
        x_TD: torch.Tensor, order_P: torch.Tensor, inverse_P: torch.Tensor, K: int
    ) -> torch.Tensor:
        return x_TD.index_select(0, torch.div(order_P, K, rounding_mode="floor"))

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
        _, ctx.order_P, ctx.inverse_P, ctx.K = inputs

    @staticmethod
    def backward(ctx, grad_PD: torch.Tensor) -> tuple:
        return _TokensFromPairs.apply(grad_PD, ctx.order_P, ctx.inverse_P, ctx.K), None, None, None


class _TokensFromPairs(torch.autograd.Function):
    """y_PD -> y_TD, each token the sum of its K pairs (by the inverse permutation, in
    pick order); the dual of ``_PairsFromTokens`` and its backward."""

    @staticmethod
    def forward(
        y_PD: torch.Tensor, order_P: torch.Tensor, inverse_P: torch.Tensor, K: int
    ) -> torch.Tensor:
        return y_PD.index_select(0, inverse_P).view(-1, K, y_PD.shape[-1]).sum(dim=1)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
        _, ctx.order_P, ctx.inverse_P, ctx.K = inputs

    @staticmethod
    def backward(ctx, grad_TD: torch.Tensor) -> tuple:
        return _PairsFromTokens.apply(grad_TD, ctx.order_P, ctx.inverse_P, ctx.K), None, None, None


class GroupedExperts(nn.Module):
    """N SwiGLU experts as three stacked weights in ``nn.Linear`` layout (out x in),
    so one grouped matmul runs all of them.

    ``forward`` takes the tokens, the (token, pick) pairs sorted by expert (``order_P``,
    zero experts last), ``ends_N`` (int32, where each expert's run of pairs ends) and
    each pair's gate in pair order, and returns each token's sum of its gated FFN
    experts. Zero-expert pairs (past ``ends_N[-1]``) are not computed. The gate scales
    the hidden activations before ``w_down`` (the same product as scaling the output, by
    linearity, on F instead of D columns). On the CPU one op does it all on the FFN
    pairs only (``swiglu_experts_cpu``); on a GPU the pairs are gathered, run through
    three grouped matmuls over the whole buffer and summed back per token, with no host
    sync. Without a usable grouped matmul (float64, odd widths, older GPUs) a loop over
    the experts computes the same (with one host sync for the slice sizes)."""

    def __init__(self, n_experts: int, d_model: int, d_expert: int) -> None:
        super().__init__()
        self.w_gate = nn.Parameter(torch.empty(n_experts, d_expert, d_model))
        self.w_up = nn.Parameter(torch.empty(n_experts, d_expert, d_model))
        self.w_down = nn.Parameter(torch.empty(n_experts, d_model, d_expert))
        for w in (self.w_gate, self.w_up, self.w_down):  # nn.Linear's default init
            bound = 1.0 / w.shape[-1] ** 0.5
            nn.init.uniform_(w, -bound, bound)
        self.last_path: str | None = None  # "grouped_mm" or "loop", for benches

    def expert(self, index: int, x_D: torch.Tensor) -> torch.Tensor:
        """One expert alone (the reference the tests compare against)."""
        gate, up = F.linear(x_D, self.w_gate[index]), F.linear(x_D, self.w_up[index])
        return F.linear(F.silu(gate) * up, self.w_down[index])

    def forward(
        self,
        x_TD: torch.Tensor,
        order_P: torch.Tensor,
        ends_N: torch.Tensor,
        gates_P: torch.Tensor,
    ) -> torch.Tensor:
        T, P, F_ = x_TD.shape[0], order_P.shape[0], self.w_gate.shape[1]
        K = P // max(T, 1)
        grouped = grouped_mm_usable(x_TD, x_TD.shape[-1], F_)
        self.last_path = "grouped_mm" if grouped else "loop"
        stacked = [w.to(x_TD.dtype) for w in (self.w_gate, self.w_up, self.w_down)]
        if grouped and not x_TD.is_cuda:
            return swiglu_experts_cpu(x_TD, *stacked, order_P, ends_N, gates_P)[0]
        inverse_P = torch.empty_like(order_P)
        inverse_P[order_P] = torch.arange(P, device=order_P.device)
        x_PD = _PairsFromTokens.apply(x_TD, order_P, inverse_P, K)
        gate_P1 = gates_P[order_P][:, None]
        if grouped:  # CUDA: the whole buffer, no host sync; the tail comes back zeros
            w_gate, w_up, w_down = (w.transpose(-2, -1) for w in stacked)
            h_PF = F.silu(grouped_mm(x_PD, w_gate, ends_N)) * grouped_mm(x_PD, w_up, ends_N)
            y_PD = grouped_mm(h_PF * gate_P1, w_down, ends_N)
        else:
            parts, start = [], 0
            for index, end in enumerate(ends_N.tolist()):
                if end > start:
                    parts.append(self.expert(index, x_PD[start:end]) * gate_P1[start:end])
                start = end
            y_PD = torch.cat([*parts, x_PD.new_zeros(P - start, x_PD.shape[1])])
        # Back to (token, pick) order by the inverse permutation, then a sum over K.
        return _TokensFromPairs.apply(y_PD, order_P, inverse_P, K)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        """Checkpoints from before the stacking hold ``experts.{i}.w_gate.weight`` and so
        on (one SwiGLU module per expert): stack them into the three weights."""
        for name in ("w_gate", "w_up", "w_down"):
            old = [f"{prefix}{i}.{name}.weight" for i in range(self.w_gate.shape[0])]
            if prefix + name not in state_dict and all(k in state_dict for k in old):
                state_dict[prefix + name] = torch.stack([state_dict.pop(k) for k in old])
        super()._load_from_state_dict(state_dict, prefix, *args)


class SwiGLU(nn.Module):
    """The FFN of the dense blocks (the experts are the same SwiGLU, stacked in
    ``GroupedExperts``)."""

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
        self.experts = GroupedExperts(n_ffn, d_model, d_expert)

    def forward(self, x_TD: torch.Tensor) -> tuple[torch.Tensor, RouterInfo]:
        info = self.router(x_TD)
        dtype = (
            torch.get_autocast_dtype(x_TD.device.type)
            if torch.is_autocast_enabled(x_TD.device.type)
            else x_TD.dtype
        )
        gates_TK = info.probs_TE.gather(1, info.topk_TK).to(dtype)  # not renormalised
        is_ffn_TK = info.topk_TK < self.n_ffn
        # Zero experts: the identity, weighted by their gates; no FFN work at all.
        zero_gate_T1 = (gates_TK * ~is_ffn_TK).sum(dim=-1, keepdim=True)
        id_scale = self.gamma if self.gamma_scales_identity else 1.0
        out_TD = id_scale * zero_gate_T1 * x_TD
        # FFN experts: pairs sorted by expert id (zero experts, ids >= N, sort last);
        # expert i's pairs end where the sorted ids first exceed i. int32 ids: the
        # stable sort of small keys is twice as fast as of int64 ones on the CPU.
        expert_P = info.topk_TK.flatten().to(torch.int32)
        order_P = torch.argsort(expert_P, stable=True)
        ids_N = torch.arange(1, self.n_ffn + 1, device=x_TD.device, dtype=torch.int32)
        ends_N = torch.searchsorted(expert_P[order_P], ids_N).to(torch.int32)
        # gamma rides on the gates: T*K products instead of T*D.
        y_TD = self.experts(x_TD.to(dtype), order_P, ends_N, (self.gamma * gates_TK).flatten())
        return out_TD + y_TD.to(out_TD.dtype), info


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
