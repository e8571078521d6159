"""``python -m pipeline train TRAIN.yaml`` and ``python -m pipeline grow``: the bundled
MoE trained through a curriculum's phases, from one validated config.

TRAIN.yaml (relative paths against its folder)::

    out: train                    # run folder: ckpt.pt, metrics.jsonl
    curriculum: curriculum.json   # written by `pipeline mix` ... or
    # phases: [packed/p1, packed/p2]   # packed phase folders, in order (exactly one of the two)
    model: demo_model.yaml        # ModelConfig fields, inline or a YAML file
    train: {lr: 3.0e-3, warmup_steps: 10}   # TrainConfig fields (steps: null = every batch)
    batch_size: 8
    epochs: 1                     # passes over each phase
    num_workers: 0                # DataLoader processes reading the shards
    seed: 0
    grow_at_step: null            # train `model` to this step, stack its layers twice, go on
    ray_workers: 0                # 0: this process; N: Ray Train with N workers
    width_transfer: null          # {proxy_model: ...}: `model` is wider than the tuned proxy

Rerunning the command after a kill continues from ``out/ckpt.pt`` on the exact next
batch (the checkpoint holds the model, optimiser, router biases and stream position),
so the metrics match an uninterrupted run. Nothing here starts training before the
whole config, the phases and any checkpoint in ``out`` have been checked.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, create_model, model_validator

from model_hooks.model import ModelConfig
from model_hooks.run_folder import CKPT_NAME, METRICS_NAME
from model_hooks.shard_format import MANIFEST_NAME, manifest_path, read_manifest
from model_hooks.train_config import TrainConfig
from pipeline.config import resolve_relative
from strict_config import ConfigError, StrictModel, format_validation_error, read_yaml

#: TrainConfig keys the TRAIN.yaml sets elsewhere: ``out`` and the top-level ``seed``.
_SET_ELSEWHERE = ("out_dir", "seed")

TrainSection = create_model(
    "TrainSection",
    __base__=StrictModel,
    **{
        name: (field.annotation, field)
        for name, field in TrainConfig.model_fields.items()
        if name not in (*_SET_ELSEWHERE, "steps")
    },
    steps=(int | None, Field(default=None, gt=0, description="None: every batch of the phases")),
)
TrainSection.__doc__ = "TrainConfig's fields (model_hooks/train_config.py) but out_dir and seed."


class WidthTransferSpec(StrictModel):
    proxy_model: ModelConfig
    """The narrow proxy whose init stds (and ``train.lr``) were tuned: inline fields or
    a YAML file. ``model`` is the target; its init stds and the hidden matrices' LR
    follow from the width ratio (``model_hooks/width_transfer.py``)."""


class TrainRunConfig(StrictModel):
    out: str
    """Run folder: ckpt.pt and metrics.jsonl."""
    curriculum: str | None = None
    """A curriculum.json written by ``pipeline mix`` (its phases, in order)."""
    phases: list[str] | None = Field(default=None, min_length=1)
    """Packed phase folders in training order (instead of ``curriculum``)."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """ModelConfig fields (model_hooks/model.py) or a YAML file of them; vocab_size
    defaults to the largest of the phases' manifests."""
    train: TrainSection = Field(default_factory=TrainSection)  # type: ignore[valid-type]
    batch_size: int = Field(default=8, gt=0)
    epochs: int = Field(default=1, gt=0)
    """Passes over each phase before the next starts."""
    num_workers: int = Field(default=0, ge=0)
    """DataLoader worker processes reading the shards (0: in this process)."""
    seed: int = 0
    """Seeds the model init and the stream's row order."""
    grow_at_step: int | None = Field(default=None, gt=0)
    """Model growth: train ``model`` to this step, then continue with twice its layers
    (1..n, 1..n) and the same optimiser moments, schedule and data position."""
    ray_workers: int = Field(default=0, ge=0)
    """0: train in this process; N > 0: Ray Train with N data-parallel workers (the same
    loop and checkpoint format: a run folder resumes under either)."""
    width_transfer: WidthTransferSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> TrainRunConfig:
        if (self.curriculum is None) == (self.phases is None):
            raise ValueError("give exactly one of `curriculum` and `phases`")
        if self.model.n_ffn_experts % self.train.balance_groups:
            raise ValueError(
                f"train.balance_groups={self.train.balance_groups} must divide "
                f"model.n_ffn_experts={self.model.n_ffn_experts}"
            )
        if self.grow_at_step is not None and self.ray_workers:
            raise ValueError("grow_at_step runs in this process only (ray_workers: 0)")
        if self.width_transfer is not None:
            tuned_here = {"init_std", "embed_init_std"} & self.model.model_fields_set
            if tuned_here:
                raise ValueError(
                    f"model.{sorted(tuned_here)[0]} comes from width_transfer.proxy_model "
                    "(set the proxy's init there)"
                )
        return self


