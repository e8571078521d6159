"""bench.moe's ablation reports the compute each model actually spent, so "equal
compute" is checked, not assumed."""

from __future__ import annotations

import argparse

from bench.moe import FIXED_TOP4, WITH_ZERO, ablation_losses


def test_ablation_reports_the_ffn_experts_spent_over_the_whole_run() -> None:
    args = argparse.Namespace(ablation_curriculum=None, batch_size=2, seq_len=32)
    fixed = ablation_losses(FIXED_TOP4, seed=0, steps=3, args=args)
    # Without zero experts every one of the 4 picks is an FFN expert, at every step.
    assert fixed["ffn_experts_per_token_all_steps"] == 4.0
    assert fixed["ffn_experts_per_token_step_range"] == [4.0, 4.0]
    zero = ablation_losses(WITH_ZERO, seed=0, steps=3, args=args)
    low, high = zero["ffn_experts_per_token_step_range"]
    assert 0.0 <= low <= zero["ffn_experts_per_token_all_steps"] <= high <= WITH_ZERO.top_k
    assert zero["final_lm_loss"] > 0
