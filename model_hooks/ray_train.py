"""Ray Train entry: ``model_hooks.train``'s step on Ray Train workers, fed by Ray Data.

``fit_with_ray_train`` runs a ``TorchTrainer`` whose workers each build the same model
(same seed, then a broadcast from rank 0), read their split of each phase's
``packed_dataset`` (``ray.train.get_dataset_shard``; phase after phase, every batch
carrying its phase's name, seq_len and RoPE base from the manifest, as ``TokenStream``
batches do) and call ``train_step`` unchanged. Two things keep the ranks identical:

* gradients: at the end of every backward (before ``train_step`` clips them) one
  all-reduce averages every gradient over the ranks; a parameter that no rank used
  (an expert nobody routed to) keeps no gradient, as in one process. So the clipping,
  the grad norm and the AdamW step are the same on every rank.
* router biases: ``train_step``'s bias controller moves each rank's biases from its own
  routing counts. Afterwards every rank takes the token-weighted mean of the ranks'
  biases, ``b + sum_r n_r (b_r - b) / sum_r n_r`` (n_r: real tokens of rank r), which
  is exactly the controller's update from the routing counts of the whole global batch.

At the end of each phase, every ``ckpt_every`` steps and at the last step, rank 0
reports that step's metrics (with the replicas' largest parameter and router-bias
differences, 0.0 when they agree) with ``ray.train.report`` and a ``ray.train.Checkpoint``
directory holding ``ckpt.pt`` (the ``train.py`` format, ``torch.load(weights_only=True)``)
and ``metrics.jsonl`` (every step's record so far). Not every step: a report is a
barrier of all ranks that waits for the Ray Train controller to collect the previous
one (it polls every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by default). At the end
the driver copies the last checkpoint's two files into ``out_dir``, like a ``train()``
run leaves them.

Resume (``resume`` and ``out_dir/ckpt.pt``): the model, optimiser and step come back
exactly; the data continues at the saved phase after skipping the batches of it
already trained (``data``: ``{"source": "ray_data", "phase", "batches"}``). Ray Data
owns the split between workers, so the skipped rows are the trained ones only when
its execution order repeats; ``TokenStream`` (``ray_workers: 0``) is the exact path.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from model_hooks.model import Model, ModelConfig
from model_hooks.packed_rows import domain_vocabulary
from model_hooks.ray_stream import packed_dataset, torch_batches
from model_hooks.shard_format import read_manifest
from model_hooks.train import (
    CKPT_NAME,
    METRICS_NAME,
    TrainConfig,
    build_optimizer,
    load_checkpoint,
    resume_anchor,
    save_checkpoint,
    schedule_state,
    train_step,
)

DATA_SOURCE = "ray_data"
CPU_PER_WORKER = 0.5  # leaves room for Ray Data's read tasks on a 2-core machine


def _dataset_name(phase_index: int) -> str:
    return f"phase_{phase_index}"


class GradientAllReduce:
    """Averages the gradients over the data-parallel ranks when a backward ends.

    A post-accumulate hook on every parameter queues one callback at the end of the
    backward pass (the autograd engine runs it once every gradient is accumulated,
    which is how DDP finishes its reduction too); the callback all-reduces one flat
    buffer of gradients plus a used-by-any-rank flag per parameter. ``torch.autograd
    .grad`` (train_step's R_g measurement) accumulates nothing and so triggers nothing.
    """

    def __init__(self, model: torch.nn.Module, world_size: int) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.world_size, self._queued = world_size, False
        for p in self.params:
            p.register_post_accumulate_grad_hook(self._queue)

    def _queue(self, _: torch.Tensor) -> None:
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self.all_reduce)

    @torch.no_grad()
    def all_reduce(self) -> None:
        self._queued = False
        device = self.params[0].device
        used = torch.tensor([p.grad is not None for p in self.params], device=device)
        grads = [
            p.grad.flatten() if p.grad is not None else p.new_zeros(p.numel()) for p in self.params
        ]
        flat = torch.cat([*(g.float() for g in grads), used.float()])
        dist.all_reduce(flat)
        used_anywhere = flat[-len(self.params) :] > 0
        flat /= self.world_size
        offset = 0
        for p, anywhere in zip(self.params, used_anywhere.tolist(), strict=True):
            mean = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
            if anywhere:
                p.grad = mean.clone()


def _router_biases(model: Model) -> list[torch.Tensor]:
    return [layer.moe.router.bias for layer in model.layers]


@torch.no_grad()
def _merge_router_biases(before: list[torch.Tensor], model: Model, real_tokens: int) -> int:
    """The token-weighted mean of the ranks' controller updates (see the module doc);
    returns the real tokens of the global batch."""
    biases = _router_biases(model)
    weight = torch.tensor([float(real_tokens)], dtype=torch.float64, device=biases[0].device)
    deltas = [(b.double() - old.double()) * weight for b, old in zip(biases, before, strict=True)]
    flat = torch.cat([*deltas, weight])
    dist.all_reduce(flat)
    total = flat[-1].item()
    offset = 0
    for bias, old in zip(biases, before, strict=True):
        delta = flat[offset : offset + bias.numel()] / total if total else 0.0
        bias.copy_((old.double() + delta).to(bias.dtype))
        offset += bias.numel()
    return int(total)


def _all_ranks(flag: bool, device: torch.device) -> bool:
    """True when the flag holds on every rank: the ranks step together or not at all."""
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


@torch.no_grad()
def _max_difference_across_ranks(tensors: list[torch.Tensor]) -> float:
    """Largest absolute difference between this rank's tensors and rank 0's (0 on every
    rank means the replicas agree bit for bit)."""
    flat = torch.cat([t.detach().double().flatten() for t in tensors])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return diff.item()


def _checked(record: dict, model: Model, history: list[str]) -> dict:
    """The step's record (the last line of history) with the largest differences of the
    parameters and router biases between the replicas: 0.0 when they agree exactly."""
    params, biases = list(model.parameters()), _router_biases(model)
    record["max_param_diff_across_ranks"] = _max_difference_across_ranks(params)
    record["max_router_bias_diff_across_ranks"] = _max_difference_across_ranks(biases)
    history[-1] = json.dumps(record)
    return record


def _report(
    record: dict, model: Model, opt: torch.optim.Optimizer, data: dict, state: dict,
    history: list[str], rank: int,
) -> None:  # fmt: skip
    """Every rank calls ray.train.report (a barrier); rank 0 brings the metrics and a
    checkpoint directory with ckpt.pt and the metric lines so far."""
    if rank != 0:
        ray.train.report(record)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / CKPT_NAME, model, opt, data, state)
        (Path(tmp) / METRICS_NAME).write_text("".join(line + "\n" for line in history))
        ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _phase_batches(config: dict, phase_index: int) -> Iterator[dict]:
    """This worker's batches of one phase, with the phase's metadata on each."""
    shard = ray.train.get_dataset_shard(_dataset_name(phase_index))
    info = config["phases"][phase_index]
    return torch_batches(shard, config["batch_size"], config["domain_names"], extra=info)


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: the ``train()`` loop of ``model_hooks.train`` with the
    gradient and router-bias synchronisation of this module."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(1)  # a fraction of a core each
    cfg: TrainConfig = config["train_cfg"]
    torch.manual_seed(cfg.seed)
    resume = ray.get(config["resume"]) if config["resume"] is not None else None
    model_cfg = config["model_cfg"]
    model = Model(model_cfg)
    if resume is not None:
        model.load_state_dict(resume["model"])
    model.to(device)
    for tensor in model.state_dict().values():  # one starting point on every rank
        dist.broadcast(tensor, src=0)
    opt = build_optimizer(model, cfg)
    state = {"step": 0, "tokens_seen": 0, "phase": None, "lr_anchor": None}
    start_phase, skip = 0, 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        state.update(resume["train_state"])
        state["lr_anchor"] = resume_anchor(resume["train_state"], cfg)
        start_phase, skip = int(resume["data"]["phase"]), int(resume["data"].get("batches", 0))
    GradientAllReduce(model, world)
    history = list(config["history"])
    unsaved: dict | None = None  # the last record when steps were done since a checkpoint
    for phase_index in range(start_phase, len(config["phases"])):
        if state["step"] >= cfg.steps:
            break
        batches, consumed = _phase_batches(config, phase_index), 0
        while state["step"] < cfg.steps:
            batch = next(batches, None)
            if not _all_ranks(batch is not None, device):
                break  # this phase is over for every rank
            consumed += 1
            if phase_index == start_phase and consumed <= skip:
                continue  # trained before the resume
            started = time.perf_counter()
            before = [b.clone() for b in _router_biases(model)]
            record = train_step(model, opt, batch, cfg, state["step"], state["lr_anchor"])
            tokens = _merge_router_biases(before, model, record["tokens"])
            losses = [torch.zeros(1, device=device) for _ in range(world)]
            dist.all_gather(losses, torch.tensor([record["lm_loss"]], device=device))
            record["phase_start"] = record["phase"] != state["phase"]
            state = {"step": state["step"] + 1, "phase": record["phase"],
                     "tokens_seen": state["tokens_seen"] + tokens,
                     "schedule": schedule_state(cfg), "lr_anchor": state["lr_anchor"]}  # fmt: skip
            record |= {
                "tokens": tokens,  # real tokens of the global batch
                "tokens_seen": state["tokens_seen"],
                "lm_loss_per_rank": [x.item() for x in losses],
                "world_size": world,
                "step_time_s": time.perf_counter() - started,
            }
            history.append(json.dumps(record))
            unsaved = record
            if state["step"] >= cfg.steps or state["step"] % cfg.ckpt_every == 0:
                data = {"source": DATA_SOURCE, "phase": phase_index, "batches": consumed}
                _report(_checked(record, model, history), model, opt, data, state, history, rank)
                unsaved = None
        if unsaved is not None:  # the end of a phase: the next one starts from batch 0
            data = {"source": DATA_SOURCE, "phase": phase_index + 1, "batches": 0}
            _report(_checked(unsaved, model, history), model, opt, data, state, history, rank)
            unsaved = None


def _phase_info(phase_dir: Path) -> dict:
    manifest = read_manifest(phase_dir)
    return {"phase": manifest.phase, "phase_index": 0, "seq_len": manifest.seq_len,
            "rope_theta": manifest.rope_theta}  # fmt: skip


def _previous_run(cfg: TrainConfig) -> tuple[dict | None, list[str]]:
    """The checkpoint to resume from (None: a fresh run) and its metric lines."""
    out = Path(cfg.out_dir)
    ckpt_path, metrics_path = out / CKPT_NAME, out / METRICS_NAME
    if not (cfg.resume and ckpt_path.exists()):
        return None, []
    ckpt = load_checkpoint(ckpt_path)
    if "phase" not in ckpt.get("data", {}):
        raise ValueError(f"{ckpt_path}: data state {ckpt.get('data')} has no phase to resume at")
    step = ckpt["train_state"]["step"]
    lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
    return ckpt, [line for line in lines if json.loads(line).get("step", 0) <= step]


def fit_with_ray_train(
    train_cfg: TrainConfig,
    model_cfg: ModelConfig,
    phase_dirs: list[str],
    batch_size: int,
    num_workers: int,
    seed: int,
) -> list[dict]:
    """Train (or resume) through ``phase_dirs`` on ``num_workers`` Ray Train workers;
    returns rank 0's metric records of this call (each step's, as ``train()`` returns,
    with the global batch's ``tokens``, plus ``lm_loss_per_rank`` and ``world_size``; the
    checkpointed steps also carry ``max_param_diff_across_ranks`` and
    ``max_router_bias_diff_across_ranks``). ``seed`` seeds the block order of each
    phase's dataset."""
    if not phase_dirs:
        raise ValueError("fit_with_ray_train needs at least one phase folder")
    if batch_size < 1 or num_workers < 1:
        raise ValueError(f"batch_size ({batch_size}) and num_workers ({num_workers}) must be >= 1")
    dirs = [Path(d).resolve() for d in phase_dirs]
    manifests = [read_manifest(d) for d in dirs]
    vocab = max(m.vocab_size for m in manifests)
    ckpt, history = _previous_run(train_cfg)
    if ckpt is not None:
        model_cfg = ModelConfig(**ckpt["model_config"])
    if model_cfg.vocab_size < vocab:
        raise ValueError(f"model vocab_size {model_cfg.vocab_size} < the phases' {vocab}")
    names = domain_vocabulary(manifests, dirs)
    phases = [_phase_info(d) | {"phase_index": i} for i, d in enumerate(dirs)]
    datasets = {
        _dataset_name(i): packed_dataset(d, domain_names=names, shuffle_seed=seed + i)
        for i, d in enumerate(dirs)
    }
    use_gpu = torch.cuda.is_available()
    out = Path(train_cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_name = f"ray-train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    trainer = ray.train.torch.TorchTrainer(
        _worker_loop,
        train_loop_config={
            "train_cfg": train_cfg,
            "model_cfg": model_cfg,
            "phases": phases,
            "domain_names": names,
            "batch_size": batch_size,
            "history": history,
            "resume": ray.put(ckpt) if ckpt is not None else None,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker=None if use_gpu else {"CPU": CPU_PER_WORKER},
        ),
        run_config=ray.train.RunConfig(name=run_name, storage_path=str(out / "ray_train")),
        datasets=datasets,
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        return []  # nothing left to train
    start = ckpt["train_state"]["step"] if ckpt is not None else 0
    with result.checkpoint.as_directory() as folder:
        for name in (CKPT_NAME, METRICS_NAME):
            shutil.copyfile(Path(folder) / name, out / f"{name}.tmp")
            (out / f"{name}.tmp").replace(out / name)
    shutil.rmtree(out / "ray_train" / run_name, ignore_errors=True)
    records = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines()]
    return [r for r in records if r["step"] > start]
