"""Is the trainer ready for a GPU? A short curriculum of the demo model on CUDA.

Three parts, printed as one JSON object:

* parity: the same first steps (same init, same batches) in float32 on the CPU and on
  the device; the LM losses side by side and their largest relative difference (the
  first step differs by kernel rounding only; routing ties can part the runs later);
* speed: a short curriculum (phases of 1k, 4k and 8k tokens, a long document in each
  long row) with the device path: bf16 autocast, fused AdamW, the attention backend the
  model picks (varlen flash attention on CUDA), grouped expert matmuls; tokens per
  second of the timed steps, peak device memory, the attention backend and the expert
  path that ran;
* the exit status: 0 when parity holds (first-step relative difference under
  ``--parity-tolerance``), 1 when not.

Without CUDA it prints why it skips and exits 0 (``--device cpu`` runs the same
procedure on the CPU, a smoke test of the script itself).

    python -m bench.gpu_check [--steps 20] [--parity-steps 3] [--device cuda] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from bench.contract import add_contract_arguments, row, write_json
from model_hooks.model import Model, ModelConfig
from model_hooks.optimizer import build_optimizer
from model_hooks.synthetic import SyntheticBatches
from model_hooks.train_config import TrainConfig
from model_hooks.train_step import train_step
from strict_config import read_yaml

DEMO_MODEL = Path(__file__).resolve().parent.parent / "configs" / "demo_model.yaml"
VOCAB = 4096


def demo_model_config(vocab_size: int = VOCAB) -> ModelConfig:
    return ModelConfig(**read_yaml(DEMO_MODEL) | {"vocab_size": vocab_size})


def curriculum(
    batch_size: int, lengths: list[int], vocab_size: int, seed: int = 0
) -> Iterator[dict]:
    """Batches phase after phase: synthetic documents of up to a quarter of the row
    (so a row holds long documents, as the long-context phases do)."""
    for index, seq_len in enumerate(lengths):
        source = SyntheticBatches(batch_size, seq_len, vocab_size, seed=seed + index,
                                  min_doc_len=16, max_doc_len=max(32, seq_len // 4))  # fmt: skip
        while True:
            batch = next(source)
            yield batch | {"phase": f"seq{seq_len}", "seq_len": seq_len}


def losses_on(
    device: str, model_cfg: ModelConfig, batches: list[dict], bf16: bool = False
) -> list[float]:
    """LM losses of the first steps from seed 0 on ``device``."""
    torch.manual_seed(0)
    model = Model(model_cfg).to(device)
    cfg = TrainConfig(out_dir="unused", steps=100, warmup_steps=2, grad_ratio_every=0,
                      router_cosine_every=0, device=device, bf16=bf16)  # fmt: skip
    opt = build_optimizer(model, cfg)
    return [train_step(model, opt, b, cfg, step)["lm_loss"] for step, b in enumerate(batches)]


def speed(device: str, model_cfg: ModelConfig, args: argparse.Namespace) -> dict:
    """Tokens/s, peak memory and the kernels that ran, on the device path."""
    torch.manual_seed(0)
    model = Model(model_cfg).to(device)
    bf16 = device.startswith("cuda")
    cfg = TrainConfig(out_dir="unused", steps=10_000, warmup_steps=2, grad_ratio_every=0,
                      router_cosine_every=0, device=device, bf16=bf16)  # fmt: skip
    opt = build_optimizer(model, cfg)
    per_phase = args.steps // len(args.lengths)
    source = curriculum(args.batch_size, args.lengths, model_cfg.vocab_size)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    phases, step = {}, 0
    for seq_len in args.lengths:
        timed, tokens, losses = 0.0, 0, []
        for i in range(per_phase):
            batch = next(source)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            record = train_step(model, opt, batch, cfg, step)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            step += 1
            if i > 0:  # the first step of a length pays for kernel selection
                timed += time.perf_counter() - start
                tokens += int(batch["token_mask"].sum())
            losses.append(record["lm_loss"])
        phases[f"seq{seq_len}"] = {
            "tokens_per_s": round(tokens / timed) if timed else None,
            "lm_loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
        }
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None
    return {
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "bf16_autocast": bf16,
        "fused_adamw": bool(opt.defaults.get("fused")),
        "attention_backend": model.layers[0].attn0.last_backend,
        "expert_path": model.layers[0].moe.experts.last_path,
        "peak_memory_gb": round(peak, 3) if peak is not None else None,
        "phases": phases,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke run)")
    parser.add_argument("--steps", type=int, default=30, help="timed curriculum steps")
    parser.add_argument("--parity-steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--parity-tolerance", type=float, default=1e-3,
                        help="largest relative LM-loss difference allowed at step 1")  # fmt: skip
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False): skipped")
        return 0
    vocab = VOCAB
    if args.quick:
        args.steps, args.parity_steps, args.batch_size, args.lengths = 4, 2, 1, [128, 256]
        vocab = 256
    model_cfg = demo_model_config(vocab)
    parity_batches = list(
        SyntheticBatches(args.batch_size, args.lengths[0], vocab, seed=7).batch_at(s)
        for s in range(args.parity_steps)
    )
    cpu = losses_on("cpu", model_cfg, parity_batches)
    dev = losses_on(args.device, model_cfg, parity_batches)
    rel = [abs(a - b) / abs(a) for a, b in zip(cpu, dev, strict=True)]
    result = {
        "parity": {
            "cpu_lm_loss": cpu,
            "device_lm_loss": dev,
            "max_rel_diff": max(rel),
            "first_step_rel_diff": rel[0],
        },
        "speed": speed(args.device, model_cfg, args),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    ok = math.isfinite(rel[0]) and rel[0] <= args.parity_tolerance
    rows = [
        row(f"train_step tokens/s at {name} ({result['speed']['device_name']})",
            phase["tokens_per_s"], unit="tokens/s")
        for name, phase in result["speed"]["phases"].items()
    ] + [row("first-step LM loss, relative difference to CPU", rel[0], unit="ratio",
             compare=False)]  # fmt: skip
    write_json(args.json, "gpu_check", rows, [json.dumps(result)])
    if not ok:
        print(f"gpu_check: first-step loss differs from the CPU by {rel[0]:.2e} "
              f"(> {args.parity_tolerance:g})", file=sys.stderr)  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
