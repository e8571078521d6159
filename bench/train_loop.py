"""Step times of the trainer's one loop: local against Ray Train, and the gradient
all-reduce in buckets against one flat all-reduce after the backward.

``steps``: ``python -m pipeline train`` of one packed phase with the given model, local
(``ray_workers: 0``) and on Ray Train with 1 and 2 workers; the median step time of
steps 3.. (``timings.jsonl``; a checkout from before the one loop logged Ray Train's
step times in ``metrics.jsonl``, which is read when there is no ``timings.jsonl``), the
wall time of the command (Ray start included) and the last loss.

``allreduce``: two gloo ranks (processes, no Ray) each run forward + backward of the
model on their own synthetic batch, the gradients averaged by
``data_parallel.GradientBuckets`` with 1 MB buckets (launched while the backward runs)
and with one bucket as big as the model (one flat all-reduce once the backward is
done, as the Ray Train path did before), plus the backward alone without any
all-reduce; the three interleaved step by step so the machine's load hits them alike.
Medians of the wall times, rank 0.

    python -m bench.train_loop steps --phase runs/demo/packed/pretrain \\
        --model runs/demo/demo_model.yaml [--steps 12] [--workers 0 1 2]
    python -m bench.train_loop allreduce --model configs/demo_model.yaml [--steps 20]

Not part of ``python -m bench all`` (Ray Train start-up alone takes tens of seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import yaml

WORLD = 2


def _pipeline_steps(phase: Path, model: Path, steps: int, workers: int, root: Path) -> dict:
    run = root / f"ray{workers}"
    run.mkdir(parents=True)
    config = {"out": str(run / "out"), "phases": [str(phase.resolve())],
              "model": str(model.resolve()), "batch_size": 2, "seed": 0,
              "train": {"lr": 3e-3, "warmup_steps": 10, "ckpt_every": 50},
              "ray_workers": workers}  # fmt: skip
    (run / "train.yaml").write_text(json.dumps(config))
    started = time.perf_counter()
    command = [sys.executable, "-m", "pipeline", "train", str(run / "train.yaml"),
               "--steps", str(steps)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    out = run / "out"
    timed = out / "timings.jsonl" if (out / "timings.jsonl").exists() else out / "metrics.jsonl"
    times = [json.loads(line)["step_time_s"] for line in timed.read_text().splitlines()]
    metrics = (out / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["lm_loss"] for line in metrics]
    return {"ray_workers": workers, "steps": len(times),
            "median_step_s": round(statistics.median(times[2:]), 4),
            "command_wall_s": round(wall, 1), "last_lm_loss": losses[-1]}  # fmt: skip


def _rank(rank: int, init: str, model_yaml: str, vocab: int, steps: int, out: str) -> None:
    from model_hooks.data_parallel import GradientBuckets
    from model_hooks.model import Model, ModelConfig
    from model_hooks.synthetic import SyntheticBatches

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=WORLD)
    cfg = ModelConfig(**{"vocab_size": vocab, **yaml.safe_load(Path(model_yaml).read_text())})
    models = {}
    variants = (("buckets_1MB", 1 << 20), ("one_flat", 1 << 40), ("no_allreduce", 0))
    for name, bucket_bytes in variants:
        torch.manual_seed(0)
        models[name] = Model(cfg)
        if bucket_bytes:
            GradientBuckets(models[name], WORLD, bucket_bytes)
    batches = SyntheticBatches(2, 1024, cfg.vocab_size, seed=rank)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(steps):
        batch = next(batches)
        for name, model in models.items():
            model.zero_grad(set_to_none=True)
            dist.barrier()
            started = time.perf_counter()
            logits, _, _ = model(batch["tokens"], batch["positions"], batch["doc_index"])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten())
            loss.backward()
            times[name].append(time.perf_counter() - started)
    if rank == 0:
        params = sum(p.numel() for p in models["one_flat"].parameters())
        medians = {name: round(statistics.median(t[2:]), 4) for name, t in times.items()}
        Path(out).write_text(json.dumps({"parameters": params, "median_step_s": medians}))
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("steps", "allreduce"))
    parser.add_argument("--model", type=Path, required=True, help="ModelConfig YAML")
    parser.add_argument("--phase", type=Path, help="a packed phase folder (steps)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--vocab-size", type=int, default=4096, help="allreduce: the demo's")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "steps":
            if args.phase is None:
                parser.error("steps needs --phase")
            for workers in args.workers:
                print(json.dumps(_pipeline_steps(args.phase, args.model, args.steps, workers,
                                                 Path(tmp))), flush=True)  # fmt: skip
            return 0
        out = Path(tmp) / "allreduce.json"
        spawn_args = (str(Path(tmp) / "init"), str(args.model), args.vocab_size, args.steps,
                      str(out))  # fmt: skip
        mp.spawn(_rank, args=spawn_args, nprocs=WORLD, join=True)
        print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
