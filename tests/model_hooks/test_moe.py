from __future__ import annotations

import pytest
import torch

import model_hooks.moe as moe_module
from bench.moe import loop_dispatch
from model_hooks.moe import (
    MoE,
    RouterInfo,
    balance_loss,
    bias_mu,
    router_cosine_similarity,
    routing_stats,
)

N_FFN, N_ZERO, TOP_K, GAMMA = 4, 3, 2, 4.0


def _moe(gamma_scales_identity: bool = True) -> MoE:
    moe = MoE(16, 8, N_FFN, N_ZERO, TOP_K, GAMMA, gamma_scales_identity)
    torch.nn.init.normal_(moe.router.weight, std=0.5)
    return moe


def _count_expert_rows(moe: MoE) -> list[int]:
    """Rows each FFN expert processed: the slices the grouped matmul is given (a forward
    hook on the experts reads their ends; rows past the last end are not computed)."""
    rows = [0] * N_FFN

    def count(_module: torch.nn.Module, args: tuple, _out: torch.Tensor) -> None:
        ends = args[2].tolist()
        for i, n in enumerate(torch.diff(torch.tensor([0, *ends])).tolist()):
            rows[i] += n

    moe.experts.register_forward_hook(count)
    return rows


def _loop_reference(moe: MoE, x_TD: torch.Tensor) -> torch.Tensor:
    """The dispatch this module had before the grouped matmul (argsort of the FFN pairs,
    a Python loop over the experts on their slices, ``index_add`` back), kept in
    bench.moe as the grouped path's peer."""
    return loop_dispatch(moe, x_TD)[0]


@pytest.mark.parametrize("gamma_scales_identity", [True, False])
def test_zero_experts_return_their_input(gamma_scales_identity: bool) -> None:
    moe = _moe(gamma_scales_identity)
    moe.router.bias[:N_FFN] = -10.0  # no FFN expert can win the top-K
    x_TD = torch.randn(10, 16)
    out_TD, info = moe(x_TD)
    assert (info.topk_TK >= N_FFN).all()
    gate_T1 = info.probs_TE.gather(1, info.topk_TK).sum(-1, keepdim=True)
    scale = GAMMA if gamma_scales_identity else 1.0
    torch.testing.assert_close(out_TD, scale * gate_T1 * x_TD)


def test_tokens_on_zero_experts_do_no_ffn_work() -> None:
    moe = _moe()
    rows = _count_expert_rows(moe)
    moe.router.bias[:N_FFN] = -10.0
    moe(torch.randn(10, 16))
    assert rows == [0] * N_FFN
    # Mixed routing: each expert sees exactly the tokens that picked it, once each.
    moe.router.bias.zero_()
    _, info = moe(torch.randn(50, 16))
    picks = torch.bincount(info.topk_TK.flatten(), minlength=N_FFN + N_ZERO)
    assert rows == picks[:N_FFN].tolist()
    assert sum(rows) < 50 * TOP_K  # the zero-expert picks cost nothing


def test_moe_matches_per_token_reference() -> None:
    """Gates are the plain probabilities (bias only picks, no renormalisation)."""
    moe = _moe()
    moe.router.bias[:N_FFN] = torch.tensor([0.3, -0.2, 0.1, 0.0])
    x_TD = torch.randn(20, 16)
    out_TD, info = moe(x_TD)
    for t in range(20):
        want = torch.zeros(16)
        for e in info.topk_TK[t].tolist():
            p = info.probs_TE[t, e]
            want += GAMMA * p * (moe.experts.expert(e, x_TD[t]) if e < N_FFN else x_TD[t])
        torch.testing.assert_close(out_TD[t], want, rtol=1e-5, atol=1e-6)
    assert (info.probs_TE.sum(-1) - 1).abs().max() < 1e-6
    assert info.probs_TE.dtype == torch.float32


