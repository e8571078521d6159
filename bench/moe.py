"""Do zero-computation experts save compute? Training tokens per second of the same
tiny LongCat-style model with zero experts (K_e = 2/3 of K FFN experts per token on
average) against without (every one of the K picks is an FFN expert), on CPU.

Both models have the same N FFN experts, top-K and widths; the zero-expert model adds
Z identity experts. With a router near uniform at the start, the expected FFN experts
per token is K * N / (N + Z), so N = 2Z gives K_e = 2K/3 from the first step and the
bias controller holds it there. Two figures: the MoE block alone (forward + backward)
and a whole train_step; the prediction for each is the ratio of matmul work per token
(2 x active weights), which is what zero experts can save.

Times are CPU seconds of this process with one torch thread (best of the timed steps).

A third figure (``dispatch``): the MoE block's forward + backward tokens/s at 8, 64 and
256 FFN experts with the same work per token (top-K, expert width and zero-expert share
fixed), the grouped dispatch (``torch._grouped_mm``, no host sync) against the loop it
replaced (argsort, a Python loop over the experts, ``index_add``; kept here as the peer),
same weights, same tokens, same run.

And with ``--ablation``, the report's Fig. 3a at toy scale: the zero-expert model
(K = 6 of 16 FFN + 8 zero experts, K_e = 4) against the same model without zero experts
and a fixed top-4 (the same 4 FFN experts per token on average: equal compute), trained
on the same synthetic batches from the same init seed, for several seeds; the LM loss
difference (zero experts minus fixed top-k, mean of the last 10 steps) per seed, its
mean and its standard deviation, with the FFN experts per token each model spent over
the whole run (token-weighted) and its per-step range, so equal compute can be checked.

    python -m bench.moe [--steps 6] [--batch-size 8] [--seq-len 256] [--quick] [--json PATH]
    python -m bench.moe --ablation [--ablation-seeds 3] [--ablation-steps 150]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from bench.contract import add_contract_arguments, row, write_json
from model_hooks.model import Model, ModelConfig
from model_hooks.moe import MoE, RouterInfo, routing_stats
from model_hooks.optimizer import build_optimizer
from model_hooks.synthetic import SyntheticBatches
from model_hooks.token_stream import TokenStream
from model_hooks.train_config import TrainConfig
from model_hooks.train_step import train_step

BASE = {
    "vocab_size": 256, "d_model": 128, "n_layers": 2, "n_heads": 4, "q_lora_rank": 64,
    "kv_lora_rank": 32, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
    "d_ffn": 256, "d_expert": 128, "n_ffn_experts": 16, "top_k": 6,
}  # fmt: skip
WITH_ZERO = ModelConfig(**BASE, n_zero_experts=8, target_ffn_experts=4.0)
WITHOUT_ZERO = ModelConfig(**BASE, n_zero_experts=0, target_ffn_experts=6.0)
FIXED_TOP4 = ModelConfig(**{**BASE, "top_k": 4}, n_zero_experts=0, target_ffn_experts=4.0)


def matmul_weights_per_token(cfg: ModelConfig, ffn_per_token: float) -> float:
    """Weights a token multiplies with (the embedding is a lookup, not a matmul)."""
    model = Model(cfg)
    total = sum(p.numel() for n, p in model.named_parameters() if "experts" not in n)
    total -= model.embed.weight.numel()
    experts = model.layers[0].moe.experts
    per_expert = sum(p.numel() for p in experts.parameters()) // cfg.n_ffn_experts
    return total + cfg.n_layers * ffn_per_token * per_expert


def train_tokens_per_second(cfg: ModelConfig, args: argparse.Namespace) -> tuple[float, float]:
    """(tokens/s of train_step, measured FFN experts per token), after warm-up steps."""
    torch.manual_seed(0)
    model = Model(cfg)
    tcfg = TrainConfig(out_dir="unused", steps=1000, warmup_steps=2, grad_ratio_every=0)
    opt = build_optimizer(model, tcfg)
    source = SyntheticBatches(args.batch_size, args.seq_len, cfg.vocab_size)
    for step in range(args.warmup):
        train_step(model, opt, next(source), tcfg, step)
    best, ffn = math.inf, []
    for step in range(args.warmup, args.warmup + args.steps):
        batch = next(source)
        start = time.process_time()
        record = train_step(model, opt, batch, tcfg, step)
        best = min(best, time.process_time() - start)
        ffn.append(sum(record["ffn_experts_per_token"]) / cfg.n_layers)
    return args.batch_size * args.seq_len / best, sum(ffn) / len(ffn)


def moe_tokens_per_second(cfg: ModelConfig, tokens: int, repeat: int) -> tuple[float, float]:
    """(tokens/s of one MoE block, forward + backward, FFN experts per token)."""
    torch.manual_seed(0)
    moe = MoE(cfg.d_model, cfg.d_expert, cfg.n_ffn_experts, cfg.n_zero_experts, cfg.top_k,
              cfg.gamma)  # fmt: skip
    torch.nn.init.normal_(moe.router.weight, std=cfg.init_std)
    x_TD = torch.randn(tokens, cfg.d_model, requires_grad=True)
    best, ffn = math.inf, 0.0
    for _ in range(repeat):
        start = time.process_time()
        out_TD, info = moe(x_TD)
        out_TD.square().mean().backward()
        best = min(best, time.process_time() - start)
        ffn = routing_stats(info, cfg.n_ffn_experts)["ffn_experts_per_token"]
    return tokens / best, ffn


def loop_dispatch(moe: MoE, x_TD: torch.Tensor) -> tuple[torch.Tensor, RouterInfo]:
    """The MoE forward as it was before the grouped matmul: the peer of ``dispatch``."""
    info = moe.router(x_TD)
    T, K = info.topk_TK.shape
    gates_TK = info.probs_TE.gather(1, info.topk_TK).to(x_TD.dtype)
    is_ffn_TK = info.topk_TK < moe.n_ffn
    zero_gate_T1 = (gates_TK * ~is_ffn_TK).sum(dim=-1, keepdim=True)
    out_TD = (moe.gamma if moe.gamma_scales_identity else 1.0) * zero_gate_T1 * x_TD
    token_P = torch.arange(T).repeat_interleave(K)[is_ffn_TK.flatten()]
    expert_P = info.topk_TK.flatten()[is_ffn_TK.flatten()]
    gate_P = gates_TK.flatten()[is_ffn_TK.flatten()]
    order_P = torch.argsort(expert_P, stable=True)
    token_P, expert_P, gate_P = token_P[order_P], expert_P[order_P], gate_P[order_P]
    counts = torch.bincount(expert_P, minlength=moe.n_ffn).tolist()
    x_PD = x_TD[token_P]
    parts = [
        moe.experts.expert(i, chunk) for i, chunk in enumerate(x_PD.split(counts)) if len(chunk)
    ]
    y_PD = torch.cat(parts) * gate_P[:, None]
    return out_TD + moe.gamma * torch.zeros_like(x_TD).index_add(0, token_P, y_PD), info


DISPATCH_EXPERTS = (8, 64, 256)


def ablation_losses(cfg: ModelConfig, seed: int, steps: int, args: argparse.Namespace) -> dict:
    """LM losses of ``steps`` train steps from init seed ``seed`` on the batches of seed
    ``seed`` (the same for every model), and the FFN experts per token."""
    source: Iterator[dict]
    if args.ablation_curriculum is not None:  # real packed phases, in curriculum order
        spec = json.loads(args.ablation_curriculum.read_text())
        dirs = [str(args.ablation_curriculum.parent / p["dir"]) for p in spec["phases"]]
        stream = TokenStream(dirs, batch_size=args.batch_size, seed=seed, epochs=100)
        cfg = cfg.model_copy(update={"vocab_size": max(p.vocab_size for p in stream.phases)})
        source = stream
    else:
        source = SyntheticBatches(args.batch_size, args.seq_len, cfg.vocab_size, seed=seed)
    torch.manual_seed(seed)
    model = Model(cfg)
    tcfg = TrainConfig(out_dir="unused", steps=steps, warmup_steps=max(1, steps // 10),
                       grad_ratio_every=0, router_cosine_every=0, seed=seed)  # fmt: skip
    opt = build_optimizer(model, tcfg)
    records = [train_step(model, opt, next(source), tcfg, step) for step in range(steps)]
    tail = records[-min(10, steps) :]
    ffn = [sum(r["ffn_experts_per_token"]) / cfg.n_layers for r in records]
    tokens = [r["tokens"] for r in records]
    return {
        "final_lm_loss": sum(r["lm_loss"] for r in tail) / len(tail),
        "ffn_experts_per_token": sum(ffn[-len(tail) :]) / len(tail),
        # The compute actually spent: token-weighted over every step, and the extremes
        # (a step whose routing is the same for every token can sit far from K_e).
        "ffn_experts_per_token_all_steps": sum(f * n for f, n in zip(ffn, tokens, strict=True))
        / max(sum(tokens), 1),
        "ffn_experts_per_token_step_range": [round(min(ffn), 3), round(max(ffn), 3)],
    }


def ablation(args: argparse.Namespace) -> dict:
    """Zero experts (K_e = 4 of K = 6) against a fixed top-4, seed by seed."""
    diffs, runs = [], []
    for seed in range(args.ablation_seeds):
        zero = ablation_losses(WITH_ZERO, seed, args.ablation_steps, args)
        fixed = ablation_losses(FIXED_TOP4, seed, args.ablation_steps, args)
        diffs.append(zero["final_lm_loss"] - fixed["final_lm_loss"])
        runs.append({"seed": seed, "zero_experts": zero, "fixed_top4": fixed})
    mean = sum(diffs) / len(diffs)
    std = (sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1)) ** 0.5
    return {
        "steps": args.ablation_steps,
        "loss_diff_zero_minus_fixed": [round(d, 4) for d in diffs],
        "loss_diff_mean": round(mean, 4),
        "loss_diff_std": round(std, 4),
        "runs": runs,
    }


def dispatch_tokens_per_second(n_ffn: int, tokens: int, repeat: int, loop: bool) -> float:
    """MoE block forward + backward tokens/s at n_ffn FFN experts (n_ffn / 2 zero
    experts, K = 6, K_e = 4, d_model 128, expert width 64), best of ``repeat``."""
    torch.manual_seed(0)
    moe = MoE(128, 64, n_ffn, n_ffn // 2, 6, 4.0)
    torch.nn.init.normal_(moe.router.weight, std=0.02)
    x_TD = torch.randn(tokens, 128, requires_grad=True)
    best = math.inf
    for _ in range(repeat):
        start = time.process_time()
        out_TD, _ = loop_dispatch(moe, x_TD) if loop else moe(x_TD)
        out_TD.square().mean().backward()
        best = min(best, time.process_time() - start)
    return tokens / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed train steps (best of)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also train zero experts against a fixed top-k (equal compute)",
    )
    parser.add_argument("--ablation-seeds", type=int, default=3)
    parser.add_argument("--ablation-steps", type=int, default=150)
    parser.add_argument(
        "--ablation-curriculum",
        type=Path,
        default=None,
        help="train the ablation on a curriculum.json's packed phases "
        "(default: synthetic batches, which both models learn to the end)",
    )
    parser.add_argument("--dispatch-tokens", type=int, default=4096,
                        help="tokens per MoE block call in the dispatch comparison")  # fmt: skip
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.batch_size, args.seq_len, args.rounds = 1, 1, 2, 64, 1
        args.dispatch_tokens = 256
        args.ablation_seeds, args.ablation_steps = 2, 3
    torch.set_num_threads(1)
    configs = {"with_zero": WITH_ZERO, "without_zero": WITHOUT_ZERO}
    train = {name: (0.0, 0.0) for name in configs}
    block = {name: (0.0, 0.0) for name in configs}
    for _ in range(args.rounds):  # interleaved: load changes hit both models alike
        for name, cfg in configs.items():
            train[name] = max(train[name], train_tokens_per_second(cfg, args))
            tokens = args.batch_size * args.seq_len
            block[name] = max(block[name], moe_tokens_per_second(cfg, tokens, args.steps + 2))
    dispatch = {(n, loop): 0.0 for n in DISPATCH_EXPERTS for loop in (False, True)}
    for _ in range(args.rounds):
        for n, loop in dispatch:
            speed = dispatch_tokens_per_second(n, args.dispatch_tokens, args.steps + 2, loop)
            dispatch[n, loop] = max(dispatch[n, loop], speed)
    weights = {name: matmul_weights_per_token(cfg, train[name][1]) for name, cfg in configs.items()}
    result = {
        "K": WITH_ZERO.top_k,
        "K_e_target": WITH_ZERO.target_ffn_experts,
        "ffn_experts_per_token_train": {n: round(train[n][1], 3) for n in configs},
        "ffn_experts_per_token_block": {n: round(block[n][1], 3) for n in configs},
        "train_tokens_per_s": {n: round(train[n][0]) for n in configs},
        "train_speedup": round(train["with_zero"][0] / train["without_zero"][0], 3),
        "train_speedup_predicted": round(weights["without_zero"] / weights["with_zero"], 3),
        "moe_block_tokens_per_s": {n: round(block[n][0]) for n in configs},
        "moe_block_speedup": round(block["with_zero"][0] / block["without_zero"][0], 3),
        "moe_block_speedup_predicted": round(block["without_zero"][1] / block["with_zero"][1], 3),
        "dispatch_tokens_per_s": {
            f"{n}_experts": {"grouped": round(dispatch[n, False]), "loop": round(dispatch[n, True])}
            for n in DISPATCH_EXPERTS
        },
        "dispatch_speedup": {
            f"{n}_experts": round(dispatch[n, False] / dispatch[n, True], 3)
            for n in DISPATCH_EXPERTS
        },
        "threads": torch.get_num_threads(),
    }
    if args.ablation:
        result["ablation"] = ablation(args)
    print(json.dumps(result, indent=2))
    peer = "the same MoE without zero experts"
    rows = [
        row("train_step with zero experts", result["train_tokens_per_s"]["with_zero"],
            result["train_tokens_per_s"]["without_zero"], peer_name=peer,
            unit="tokens/s (CPU, one thread)"),
        row("train_step speed-up predicted from matmul weights per token", None,
            ratio=result["train_speedup_predicted"], unit="ratio"),
        row("MoE block forward+backward with zero experts",
            result["moe_block_tokens_per_s"]["with_zero"],
            result["moe_block_tokens_per_s"]["without_zero"], peer_name=peer,
            unit="tokens/s (CPU, one thread)"),
        row("MoE block speed-up predicted from FFN experts per token", None,
            ratio=result["moe_block_speedup_predicted"], unit="ratio"),
    ]  # fmt: skip
    rows += [
        row(f"MoE block forward+backward, {n} FFN experts, grouped dispatch",
            round(dispatch[n, False]), round(dispatch[n, True]),
            peer_name="argsort + loop over experts + index_add", unit="tokens/s (CPU, one thread)")
        for n in DISPATCH_EXPERTS
    ]  # fmt: skip
    if args.ablation:
        ab = result["ablation"]
        rows.append(row("LM loss, zero experts minus fixed top-4 (equal compute), mean over "
                        f"{len(ab['loss_diff_zero_minus_fixed'])} seeds", ab["loss_diff_mean"],
                        unit=f"nats (std {ab['loss_diff_std']})", compare=False))  # fmt: skip
    notes = [
        f"K={result['K']}, K_e target {result['K_e_target']}; FFN experts per token in "
        f"training: {result['ffn_experts_per_token_train']}"
    ]
    write_json(args.json, "moe", rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
