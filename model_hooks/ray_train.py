"""Ray Train entry: ``model_hooks.train``'s loop on Ray Train workers.

``fit_with_ray_train`` runs a ``TorchTrainer`` whose workers each run
``train.run_loop``, the loop a local run runs, with only what differs supplied here:

* the data: rank r of W reads its shard of the same ``TokenStream`` over the phases
  (``TokenStream(rank=r, world_size=W)``: rows ``s + r, s + r + W, ...`` of the global
  order, which depends on the seed only), so the checkpoint's ``data`` is the stream's
  state dict, the same as a local run's;
* the replicas: ``model_hooks.data_parallel.DataParallel`` (one starting point,
  gradients averaged in buckets while the backward runs, router biases merged to the
  global batch's controller update, the global batch's tokens);
* where records and checkpoints go (``RayReports``): every ``ckpt_every`` steps and at
  the end, rank 0 reports that step's metrics (with the replicas' largest parameter
  and router-bias differences, 0.0 when they agree) with ``ray.train.report`` and a
  ``ray.train.Checkpoint`` directory holding ``ckpt.pt`` (the ``checkpoint.py`` format,
  ``torch.load(weights_only=True)``), ``metrics.jsonl`` and ``timings.jsonl`` (every
  step's lines so far). Not every step: a report is a barrier of all ranks that waits
  for the Ray Train controller to collect the previous one (it polls every
  ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by default). At the end the driver copies
  the last checkpoint's files into ``out_dir``, as a ``train()`` run leaves them.

Resume (``resume`` and ``out_dir/ckpt.pt``): the model, optimiser, step and stream
position come back exactly, whichever path wrote the checkpoint: a run started locally
(``train()``, ``ray_workers: 0``) continues under Ray Train and the other way round. The
position is global, so another world size continues at the exact next row too; with
the same world size (1 and a local run included) the continuation is the uninterrupted
run's, bit for bit on CPU.

    records = fit_with_ray_train(TrainConfig(out_dir="runs/x", steps=100), ModelConfig(),
                                 ["packed/p1", "packed/p2"], batch_size=8, num_workers=2,
                                 seed=0)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from model_hooks.checkpoint import check_resumable, load_checkpoint, save_checkpoint
from model_hooks.data_parallel import DEFAULT_BUCKET_BYTES, DataParallel
from model_hooks.model import Model, ModelConfig
from model_hooks.run_folder import CKPT_NAME, METRICS_NAME, TIMINGS_NAME
from model_hooks.shard_format import read_manifest
from model_hooks.token_stream import StreamLoader, TokenStream
from model_hooks.train import deterministic_mode, run_loop
from model_hooks.train_config import TrainConfig

CPU_PER_WORKER = 0.5  # two workers and Ray Train's own actors fit a 2-core Ray


class RayReports:
    """``train.RunLog`` of a Ray Train worker: every rank reports at each checkpoint (a
    barrier); rank 0 brings the metrics and a checkpoint directory with ckpt.pt and the
    metric and timing lines so far (``history``: the resumed run's lines first)."""

    def __init__(self, rank: int, history: list[str], timings: list[str]) -> None:
        self.rank, self.history, self.timings = rank, list(history), list(timings)

    def log(self, record: dict, timing: dict) -> None:
        self.history.append(json.dumps(record))
        self.timings.append(json.dumps(timing))

    def checkpoint(
        self, model: Model, opt: torch.optim.Optimizer, data: dict, state: dict, record: dict
    ) -> None:
        self.history[-1] = json.dumps(record)  # with the replicas' differences
        if self.rank != 0:
            ray.train.report(record)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(Path(tmp) / CKPT_NAME, model, opt, data, state)
            for name, lines in ((METRICS_NAME, self.history), (TIMINGS_NAME, self.timings)):
                (Path(tmp) / name).write_text("".join(line + "\n" for line in lines))
            ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: ``train.run_loop`` on this rank's shard of the stream, with
    ``DataParallel`` replicas and ``RayReports``."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(1)  # a fraction of a core each
    cfg: TrainConfig = config["train_cfg"]
    resume = ray.get(config["resume"]) if config["resume"] is not None else None
    stream = TokenStream(config["phase_dirs"], batch_size=config["batch_size"],
                         seed=config["seed"], rank=rank, world_size=world,
                         epochs=config["epochs"])  # fmt: skip
    loader_workers = config["loader_workers"]
    source = StreamLoader(stream, loader_workers) if loader_workers else stream
    replicas = DataParallel(rank, world, device, config["bucket_bytes"])
    reports = RayReports(rank, config["history"], config["timings"])
    with deterministic_mode(cfg.deterministic):
        run_loop(cfg, source, config["model_cfg"], resume, reports, replicas, device)


def _lines_until(path: Path, step: int) -> list[str]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if json.loads(line).get("step", 0) <= step]


