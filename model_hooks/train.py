"""The training loop for the LongCat-style MoE: batch -> ``train_step`` -> record ->
checkpoint, for a run in this process and for each Ray Train worker.

The trainer's modules, each readable on its own:

* ``train_config.py``: ``TrainConfig``, the optimisation, balancing and run-folder knobs;
* ``optimizer.py``: AdamW's parameter groups, ``get_lr`` and the resume anchor;
* ``train_step.py``: one optimiser step (the LM, balance and z-losses, R_g, the bias
  controller, the metric record);
* ``checkpoint.py``: the checkpoint file (fixed keys ``model``, ``optimizer``, ``data``,
  ``train_state``, ``model_config``; ``torch.load(..., weights_only=True)``), its
  resumability check and model growth on disk;
* ``run_folder.py``: the run folder's file names and ``RunFolder``, a local run's log;
* this file: what the loop asks of the data and of the replicas around it, the loop,
  and the command.

Data comes from a source with ``state_dict`` / ``load_state_dict``: a ``TokenStream``
over packed phases (phase after phase; each batch brings its phase's RoPE base, and the
metrics name the phase and count the tokens seen) or synthetic batches.

``run_loop`` is the loop of every run: ``train()`` runs it in this process, and each
Ray Train worker (``model_hooks/ray_train.py``) runs it on its shard of the stream with
the data-parallel hooks of ``model_hooks/data_parallel.py`` (``Replicas``). Both write
the same checkpoint (``data``: the stream's state dict), so either resumes the other's.
A checkpoint of an older layout is refused before anything loads (``check_resumable``).

    python -m model_hooks.train --phases packed/p1 packed/p2 --out runs/x --steps 500
    python -m model_hooks.train --out runs/toy --steps 200      # synthetic batches

The pipeline's way in is ``python -m pipeline train TRAIN.yaml`` (``pipeline/train_cmd.py``:
a validated config, a curriculum.json, model growth, width transfer, Ray Train); this
command stays for quick runs without a config file.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import torch

from model_hooks.checkpoint import check_resumable, load_checkpoint
from model_hooks.model import Model, ModelConfig
from model_hooks.optimizer import build_optimizer, resume_anchor, schedule_state
from model_hooks.run_folder import CKPT_NAME, RunFolder
from model_hooks.synthetic import SyntheticBatches
from model_hooks.token_stream import StreamLoader, TokenStream
from model_hooks.train_config import TrainConfig
from model_hooks.train_step import train_step
from strict_config import read_yaml


class BatchSource(Protocol):
    """What the loop needs from data: batches (see synthetic.py and token_stream.py) and
    a tiny state. StopIteration ends the run early."""

    def __next__(self) -> dict: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class Replicas:
    """What the loop asks of the data-parallel world around it. This base is one process
    alone (every hook a no-op); ``model_hooks.data_parallel.DataParallel`` is N ranks
    over ``torch.distributed`` (the Ray Train workers). The loop calls the collective
    hooks in the same order on every rank, so the ranks stay in step."""

    rank, world_size = 0, 1

    def prepare(self, model: Model) -> None:
        """Once the model holds its starting weights (fresh or resumed), before step 1."""

    def all_have_batch(self, has_batch: bool) -> bool:
        """Whether every rank got a batch: the ranks step together or not at all."""
        return has_batch

    def begin_step(self, model: Model) -> None:
        """Before ``train_step`` (a data-parallel run keeps the router biases here)."""

    def end_step(self, model: Model, record: dict) -> dict:
        """After ``train_step``: the record of the global batch."""
        return record

    def checked(self, record: dict, model: Model) -> dict:
        """A checkpointed step's record (data parallel: with the replicas' differences)."""
        return record


class RunLog(Protocol):
    """Where the loop's records and checkpoints go: ``RunFolder`` (out_dir, as the run
    goes) or, on Ray Train, the workers' reports (``model_hooks.ray_train``)."""

    def log(self, record: dict, timing: dict) -> None: ...
    def checkpoint(
        self, model: Model, opt: torch.optim.Optimizer, data: dict, state: dict, record: dict
    ) -> None: ...


@contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` (warn-only) for the run, then as before."""
    if not enabled:
        yield
        return
    was_on = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=warn_only)


def train(
    cfg: TrainConfig,
    source: BatchSource,
    model_cfg: ModelConfig | None = None,
    stop_at_step: int | None = None,
) -> list[dict]:
    """Runs (or resumes) to cfg.steps, or until the source ends, and returns this call's
    metric records. With a checkpoint in out_dir its model_config is used unless model_cfg
    is given; shapes must match either way. A batch's ``rope_theta`` overrides the RoPE
    base (each curriculum phase brings its own). ``stop_at_step`` pauses earlier with a
    checkpoint, on the schedule of the whole run (e.g. to grow the model there)."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CKPT_NAME
    ckpt = None
    if cfg.resume and ckpt_path.exists():
        ckpt = check_resumable(load_checkpoint(ckpt_path), ckpt_path, cfg)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run_log = RunFolder(out, ckpt["train_state"]["step"] if ckpt is not None else None)
    try:
        with deterministic_mode(cfg.deterministic):
            return run_loop(cfg, source, model_cfg, ckpt, run_log, Replicas(), device,
                            stop_at_step)  # fmt: skip
    finally:
        run_log.close()


def run_loop(
    cfg: TrainConfig,
    source: BatchSource,
    model_cfg: ModelConfig | None,
    ckpt: dict | None,
    run_log: RunLog,
    replicas: Replicas,
    device: torch.device,
    stop_at_step: int | None = None,
) -> list[dict]:
    """The training loop of every run, local or on Ray Train: build (or resume) the
    model, optimiser and data position from ``ckpt``, then batch -> ``train_step`` ->
    record -> checkpoint every ``ckpt_every`` steps and at the end. What a data-parallel
    run adds comes in through ``replicas``; where records and checkpoints go, through
    ``run_log``. ``source`` is this rank's share of the data (``TokenStream(rank=...,
    world_size=...)``); its ``state_dict()`` is the checkpoint's ``data``."""
    last_step = cfg.steps if stop_at_step is None else min(cfg.steps, stop_at_step)
    torch.manual_seed(cfg.seed)
    if ckpt is not None:
        model_cfg = model_cfg or ModelConfig(**ckpt["model_config"])
    model = Model(model_cfg or ModelConfig()).to(device)
    if model.cfg.n_ffn_experts % cfg.balance_groups:
        raise ValueError("balance_groups must divide n_ffn_experts")
    opt = build_optimizer(model, cfg)
    state = {"step": 0, "tokens_seen": 0, "phase": None, "lr_anchor": None}  # train_state
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        source.load_state_dict(ckpt["data"])
        state.update(ckpt["train_state"])
        state["lr_anchor"] = resume_anchor(ckpt["train_state"], cfg)
    replicas.prepare(model)
    records, saved = [], state["step"]
    while state["step"] < last_step:
        started = time.perf_counter()
        batch = next(source, None)
        if not replicas.all_have_batch(batch is not None):
            break  # the curriculum is done
        replicas.begin_step(model)
        record = train_step(model, opt, batch, cfg, state["step"], state["lr_anchor"])
        record = replicas.end_step(model, record)
        record["phase_start"] = record["phase"] != state["phase"]
        state = {"step": state["step"] + 1, "phase": record["phase"],
                 "tokens_seen": state["tokens_seen"] + record["tokens"],
                 "schedule": schedule_state(cfg), "lr_anchor": state["lr_anchor"]}  # fmt: skip
        record["tokens_seen"] = state["tokens_seen"]
        save = state["step"] % cfg.ckpt_every == 0 or state["step"] == cfg.steps
        if save:
            record = replicas.checked(record, model)
        timing = {"step": record["step"], "step_time_s": time.perf_counter() - started}
        run_log.log(record, timing)
        records.append(record)
        if save:
            run_log.checkpoint(model, opt, source.state_dict(), state, record)
            saved = state["step"]
    if saved != state["step"]:  # paused (stop_at_step) or the data ended
        record = replicas.checked(records[-1], model)
        run_log.checkpoint(model, opt, source.state_dict(), state, record)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the LongCat-style toy MoE.")
    parser.add_argument("--phases", nargs="+", help="packed phase folders, trained in order "
                        "(default: synthetic batches)")  # fmt: skip
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--steps", type=int, help="default: every batch of the phases, or 200")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1, help="passes over each phase")
    parser.add_argument("--seq-len", type=int, default=128, help="synthetic batches only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader processes")
    parser.add_argument("--model", help="JSON or YAML file of ModelConfig fields")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    fields = read_yaml(args.model) if args.model else {}
    source: BatchSource
    if args.phases:
        stream = TokenStream(args.phases, batch_size=args.batch_size, seed=args.seed,
                             epochs=args.epochs)  # fmt: skip
        fields = {"vocab_size": max(p.vocab_size for p in stream.phases), **fields}
        steps = args.steps or stream.num_batches()
        source = StreamLoader(stream, args.num_workers) if args.num_workers else stream
    else:
        steps = args.steps or 200
        vocab = fields.get("vocab_size", ModelConfig().vocab_size)
        source = SyntheticBatches(args.batch_size, args.seq_len, vocab, seed=args.seed)
    cfg = TrainConfig(out_dir=args.out, steps=steps, lr=args.lr, seed=args.seed,
                      device=args.device)  # fmt: skip
    resuming = (Path(args.out) / CKPT_NAME).exists()  # then the checkpoint's config holds
    for r in train(cfg, source, None if resuming else ModelConfig(**fields)):
        if r["phase_start"] or r["step"] % 10 == 0 or r["step"] == cfg.steps:
            print(f"step {r['step']:5d} {r['phase'] or ''} tokens {r['tokens_seen']} "
                  f"lm {r['lm_loss']:.3f} ffn/token {r['ffn_experts_per_token']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
