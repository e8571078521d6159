from __future__ import annotations

import math

import pytest
import torch

import model_hooks.model as model_module
from model_hooks.model import (
    DocumentSegments,
    Model,
    ModelConfig,
    document_attention,
    grow,
    rope_cos_sin,
)
from model_hooks.optimizer import build_optimizer
from model_hooks.synthetic import SyntheticBatches, pack_rows
from model_hooks.train_config import TrainConfig
from model_hooks.train_step import train_step
from tests.model_hooks.helpers import TINY


def _docs(*lengths: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, TINY.vocab_size, (n,), generator=g) for n in lengths]


def _one_document(T: int, B: int = 1) -> DocumentSegments:
    """Each row one causal sequence."""
    return DocumentSegments.from_doc_index(torch.zeros(B, T, dtype=torch.long))


def _forward(model: Model, batch: dict) -> torch.Tensor:
    logits, _, _ = model(batch["tokens"], batch["positions"], batch["doc_index"])
    return logits


def test_packed_batch_resets_positions_and_masks_boundaries() -> None:
    a, b = _docs(5, 4)
    batch = pack_rows([[(a, 0), (b, 1)]], seq_len=12, domain_names=["x", "y"])
    assert batch["positions"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2]
    assert batch["doc_index"][0].tolist() == [0] * 5 + [1] * 4 + [2] * 3
    assert batch["domain_ids"][0, :9].tolist() == [0] * 5 + [1] * 4
    # No target crosses a document boundary; padding is never in the loss.
    assert batch["loss_mask"][0].tolist() == [True] * 4 + [False] + [True] * 3 + [False] * 4
    assert batch["targets"][0, :4].tolist() == a[1:].tolist()
    synth = SyntheticBatches(2, 32, 64).batch_at(0)
    starts = synth["positions"] == 0
    new_doc = torch.ones_like(starts)
    new_doc[:, 1:] = synth["doc_index"][:, 1:] != synth["doc_index"][:, :-1]
    assert torch.equal(starts, new_doc)


def test_no_attention_across_documents() -> None:
    model = Model(TINY).eval()
    a, b = _docs(20, 24)
    base = pack_rows([[(a, 0), (b, 0)]], 44, ["x"])
    changed = pack_rows([[(torch.randint(1, 64, (20,)), 0), (b, 0)]], 44, ["x"])
    with torch.no_grad():
        logits, logits_changed = _forward(model, base), _forward(model, changed)
        torch.testing.assert_close(logits_changed[0, 20:], logits[0, 20:], rtol=0, atol=1e-5)
        assert not torch.allclose(logits_changed[0, :20], logits[0, :20])
        # The test can fail: with one document index the change leaks through.
        for batch in (base, changed):
            batch["doc_index"] = torch.zeros_like(batch["doc_index"])
        leaked = _forward(model, changed)[0, 20:] - _forward(model, base)[0, 20:]
        assert leaked.abs().max() > 1e-3


def test_document_in_a_packed_row_equals_document_alone() -> None:
    model = Model(TINY).eval()
    a, b = _docs(13, 19)
    packed = pack_rows([[(a, 0), (b, 0)]], 32, ["x"])
    alone = pack_rows([[(b, 0)]], 19, ["x"])
    with torch.no_grad():
        torch.testing.assert_close(
            _forward(model, packed)[0, 13:], _forward(model, alone)[0], rtol=0, atol=1e-5
        )


def test_rope_theta_comes_from_config() -> None:
    cos_a, _ = rope_cos_sin(torch.arange(8)[None], 4, 10_000.0)
    cos_b, _ = rope_cos_sin(torch.arange(8)[None], 4, 5e6)
    assert torch.equal(cos_a[0, 0], torch.ones(4))  # position 0 is never rotated
    assert not torch.allclose(cos_a, cos_b)
    batch = pack_rows([[(d, 0)] for d in _docs(16)], 16, ["x"])
    torch.manual_seed(0)
    short = Model(TINY).eval()
    long = Model(TINY.model_copy(update={"rope_theta": 5e6})).eval()
    long.load_state_dict(short.state_dict())
    with torch.no_grad():
        assert not torch.allclose(_forward(short, batch), _forward(long, batch))


