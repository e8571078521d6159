"""The pieces of one optimiser step (``model_hooks/train_step.py``): R_g, the hidden
z-loss, the bias controller's gain schedule and where it steers from. The step itself
runs in ``test_train.py``."""

from __future__ import annotations

import pytest
import torch

from model_hooks.model import Model
from model_hooks.moe import balance_loss
from model_hooks.optimizer import build_optimizer
from model_hooks.synthetic import SyntheticBatches
from model_hooks.train_config import TrainConfig
from model_hooks.train_step import bias_decay_steps, grad_norm_ratio, hidden_z_loss, train_step
from tests.model_hooks.helpers import TINY


def _source() -> SyntheticBatches:
    return SyntheticBatches(batch_size=2, seq_len=32, vocab_size=TINY.vocab_size, seed=3)


def test_grad_norm_ratio_is_linear_in_alpha() -> None:
    model = Model(TINY)
    batch = _source().batch_at(0)
    logits, _, infos = model(batch["tokens"], batch["positions"], batch["doc_index"])
    lm = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten())
    ratios = [
        grad_norm_ratio(lm, balance_loss(infos[0], 4, 2, 1.5, alpha), infos)
        for alpha in (0.01, 0.02)
    ]
    assert ratios[1] == pytest.approx(2 * ratios[0], rel=1e-4)


def test_z_loss_averages_over_real_tokens_only() -> None:
    h_BTD = torch.randn(2, 5, 8)
    mask_BT = torch.tensor([[True] * 5, [True, True, False, False, False]])
    z_BT = torch.logsumexp(h_BTD.abs(), dim=-1).pow(2)
    want = 0.5 * z_BT[mask_BT].mean()
    torch.testing.assert_close(hidden_z_loss(h_BTD, 0.5, mask_BT), want)
    padded = h_BTD.clone()
    padded[1, 2:] = 100.0  # whatever the padding holds, the loss does not move
    torch.testing.assert_close(hidden_z_loss(padded, 0.5, mask_BT), want)
    assert not torch.allclose(hidden_z_loss(padded, 0.5), want)  # the unmasked mean does


def test_bias_controller_decay_scales_with_the_run() -> None:
    assert bias_decay_steps(TrainConfig(out_dir="x", steps=100)) == 50
    assert bias_decay_steps(TrainConfig(out_dir="x", steps=100_000)) == 50_000
    assert bias_decay_steps(TrainConfig(out_dir="x", steps=100, bias_mu_decay_steps=7)) == 7


@pytest.mark.parametrize("after_step", [True, False])
def test_bias_after_step_steers_from_the_routing_after_the_step(after_step: bool) -> None:
    """With ``bias_after_step`` and a full controller step, the batch routed again after
    train_step gets exactly K_e FFN experts per token in every layer: the biases were
    set from the stepped model's routing, layer by layer (the second layer from the
    input the first gives with its new biases). Without it they were set from the
    routing the step started from, and the step (a large LR here) moved it away."""
    torch.manual_seed(0)
    model = Model(TINY)
    cfg = TrainConfig(out_dir="unused", steps=6, lr=0.05, warmup_steps=0, device="cpu",
                      bias_after_step=after_step, bias_mu0=1.0, bias_mu_decay_steps=10**6,
                      grad_ratio_every=0)  # fmt: skip
    batch = next(SyntheticBatches(batch_size=4, seq_len=64, vocab_size=TINY.vocab_size, seed=3))
    inputs = (batch["tokens"], batch["positions"], batch["doc_index"])
    real_T = batch["token_mask"].flatten()
    with torch.no_grad():
        _, _, infos = model(*inputs)
        routed = model.routing(*inputs)
    assert all(torch.equal(a.topk_TK, b.topk_TK) for a, b in zip(infos, routed, strict=True))
    train_step(model, build_optimizer(model, cfg), batch, cfg, 0)
    with torch.no_grad():
        again = model.routing(*inputs)
    n_ffn, k_e, T = TINY.n_ffn_experts, TINY.target_ffn_experts, int(real_T.sum())
    misses = [abs((i.topk_TK[real_T] < n_ffn).sum(-1).float().mean().item() - k_e) for i in again]
    if after_step:
        assert max(misses) <= 1 / T
    else:
        assert max(misses) > 0.05 * k_e