def _previous_run(cfg: TrainConfig) -> tuple[dict | None, list[str], list[str]]:
    """The checkpoint to resume from (None: a fresh run, checked like a local resume)
    and its metric and timing lines up to its step."""
    out = Path(cfg.out_dir)
    ckpt_path = out / CKPT_NAME
    if not (cfg.resume and ckpt_path.exists()):
        return None, [], []
    ckpt = check_resumable(load_checkpoint(ckpt_path), ckpt_path, cfg)
    step = ckpt["train_state"]["step"]
    return ckpt, _lines_until(out / METRICS_NAME, step), _lines_until(out / TIMINGS_NAME, step)


def fit_with_ray_train(
    train_cfg: TrainConfig,
    model_cfg: ModelConfig,
    phase_dirs: list[str],
    batch_size: int,
    num_workers: int,
    seed: int,
    *,
    epochs: int = 1,
    loader_workers: int = 0,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
) -> list[dict]:
    """Train (or resume) through ``phase_dirs`` on ``num_workers`` Ray Train workers;
    returns rank 0's metric records of this call (each step's, as ``train()`` returns,
    with the global batch's ``tokens``, plus ``lm_loss_per_rank`` and ``world_size``; the
    checkpointed steps also carry ``max_param_diff_across_ranks`` and
    ``max_router_bias_diff_across_ranks``). ``batch_size`` is rows per worker per step;
    ``seed`` seeds the stream's row order (the model init is ``train_cfg.seed``);
    ``epochs`` passes over each phase; ``loader_workers`` DataLoader processes per worker
    read the shards; ``bucket_bytes`` caps each gradient all-reduce bucket."""
    if not phase_dirs:
        raise ValueError("fit_with_ray_train needs at least one phase folder")
    if batch_size < 1 or num_workers < 1:
        raise ValueError(f"batch_size ({batch_size}) and num_workers ({num_workers}) must be >= 1")
    dirs = [str(Path(d).resolve()) for d in phase_dirs]
    vocab = max(read_manifest(d).vocab_size for d in dirs)
    ckpt, history, timings = _previous_run(train_cfg)
    if ckpt is not None:
        model_cfg = ModelConfig(**ckpt["model_config"])
    if model_cfg.vocab_size < vocab:
        raise ValueError(f"model vocab_size {model_cfg.vocab_size} < the phases' {vocab}")
    TokenStream(dirs, batch_size=batch_size, seed=seed, epochs=epochs)  # checks the shards
    use_gpu = torch.cuda.is_available()
    out = Path(train_cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_name = f"ray-train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    trainer = ray.train.torch.TorchTrainer(
        _worker_loop,
        train_loop_config={
            "train_cfg": train_cfg,
            "model_cfg": model_cfg,
            "phase_dirs": dirs,
            "batch_size": batch_size,
            "seed": seed,
            "epochs": epochs,
            "loader_workers": loader_workers,
            "bucket_bytes": bucket_bytes,
            "history": history,
            "timings": timings,
            "resume": ray.put(ckpt) if ckpt is not None else None,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker=None if use_gpu else {"CPU": CPU_PER_WORKER},
        ),
        run_config=ray.train.RunConfig(name=run_name, storage_path=str(out / "ray_train")),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        return []  # nothing left to train
    start = ckpt["train_state"]["step"] if ckpt is not None else 0
    with result.checkpoint.as_directory() as folder:
        for name in (CKPT_NAME, METRICS_NAME, TIMINGS_NAME):
            shutil.copyfile(Path(folder) / name, out / f"{name}.tmp")
            (out / f"{name}.tmp").replace(out / name)
    shutil.rmtree(out / "ray_train" / run_name, ignore_errors=True)
    records = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines()]
    return [r for r in records if r["step"] > start]