def test_mla_latents_are_variance_aligned() -> None:
    attn = Model(TINY).layers[0].attn0
    seen = {}
    attn.q_up.register_forward_pre_hook(lambda _m, args: seen.update(q=args[0]))
    attn.kv_up.register_forward_pre_hook(lambda _m, args: seen.update(kv=args[0]))
    T = 6
    cos, sin = rope_cos_sin(torch.arange(T)[None], TINY.qk_rope_head_dim, TINY.rope_theta)
    attn(torch.randn(1, T, 32), cos, sin, _one_document(T))
    for key, rank in (("q", TINY.q_lora_rank), ("kv", TINY.kv_lora_rank)):
        rms = seen[key].pow(2).mean(-1).sqrt()  # norm gains start at 1
        torch.testing.assert_close(
            rms, torch.full_like(rms, math.sqrt(32 / rank)), rtol=1e-3, atol=0
        )


def test_scmoe_layer_wiring() -> None:
    block = Model(TINY).layers[0]
    T = 10
    x = torch.randn(1, T, 32)
    cos, sin = rope_cos_sin(torch.arange(T)[None], TINY.qk_rope_head_dim, TINY.rope_theta)
    mask = _one_document(T)
    a1 = x + block.attn0(block.attn_norm0(x), cos, sin, mask)
    u = block.ffn_norm0(a1)
    m, _ = block.moe(u[0])  # the MoE reads FFN0's input
    f1 = a1 + block.ffn0(u)
    a2 = f1 + block.attn1(block.attn_norm1(f1), cos, sin, mask)
    want = a2 + block.ffn1(block.ffn_norm1(a2)) + m[None]
    got, _ = block(x, cos, sin, mask)
    torch.testing.assert_close(got, want)


def test_forward_returns_pre_norm_hidden_and_routing() -> None:
    model = Model(TINY)
    batch = SyntheticBatches(2, 16, 64).batch_at(0)
    logits, h, infos = model(batch["tokens"], batch["positions"], batch["doc_index"])
    assert logits.shape == (2, 16, 64) and h.shape == (2, 16, 32)
    torch.testing.assert_close(logits, model.lm_head(model.norm(h)))
    assert len(infos) == 2 and infos[0].probs_TE.shape == (32, 6)
    assert infos[0].topk_TK.shape == (32, 2)


def test_growth_stacks_layers_and_optimizer_moments(tmp_path) -> None:
    model = Model(TINY)
    cfg = TrainConfig(out_dir=str(tmp_path))
    opt = build_optimizer(model, cfg)
    source = SyntheticBatches(2, 16, 64)
    for step in range(2):
        train_step(model, opt, next(source), cfg, step)
    big, big_opt_state = grow(model, opt.state_dict())
    n = TINY.n_layers
    assert big.cfg.n_layers == 2 * n and len(big.layers) == 2 * n
    x = torch.randn(1, 8, 32)
    cos, sin = rope_cos_sin(torch.arange(8)[None], TINY.qk_rope_head_dim, TINY.rope_theta)
    mask = _one_document(8)
    for i in range(n):
        lo, hi = big.layers[i].state_dict(), big.layers[i + n].state_dict()
        assert lo.keys() == hi.keys() and all(torch.equal(lo[k], hi[k]) for k in lo)
        assert torch.equal(lo["moe.router.bias"], model.layers[i].moe.router.bias)
        with torch.no_grad():
            torch.testing.assert_close(
                big.layers[i](x, cos, sin, mask)[0], big.layers[i + n](x, cos, sin, mask)[0]
            )
    big_opt = build_optimizer(big, cfg)
    big_opt.load_state_dict(big_opt_state)
    old_state = {name: opt.state[p] for name, p in model.named_parameters() if p in opt.state}
    for name, p in big.named_parameters():
        src = name.replace(f"layers.{n}.", "layers.0.").replace(f"layers.{n + 1}.", "layers.1.")
        if src in old_state:
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(big_opt.state[p][key], old_state[src][key])
    train_step(big, big_opt, next(source), cfg, 2)  # the grown model keeps training


def test_config_rejects_impossible_values() -> None:
    with pytest.raises(ValueError):
        ModelConfig(top_k=3, target_ffn_experts=4.0)
    with pytest.raises(ValueError):
        ModelConfig(qk_rope_head_dim=5)
    with pytest.raises(ValueError):
        ModelConfig(unknown_knob=1)


def _dense_reference(
    q_NHC: torch.Tensor,
    k_NHC: torch.Tensor,
    v_NHV: torch.Tensor,
    segments: DocumentSegments,
    backend: str = "auto",
) -> tuple[torch.Tensor, str]:
    """The old way, test-only: one (N, N) block-diagonal causal mask over the flattened
    tokens, through SDPA's math path."""
    N = q_NHC.shape[0]
    cu = segments.cu_seqlens.long()
    seg_N = torch.repeat_interleave(torch.arange(len(cu) - 1), cu.diff())
    mask_NN = (seg_N[:, None] == seg_N[None, :]) & torch.ones(N, N, dtype=torch.bool).tril()
    y_HNV = torch.nn.functional.scaled_dot_product_attention(
        q_NHC.transpose(0, 1), k_NHC.transpose(0, 1), v_NHV.transpose(0, 1), attn_mask=mask_NN
    )
    return y_HNV.transpose(0, 1), "dense"