@dataclass(frozen=True)
class TrainRun:
    """A checked TRAIN.yaml: the resolved config plus what it takes from the data."""

    path: Path
    config: TrainRunConfig
    phase_dirs: list[Path]
    model: ModelConfig
    """The architecture to start from (vocab size, width transfer applied)."""
    hidden_lr_scale: float


def _inline_model_file(data: dict[str, Any], keys: tuple[str, ...], base: Path) -> None:
    """Replace a model given as a YAML path (at ``keys``) by that file's mapping."""
    parent = data
    for key in keys[:-1]:
        parent = parent.get(key)
        if not isinstance(parent, dict):
            return
    value = parent.get(keys[-1])
    if isinstance(value, str):
        parent[keys[-1]] = read_yaml(resolve_relative(value, base))


def _phase_dirs(config: TrainRunConfig, path: Path) -> list[Path]:
    if config.curriculum is not None:
        curriculum_path = Path(config.curriculum)
        try:
            curriculum = read_yaml(curriculum_path)  # JSON is YAML
            dirs = [curriculum_path.parent / p["dir"] for p in curriculum["phases"]]
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"{path}: curriculum: {curriculum_path} is not a curriculum.json "
                f"(phases[].dir): {exc}"
            ) from exc
        except ConfigError as exc:
            raise ConfigError(f"{path}: curriculum: {exc}") from exc
        key = "curriculum"
    else:
        dirs, key = [Path(p) for p in config.phases or []], "phases"
    for index, directory in enumerate(dirs):
        if not manifest_path(directory).is_file():
            where = f"{key}[{index}]" if key == "phases" else f"{key} (phase {index})"
            raise ConfigError(
                f"{path}: {where}: no packed phase at {directory} (no {MANIFEST_NAME}; "
                "run `pipeline mix` first)"
            )
    if not dirs:
        raise ConfigError(f"{path}: {key}: no phases")
    return dirs


