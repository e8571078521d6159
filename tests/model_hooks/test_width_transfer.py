"""Width transfer (SP, Adam LR full align) with hand-computed numbers, and the per-group
learning rates it drives in the optimiser."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from model_hooks.checkpoint import load_checkpoint
from model_hooks.model import Model, parameter_kind
from model_hooks.optimizer import build_optimizer
from model_hooks.run_folder import CKPT_NAME
from model_hooks.synthetic import SyntheticBatches
from model_hooks.train_config import TrainConfig
from model_hooks.train_step import train_step
from model_hooks.width_transfer import main, scale_width, transfer_width
from pipeline.train_cmd import load_train_run, run_train
from tests.model_hooks.helpers import TINY
from tests.model_hooks.train_cmd_helpers import train_yaml, write_curriculum

PROXY = TINY.model_copy(update={"init_std": 0.04})  # d_model 32, tuned init std 0.04


def test_four_times_wider_by_hand() -> None:
    target = scale_width(PROXY, 128)  # s = 4
    assert (target.d_model, target.n_heads, target.d_ffn, target.d_expert) == (128, 8, 256, 64)
    assert (target.q_lora_rank, target.kv_lora_rank) == (64, 32)
    assert target.qk_nope_head_dim == PROXY.qk_nope_head_dim  # head dims stay
    plan = transfer_width(PROXY, target)
    assert plan.width_ratio == 4
    rules = {name: (g.lr_multiplier, g.init_std) for name, g in plan.groups.items()}
    assert rules == {
        "embedding": (1.0, 0.04),  # unchanged
        "hidden": (0.25, 0.02),  # LR / 4, std / sqrt(4)
        "unembedding": (0.25, 0.02),
        "vector": (1.0, None),  # norm gains: init 1, LR unchanged
    }
    assert plan.target_model.init_std == 0.02 and plan.target_model.embed_init_std == 0.04
    cfg = plan.train_config(TrainConfig(out_dir="x", lr=3e-3))
    assert cfg.lr == 3e-3 and cfg.hidden_lr_scale == 0.25


def test_ratio_comes_from_d_model_and_composes() -> None:
    narrower = transfer_width(PROXY, PROXY.model_copy(update={"d_model": 16}))  # s = 1/2
    assert narrower.groups["hidden"].lr_multiplier == 2.0
    assert narrower.groups["hidden"].init_std == pytest.approx(0.04 * math.sqrt(2))
    # A proxy that was itself transferred passes its hidden multiplier on: 0.5 / 2.
    again = transfer_width(PROXY, scale_width(PROXY, 64), proxy_hidden_lr_scale=0.5)
    assert again.groups["hidden"].lr_multiplier == 0.25
    with pytest.raises(ValueError, match="not a whole number"):
        scale_width(PROXY, 40)  # n_heads 2 * 1.25


def test_target_model_is_initialised_with_the_transferred_stds() -> None:
    plan = transfer_width(PROXY, scale_width(PROXY, 128))
    model = Model(plan.target_model)
    assert model.embed.weight.std().item() == pytest.approx(0.04, rel=0.05)
    for weight in (model.lm_head.weight, model.layers[0].attn0.q_down.weight):
        assert weight.std().item() == pytest.approx(0.02, rel=0.05)
    out = model.layers[0].ffn0.w_down.weight  # residual outputs: / sqrt(5 n_layers) on top
    assert out.std().item() == pytest.approx(0.02 / math.sqrt(5 * TINY.n_layers), rel=0.05)


def _groups(model: Model, opt: torch.optim.Optimizer) -> dict[str, set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    kinds: dict[str, set[str]] = {}
    for group in opt.param_groups:
        members = {parameter_kind(names[id(p)], p) for p in group["params"]}
        kinds[f"{group['lr_scale']}/{group['weight_decay']}"] = members
    return kinds


def test_optimizer_groups_with_and_without_a_hidden_scale() -> None:
    model = Model(TINY)
    plain = build_optimizer(model, TrainConfig(out_dir="x", weight_decay=0.1))
    assert _groups(model, plain) == {"1.0/0.1": {"embedding", "hidden"}, "1.0/0.0": {"vector"}}
    scaled = build_optimizer(model, TrainConfig(out_dir="x", hidden_lr_scale=0.25))
    assert _groups(model, scaled) == {
        "0.25/0.1": {"hidden"},
        "1.0/0.1": {"embedding"},
        "1.0/0.0": {"vector"},
    }
    assert "lm_head.weight" in scaled.param_groups[0]["param_names"]


def test_first_adam_step_moves_each_group_by_its_lr() -> None:
    """Adam's first update is lr * g / |g| (+ eps): every touched weight moves by
    exactly its group's lr, so the per-group LR is visible in the weights."""
    model = Model(TINY)
    cfg = TrainConfig(out_dir="x", lr=1e-3, hidden_lr_scale=0.25, warmup_steps=0,
                      weight_decay=0.0, grad_clip=None, grad_ratio_every=0)  # fmt: skip
    opt = build_optimizer(model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_step(model, opt, next(SyntheticBatches(2, 16, TINY.vocab_size)), cfg, 0)
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    assert moved["embed.weight"] == pytest.approx(1e-3, rel=1e-4)
    assert moved["norm.weight"] == pytest.approx(1e-3, rel=1e-4)
    for name in ("lm_head.weight", "layers.0.attn0.q_down.weight", "layers.1.moe.router.weight"):
        assert moved[name] == pytest.approx(2.5e-4, rel=1e-4), name


def test_train_yaml_width_transfer_key(tmp_path: Path) -> None:
    write_curriculum(tmp_path)
    wide = scale_width(TINY, 64).model_dump(exclude={"vocab_size", "init_std", "embed_init_std"})
    proxy = TINY.model_dump(exclude={"vocab_size"}) | {"init_std": 0.04}
    (tmp_path / "proxy.yaml").write_text(yaml.safe_dump(proxy))
    path = train_yaml(tmp_path / "wide.yaml", model=wide, train={"lr": 2e-3},
                      width_transfer={"proxy_model": "proxy.yaml"})  # fmt: skip
    run = load_train_run(path)
    assert run.model.d_model == 64 and run.model.vocab_size == TINY.vocab_size
    assert run.model.init_std == pytest.approx(0.04 / math.sqrt(2))
    assert run.model.embed_init_std == 0.04
    assert run.hidden_lr_scale == 0.5
    run_train(run, steps=2)  # three optimiser groups, saved and resumed
    records = run_train(load_train_run(path), steps=3)
    assert [r["step"] for r in records] == [3] and math.isfinite(records[0]["lm_loss"])
    groups = load_checkpoint(Path(run.config.out) / CKPT_NAME)["optimizer"]["param_groups"]
    assert [(g["lr_scale"], g["lr"]) for g in groups] == [(0.5, 1e-3), (1.0, 2e-3), (1.0, 2e-3)]


def test_cli_prints_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proxy = tmp_path / "proxy.yaml"
    proxy.write_text("d_model: 64\nn_heads: 4\ninit_std: 0.02\n")
    assert main([str(proxy), "--d-model", "256", "--lr", "4e-3"]) == 0
    out = capsys.readouterr().out
    assert "width ratio s = 4" in out and "hidden_lr_scale: 0.25" in out
    assert "hidden       0.001" in out and "embedding    0.004" in out
    assert "d_model: 256" in out and "init_std: 0.01" in out
    proxy.write_text("d_model: 64\nwidth: 1\n")
    assert main([str(proxy), "--d-model", "256"]) == 2