@pytest.mark.parametrize(
    "lengths", [[1, 5, 2, 24], [32], [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2], [17, 9, 6]]
)
def test_document_attention_equals_dense_mask_with_gradients(lengths: list[int]) -> None:
    H, C, V = 2, 12, 8  # v narrower than q/k, as in MLA
    N = sum(lengths)
    segments = DocumentSegments.from_cu_seqlens(torch.tensor([0, *lengths]).cumsum(0), "cpu")
    g = torch.Generator().manual_seed(len(lengths))
    inputs = [torch.randn(N, H, d, generator=g, dtype=torch.float64) for d in (C, C, V)]
    grad_out = torch.randn(N, H, V, generator=g, dtype=torch.float64)
    results = []
    for attention in (document_attention, _dense_reference):
        leaves = [t.clone().requires_grad_() for t in inputs]
        y, _ = attention(*leaves, segments)
        (y * grad_out).sum().backward()
        results.append([y.detach(), *(t.grad for t in leaves)])
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want)


def test_segment_layout_is_linear_in_tokens() -> None:
    lengths = [1, 2, 3, 5, 8, 100, 33, 64, 700, 4000, 1]
    segments = DocumentSegments.from_cu_seqlens(torch.tensor([0, *lengths]).cumsum(0), "cpu")
    assert segments.padded_tokens < 2 * sum(lengths)  # buckets pad to under 2x
    assert segments.max_len == 4000
    assert sorted(segments.dest_index.tolist()) == sorted(set(segments.dest_index.tolist()))


def test_model_without_dense_mask_equals_dense_reference(monkeypatch) -> None:
    """Whole forward + backward of the model, document attention against the dense
    mask, on a packed batch with padding."""
    batch = SyntheticBatches(2, 40, 64, seed=5).batch_at(0)
    batch["tokens"][1, 30:] = 0  # a padded tail: a segment of its own
    batch["doc_index"][1, 30:] = 99
    batch["positions"][1, 30:] = torch.arange(10)
    grads = []
    for attention in (document_attention, _dense_reference):
        monkeypatch.setattr(model_module, "document_attention", attention)
        torch.manual_seed(0)
        model = Model(TINY)
        logits = _forward(model, batch)
        logits.square().mean().backward()
        grads.append((logits.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_cu_seqlens_and_doc_index_give_the_same_segments() -> None:
    batch = SyntheticBatches(3, 24, 64, seed=2).batch_at(0)
    from_doc = DocumentSegments.from_doc_index(batch["doc_index"])
    model = Model(TINY).eval()
    args = (batch["tokens"], batch["positions"], batch["doc_index"])
    with torch.no_grad():
        torch.testing.assert_close(model(*args)[0], model(*args, from_doc.cu_seqlens)[0])
    crossing = torch.tensor([0, 10, 30, 72], dtype=torch.int32)  # 10..30 spans rows 0 and 1
    with pytest.raises(ValueError, match="crosses a row boundary"):
        model(*args, crossing)


def test_rope_bases_follow_the_report() -> None:
    """LongCat-Flash: RoPE base 1e6 for pre- and mid-training, 5e6 at 32k, 1e7 at 128k,
    in the model default and in every bundled mix."""
    from pathlib import Path

    from pipeline.mix_config import load_mix

    assert ModelConfig().rope_theta == 1e6
    mixes = Path(__file__).resolve().parents[2] / "mixes"
    long_bases = {32768: 5e6, 131072: 1e7}
    seen = {}
    for name in ("demo", "longcat_pretrain", "longcat_midtrain", "longcat_long_context"):
        for phase in load_mix(mixes / f"{name}.yaml").phases:
            long = phase.name.startswith("long_context")
            seen[f"{name}:{phase.name}"] = phase.rope_theta
            if not long:
                assert phase.rope_theta == 1e6, (name, phase.name)
            elif phase.seq_len in long_bases:
                assert phase.rope_theta == long_bases[phase.seq_len], (name, phase.name)
    assert seen["demo:long_context"] == 5e6 and seen["demo:long_context_2"] == 1e7
