from __future__ import annotations

import pytest
import torch

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
    """Rows each FFN expert processed (a forward hook per expert)."""
    rows = [0] * len(moe.experts)
    for i, expert in enumerate(moe.experts):
        expert.register_forward_hook(
            lambda _m, args, _out, i=i: rows.__setitem__(i, rows[i] + args[0].shape[0])
        )
    return rows


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
            want += GAMMA * p * (moe.experts[e](x_TD[t]) if e < N_FFN else x_TD[t])
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


def test_bias_controller_reaches_target_ffn_experts() -> None:
    n_ffn, n_zero, top_k, k_e = 8, 4, 4, 2.5
    for direction in (1.0, -1.0):  # start with too few, then too many FFN experts
        moe = MoE(32, 8, n_ffn, n_zero, top_k, 1.0)
        router = moe.router
        torch.nn.init.normal_(router.weight, std=0.3)
        with torch.no_grad():
            router.weight[n_ffn:, 0] += direction  # zero experts favoured (or shunned)
        g = torch.Generator().manual_seed(1)
        seen = []
        for step in range(300):
            x_TD = torch.randn(512, 32, generator=g)
            x_TD[:, 0] += 2.0
            info = router(x_TD)
            seen.append(routing_stats(info, n_ffn)["ffn_experts_per_token"])
            router.update_bias(info.topk_TK, bias_mu(step, 0.1, 100, 0.01), k_e)
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
