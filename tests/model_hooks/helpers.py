"""The tiny model every model_hooks test uses: small enough for a two-core CI box."""

from __future__ import annotations

from model_hooks.model import ModelConfig

TINY = ModelConfig(
    vocab_size=64, d_model=32, n_layers=2, n_heads=2, q_lora_rank=16, kv_lora_rank=8,
    qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, d_ffn=64, d_expert=16,
    n_ffn_experts=4, n_zero_experts=2, top_k=2, target_ffn_experts=1.5,
)  # fmt: skip
