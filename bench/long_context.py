"""Can the bundled model train the long-context phases? Peak memory (RSS) of one
forward + backward of the demo model (configs/demo_model.yaml, vocab 4096 as the
demo's BPE) on one packed row of 8k, 32k and 128k tokens, on CPU.

Each length runs in a fresh child process, so each peak is that length's own
(``ru_maxrss`` of the child). The row holds one document of half the row (the worst
case for attention: its causal square is T^2/8 pairs) and documents of 1k-4k tokens
after it, as a long-context phase packs them (25% long documents on the pretraining
mix). The loss is the trainer's (LM + balance + z-loss, ``train_step``) with one AdamW
step, so the figure is what a training step needs, logits included.

    python -m bench.long_context [--lengths 8192 32768 131072] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.contract import add_contract_arguments, row, write_json
from strict_config import read_yaml

DEMO_MODEL = Path(__file__).resolve().parent.parent / "configs" / "demo_model.yaml"
VOCAB = 4096


def packed_row(seq_len: int, vocab_size: int, seed: int = 0) -> dict:
    """One packed row: a document of seq_len / 2 tokens, then 1k-4k token documents."""
    from model_hooks.synthetic import pack_rows

    g = torch.Generator().manual_seed(seed)
    lengths, filled = [seq_len // 2], seq_len // 2
    while filled < seq_len:
        n = min(int(torch.randint(1024, 4097, (1,), generator=g)), seq_len - filled)
        lengths.append(n)
        filled += n
    docs = [(torch.randint(1, vocab_size, (n,), generator=g), 0) for n in lengths]
    return pack_rows([docs], seq_len, ["long"])


def one_step(seq_len: int) -> dict:
    """In the child: one train_step on one row; returns its peak RSS and time."""
    from model_hooks.model import Model, ModelConfig
    from model_hooks.optimizer import build_optimizer
    from model_hooks.train_config import TrainConfig
    from model_hooks.train_step import train_step

    torch.manual_seed(0)
    fields = read_yaml(DEMO_MODEL) | {"vocab_size": VOCAB}
    model = Model(ModelConfig(**fields))
    cfg = TrainConfig(out_dir="unused", steps=10, grad_ratio_every=0)
    opt = build_optimizer(model, cfg)
    batch = packed_row(seq_len, VOCAB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    record = train_step(model, opt, batch, cfg, 0)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "seq_len": seq_len,
        "peak_rss_gb": round(peak * 1024 / 1e9, 3),
        "rss_before_step_gb": round(before * 1024 / 1e9, 3),
        "step_s": round(seconds, 1),
        "lm_loss": round(record["lm_loss"], 4),
        "attention_backend": model.layers[0].attn0.last_backend,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per length")
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one_step(args.child)))
        return 0
    if args.quick:
        args.lengths = [2048]
    results = []
    for seq_len in args.lengths:
        cmd = [sys.executable, "-m", "bench.long_context", "--child", str(seq_len)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            results.append({"seq_len": seq_len, "error": f"over {args.timeout} s"})
            continue
        if done.returncode != 0:
            results.append({"seq_len": seq_len, "error": done.stderr.strip()[-500:]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    rows = [
        row(f"train_step peak RSS, one {r['seq_len']}-token row", r["peak_rss_gb"], unit="GB")
        for r in results
        if "peak_rss_gb" in r
    ]
    write_json(args.json, "long_context", rows, [json.dumps(r) for r in results])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