def test_balance_loss_hand_computed() -> None:
    # N=4 FFN experts in D=2 groups {0,1} {2,3}; zero experts {4,5}; K=2, K_e=1.5, T=2.
    probs_TE = torch.tensor(
        [[0.3, 0.2, 0.1, 0.1, 0.2, 0.1], [0.1, 0.1, 0.4, 0.2, 0.1, 0.1]], requires_grad=True
    )
    topk_TK = torch.tensor([[0, 4], [2, 3]])
    loss = balance_loss(
        RouterInfo(probs_TE, topk_TK), n_ffn=4, n_groups=2, target_ffn=1.5, alpha=0.1
    )
    # P = (0.35, 0.4, 0.25); picks (1, 2, 1); f_ffn = 2/(1.5*2) * picks, f_zero = 1/(0.5*2)
    f = torch.tensor([2 / 3, 4 / 3, 1.0])
    P = torch.tensor([0.35, 0.4, 0.25])
    want = 0.1 * (f * P).sum()
    torch.testing.assert_close(loss, want)
    loss.backward()  # counts carry no gradient: d/dp_t,i = alpha * f_group(i) / T
    grad_row = 0.1 * f[[0, 0, 1, 1, 2, 2]] / 2
    torch.testing.assert_close(probs_TE.grad, grad_row.expand(2, 6))


def _toy_router_run(direction: float, steps: int, update) -> tuple[object, list[float]]:
    """A router of 8 FFN and 4 zero experts (top 4) whose zero experts start favoured
    (direction 1) or shunned (-1), fed 512-token batches; ``update(router, info, step)``
    adjusts its biases after each. Returns the router and FFN experts per token."""
    moe = MoE(32, 8, 8, 4, 4, 1.0)
    router = moe.router
    torch.nn.init.normal_(router.weight, std=0.3)
    with torch.no_grad():
        router.weight[8:, 0] += direction  # zero experts favoured (or shunned)
    g = torch.Generator().manual_seed(1)
    seen = []
    for step in range(steps):
        x_TD = torch.randn(512, 32, generator=g)
        x_TD[:, 0] += 2.0
        info = router(x_TD)
        seen.append(routing_stats(info, 8)["ffn_experts_per_token"])
        update(router, info, step)
    return router, seen


def test_bias_controller_reaches_target_ffn_experts() -> None:
    n_ffn, k_e = 8, 2.5
    for direction in (1.0, -1.0):  # start with too few, then too many FFN experts
        router, seen = _toy_router_run(
            direction,
            300,
            lambda r, info, step: r.update_bias(info.topk_TK, bias_mu(step, 0.1, 100, 0.01), k_e),
        )
        assert abs(seen[0] - k_e) > 0.3  # the toy really starts off target
        assert abs(sum(seen[-50:]) / 50 - k_e) < 0.05 * k_e
        assert (router.bias[n_ffn:] == 0).all()


def test_bias_mu_schedule() -> None:
    assert bias_mu(0, 0.1, 1000, 0.01) == 0.1
    assert bias_mu(1999, 0.1, 1000, 0.01) == pytest.approx(0.05)
    assert bias_mu(2000, 0.1, 1000, 0.01) == pytest.approx(0.025)
    assert bias_mu(10**6, 0.1, 1000, 0.01) == 0.01


def test_router_cosine_similarity_and_stats() -> None:
    moe = _moe()
    with torch.no_grad():
        moe.router.weight.copy_(torch.ones_like(moe.router.weight))
    assert router_cosine_similarity(moe.router) == pytest.approx(1.0)
    info = RouterInfo(torch.full((2, 7), 1 / 7), torch.tensor([[0, 5], [0, 1]]))
    stats = routing_stats(info, N_FFN)
    assert stats["ffn_experts_per_token"] == 1.5
    assert stats["zero_expert_share"] == 0.25
    assert stats["load_max_over_mean"] == pytest.approx(2 / 0.75)  # loads (2,1,0,0)