def load_train_run(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainRun:
    """Read, validate and resolve a TRAIN.yaml (relative paths against its folder) and
    check its phases exist. ``overrides`` replace top-level keys (the demo's batch size).
    Every failure is a ConfigError naming the file and the key."""
    path = Path(path)
    base = path.resolve().parent
    data = {**read_yaml(path), **(overrides or {})}
    _inline_model_file(data, ("model",), base)
    _inline_model_file(data, ("width_transfer", "proxy_model"), base)
    try:
        config = TrainRunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from exc
    resolved: dict[str, Any] = {"out": resolve_relative(config.out, base)}
    if config.curriculum is not None:
        resolved["curriculum"] = resolve_relative(config.curriculum, base)
    if config.phases is not None:
        resolved["phases"] = [resolve_relative(p, base) for p in config.phases]
    config = config.model_copy(update=resolved)
    phase_dirs = _phase_dirs(config, path)
    model, hidden_lr_scale = config.model, config.train.hidden_lr_scale
    if "vocab_size" not in model.model_fields_set:
        vocab = max(read_manifest(d).vocab_size for d in phase_dirs)
        model = ModelConfig(**{**model.model_dump(), "vocab_size": vocab})
    if config.width_transfer is not None:
        from model_hooks.width_transfer import transfer_width

        plan = transfer_width(config.width_transfer.proxy_model, model, hidden_lr_scale)
        model, hidden_lr_scale = plan.target_model, plan.groups["hidden"].lr_multiplier
    return TrainRun(path, config, phase_dirs, model, hidden_lr_scale)


def train_config(run: TrainRun, steps: int) -> TrainConfig:
    section = run.config.train.model_dump(exclude={"steps"})
    return TrainConfig(
        **{**section, "hidden_lr_scale": run.hidden_lr_scale},
        out_dir=run.config.out,
        seed=run.config.seed,
        steps=steps,
    )


# Fields a checkpoint may hold differently from TRAIN.yaml's model: growth doubles the
# layers, and each phase sets its own RoPE base.
_MAY_DIFFER = {"n_layers", "rope_theta"}


def _checkpoint_model(run: TrainRun, cfg: TrainConfig) -> ModelConfig | None:
    """The checkpoint's architecture when ``out`` holds one, after checking that it is
    this config's model (or that model grown) and was trained with the same LR groups."""
    from model_hooks.checkpoint import load_checkpoint
    from model_hooks.old_checkpoints import old_data_state_problem, stacked_experts_problem

    ckpt_path = Path(cfg.out_dir) / CKPT_NAME
    if not ckpt_path.exists():
        return None
    ckpt = load_checkpoint(ckpt_path)
    problem = stacked_experts_problem(ckpt, ckpt_path) or old_data_state_problem(ckpt, ckpt_path)
    if problem is not None:
        raise ConfigError(f"{run.path}: out: {problem}")
    saved = ModelConfig(**ckpt["model_config"])
    want = run.model
    for field in ModelConfig.model_fields:
        if field not in _MAY_DIFFER and getattr(saved, field) != getattr(want, field):
            raise ConfigError(
                f"{run.path}: model.{field}: {getattr(want, field)!r}, but {ckpt_path} was "
                f"trained with {getattr(saved, field)!r} (another run's folder? change `out`)"
            )
    if saved.n_layers not in (want.n_layers, 2 * want.n_layers):
        raise ConfigError(
            f"{run.path}: model.n_layers: {want.n_layers}, but {ckpt_path} has "
            f"{saved.n_layers} layers (neither the model nor it grown)"
        )
    scales = {g.get("lr_scale", 1.0) for g in ckpt["optimizer"]["param_groups"]} - {1.0}
    saved_scale = scales.pop() if scales else 1.0
    if saved_scale != cfg.hidden_lr_scale:
        raise ConfigError(
            f"{run.path}: train.hidden_lr_scale: {cfg.hidden_lr_scale:g}, but {ckpt_path} "
            f"was trained with {saved_scale:g}"
        )
    return saved


def run_train(run: TrainRun, steps: int | None = None) -> list[dict]:
    """Train (or resume) through the phases; returns this call's metric records.
    ``steps`` overrides ``train.steps``; with neither, every batch of every phase."""
    from model_hooks.checkpoint import grow_checkpoint, load_checkpoint
    from model_hooks.token_stream import StreamLoader, TokenStream
    from model_hooks.train import train

    config = run.config
    # With Ray workers each rank reads its share of every phase: count one rank's batches.
    stream = TokenStream(run.phase_dirs, batch_size=config.batch_size, seed=config.seed,
                         epochs=config.epochs, world_size=max(1, config.ray_workers))  # fmt: skip
    total = steps or config.train.steps or stream.num_batches()
    cfg = train_config(run, total)
    saved = _checkpoint_model(run, cfg)
    if saved is not None and not (steps or config.train.steps):
        # Every batch left from the checkpoint's position, at this world size: a run
        # resumed under another ``ray_workers`` takes N x batch_size rows per step.
        ckpt = load_checkpoint(Path(cfg.out_dir) / CKPT_NAME)
        stream.load_state_dict(ckpt["data"])
        cfg = train_config(run, ckpt["train_state"]["step"] + stream.num_batches())
    if config.ray_workers:
        from model_hooks.ray_train import fit_with_ray_train

        dirs = [str(d) for d in run.phase_dirs]
        return fit_with_ray_train(cfg, run.model, dirs, config.batch_size, config.ray_workers,
                                  config.seed, epochs=config.epochs,
                                  loader_workers=config.num_workers)  # fmt: skip
    source = StreamLoader(stream, config.num_workers) if config.num_workers else stream
    ckpt_path = Path(cfg.out_dir) / CKPT_NAME
    records: list[dict] = []
    grow_at = config.grow_at_step
    if grow_at is not None and (saved is None or saved.n_layers == run.model.n_layers):
        if grow_at >= total:
            raise ConfigError(f"{run.path}: grow_at_step: {grow_at} is not before the last "
                              f"step ({total})")  # fmt: skip
        done = load_checkpoint(ckpt_path)["train_state"]["step"] if saved else 0
        if done > grow_at:
            raise ConfigError(f"{run.path}: grow_at_step: {grow_at}, but {ckpt_path} is at "
                              f"step {done} without growth")  # fmt: skip
        records += train(cfg, source, saved or run.model, stop_at_step=grow_at)
        if load_checkpoint(ckpt_path)["train_state"]["step"] == grow_at:
            grow_checkpoint(ckpt_path, ckpt_path)  # atomic: a kill leaves one or the other
            print(f"grew the model to {2 * run.model.n_layers} layers at step {grow_at}")
    # With a checkpoint its architecture holds (grown, or with a phase's RoPE base).
    records += train(cfg, source, None if ckpt_path.exists() else run.model)
    return records


def _print_progress(records: list[dict], steps: int) -> None:
    for r in records:
        if r["phase_start"] or r["step"] % 10 == 0 or r["step"] == steps:
            print(f"step {r['step']:5d} {r['phase'] or ''} tokens {r['tokens_seen']} "
                  f"lm {r['lm_loss']:.3f} ffn/token {r['ffn_experts_per_token']}")  # fmt: skip


def train_command(config_path: Path, steps: int | None = None,
                  overrides: dict[str, Any] | None = None) -> int:  # fmt: skip
    """``python -m pipeline train``: check everything, train, print progress."""
    run = load_train_run(config_path, overrides)
    records = run_train(run, steps)
    if records:
        _print_progress(records, records[-1]["step"])
        print(f"trained to step {records[-1]['step']} -> {run.config.out}")
    else:
        print(f"nothing to do: {run.config.out} is already at its last step")
    return 0


def grow_command(source: Path, dest: Path) -> int:
    """``python -m pipeline grow --from RUN_DIR_OR_CKPT --to NEW_RUN_DIR``: a run folder
    holding the twice-deeper model with the same step, optimiser moments, router biases
    and data position, and the metrics so far; ``pipeline train`` with ``out`` set to
    it continues there."""
    from model_hooks.checkpoint import grow_checkpoint, load_checkpoint

    src = source / CKPT_NAME if source.is_dir() else source
    if not src.is_file():
        raise ConfigError(f"--from: no checkpoint at {src}")
    dst = dest / CKPT_NAME
    if dst.exists():
        raise ConfigError(f"--to: {dst} exists already (grow into a new run folder)")
    dest.mkdir(parents=True, exist_ok=True)
    grow_checkpoint(src, dst)
    metrics = src.parent / METRICS_NAME
    if metrics.is_file():  # train() keeps the lines up to the checkpoint's step
        shutil.copyfile(metrics, dest / METRICS_NAME)
    ckpt = load_checkpoint(dst)
    layers, step = ckpt["model_config"]["n_layers"], ckpt["train_state"]["step"]
    print(f"grew {src} to {layers} layers at step {step} -> {dst}")
    return 0