@pytest.mark.parametrize("grouped", [True, False])
def test_grouped_dispatch_equals_the_loop_with_gradients(grouped: bool, monkeypatch) -> None:
    """The grouped matmul (and its fallback loop) against the old argsort + loop +
    index_add dispatch: same outputs, same gradients of the input and every weight."""
    if not grouped:
        monkeypatch.setattr(moe_module, "grouped_mm_usable", lambda *_: False)
    moe = _moe()
    moe.router.bias[:N_FFN] = torch.tensor([0.3, -0.2, 0.1, 0.0])
    x_TD = torch.randn(64, 16)
    results = []
    for forward in (lambda x: moe(x)[0], lambda x: _loop_reference(moe, x)):
        moe.zero_grad(set_to_none=True)
        leaf = x_TD.clone().requires_grad_()
        out = forward(leaf)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [p.grad.clone() for p in (moe.experts.w_gate, moe.experts.w_up, moe.experts.w_down)]
        results.append([out.detach(), leaf.grad, moe.router.weight.grad.clone(), *grads])
    assert moe.experts.last_path == ("grouped_mm" if grouped else "loop")
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_moe_block_traces_into_one_graph() -> None:
    """No graph break in the MoE block (no host sync, no data-dependent shape), and the
    traced block (aot_eager: dynamo + AOT autograd, no C compiler) gives the eager
    outputs and gradients."""
    moe = _moe()
    x_TD = torch.randn(40, 16)
    explained = torch._dynamo.explain(moe)(x_TD)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    compiled = torch.compile(moe, backend="aot_eager", fullgraph=True)
    results = []
    for module in (moe, compiled):
        moe.zero_grad(set_to_none=True)
        leaf = x_TD.clone().requires_grad_()
        out, _ = module(leaf)
        out.square().sum().backward()
        results.append([out.detach(), leaf.grad, moe.experts.w_up.grad.clone()])
    torch._dynamo.reset()
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_old_per_expert_checkpoints_load_into_stacked_experts() -> None:
    moe = _moe()
    old = {k: v for k, v in moe.state_dict().items() if not k.startswith("experts.")}
    for i in range(N_FFN):
        for name in ("w_gate", "w_up", "w_down"):
            old[f"experts.{i}.{name}.weight"] = getattr(moe.experts, name)[i].clone() + 1
    fresh = _moe()
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh.experts.w_up, moe.experts.w_up + 1)


def test_quantile_controller_reaches_target_ffn_experts() -> None:
    """The quantile controller from both sides, at a fixed step of 0.5: within 5% of
    K_e on average over the last 30 of 80 batches, zero experts' biases untouched."""
    n_ffn, k_e = 8, 2.5
    for direction in (1.0, -1.0):
        router, seen = _toy_router_run(
            direction, 80, lambda r, info, step: r.update_bias_quantile(info.probs_TE, 0.5, k_e)
        )
        assert abs(seen[0] - k_e) > 0.3
        assert abs(sum(seen[-30:]) / 30 - k_e) < 0.05 * k_e
        assert (router.bias[n_ffn:] == 0).all()


def test_quantile_controller_full_step_gives_the_batch_k_e_with_skewed_loads() -> None:
    """At step 1 the update gives the batch it was computed on exactly K_e FFN experts
    per token, even when the loads are far apart: the common shift is taken after the
    balance shifts (taken independently, the balance moved the count off K_e: 2.32),
    and the loads come closer."""
    N, Z, K, T, k_e = 8, 4, 4, 2048, 2.5
    router = MoE(16, 8, N, Z, K, 1.0).router
    g = torch.Generator().manual_seed(0)
    skew_E = torch.linspace(-1.5, 1.0, N + Z)
    for _ in range(3):
        order = torch.randperm(N + Z, generator=g)
        probs_TE = (0.3 * torch.randn(T, N + Z, generator=g) + skew_E[order]).softmax(-1)
        router.bias.zero_()
        before = (probs_TE + router.bias).topk(K, dim=-1).indices
        spread_before = torch.bincount(before.flatten(), minlength=N + Z)[:N].float().std()
        router.update_bias_quantile(probs_TE, 1.0, k_e)
        after = (probs_TE + router.bias).topk(K, dim=-1).indices
        assert (after < N).sum(-1).float().mean().item() == pytest.approx(k_e, abs=1 / T)
        assert torch.bincount(after.flatten(), minlength=N + Z)[:N].float().std() < spread_before
        assert (router.bias[N:] == 0).all()
