"""Model growth through the commands: ``pipeline grow`` and TRAIN.yaml's grow_at_step."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from model_hooks.checkpoint import load_checkpoint
from model_hooks.run_folder import CKPT_NAME, METRICS_NAME
from pipeline.cli import main as cli_main
from pipeline.config import ConfigError
from pipeline.train_cmd import load_train_run, run_train
from tests.model_hooks.helpers import TINY
from tests.model_hooks.train_cmd_helpers import lm_losses, train_yaml, write_curriculum

N = TINY.n_layers


def _layer_source(name: str) -> str:
    """layers.{i + n}.x -> layers.{i}.x: the half-depth parameter a grown one copies."""
    parts = name.split(".")
    if parts[0] == "layers":
        parts[1] = str(int(parts[1]) % N)
    return ".".join(parts)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_curriculum(tmp_path, n_docs=40)
    return tmp_path


def test_grow_command_stacks_layers_and_keeps_the_training_state(root: Path) -> None:
    half = train_yaml(root / "half.yaml", out="half")
    assert cli_main(["train", str(half), "--steps", "4"]) == 0
    assert cli_main(["grow", "--from", str(root / "half"), "--to", str(root / "full")]) == 0
    small, big = (
        load_checkpoint(root / "half" / CKPT_NAME),
        load_checkpoint(root / "full" / CKPT_NAME),
    )
    assert big["model_config"]["n_layers"] == 2 * N
    for name, tensor in big["model"].items():  # layer i + n equals layer i (biases too)
        assert torch.equal(tensor, small["model"][_layer_source(name)]), name
    for i in range(N):
        lo = {k: v for k, v in big["model"].items() if k.startswith(f"layers.{i}.")}
        hi = {k.replace(f"layers.{i}.", f"layers.{i + N}.", 1): v for k, v in lo.items()}
        assert all(torch.equal(v, big["model"][k]) for k, v in hi.items())
    assert big["train_state"] == small["train_state"] and big["data"] == small["data"]
    old_ids = {n: i for g in small["optimizer"]["param_groups"]
               for n, i in zip(g["param_names"], g["params"], strict=True)}  # fmt: skip
    for group in big["optimizer"]["param_groups"]:
        for name, pid in zip(group["param_names"], group["params"], strict=True):
            moments, source = big["optimizer"]["state"][pid], small["optimizer"]["state"]
            old = source[old_ids[_layer_source(name)]]
            assert all(torch.equal(moments[k], old[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert lm_losses(root / "full" / METRICS_NAME) == lm_losses(root / "half" / METRICS_NAME)

    # `pipeline train` on the grown folder continues at the same step and data position.
    full = train_yaml(root / "full.yaml", out="full")
    records = run_train(load_train_run(full), steps=12)
    assert [r["step"] for r in records] == list(range(5, 13))
    assert all(len(r["ffn_experts_per_token"]) == 2 * N for r in records)
    losses = lm_losses(root / "full" / METRICS_NAME)
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    continued = run_train(load_train_run(half), steps=12)  # the half-depth model, same data
    assert [r["phase"] for r in continued] == [r["phase"] for r in records]
    assert [r["tokens_seen"] for r in continued] == [r["tokens_seen"] for r in records]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4


def test_grow_refuses_a_missing_source_or_an_existing_target(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["grow", "--from", str(root / "nothing"), "--to", str(root / "b")]) == 2
    assert "--from: no checkpoint at" in capsys.readouterr().err
    run_train(load_train_run(train_yaml(root / "a.yaml", out="a")), steps=2)
    (root / "b").mkdir()
    (root / "b" / CKPT_NAME).write_bytes(b"")
    assert cli_main(["grow", "--from", str(root / "a"), "--to", str(root / "b")]) == 2
    assert "exists already" in capsys.readouterr().err


def test_grow_at_step_equals_train_grow_train(root: Path) -> None:
    """One TRAIN.yaml with grow_at_step gives exactly the losses of training the half
    model, growing it with the command and training on (a flat lr after warmup and a
    fixed half-life of the bias controller, whose default scales with ``steps``, so the
    half run's own --steps does not change its schedules)."""
    flat = {"decay_steps": 0, "bias_mu_decay_steps": 1000}
    one = train_yaml(root / "one.yaml", out="one", grow_at_step=4, train=flat)
    records = run_train(load_train_run(one), steps=10)
    assert [len(r["ffn_experts_per_token"]) for r in records] == [N] * 4 + [2 * N] * 6
    assert load_checkpoint(root / "one" / CKPT_NAME)["model_config"]["n_layers"] == 2 * N
    assert run_train(load_train_run(one), steps=10) == []  # rerun: grown, done

    half = train_yaml(root / "half.yaml", out="half", train=flat)
    assert cli_main(["train", str(half), "--steps", "4"]) == 0
    assert cli_main(["grow", "--from", str(root / "half"), "--to", str(root / "full")]) == 0
    full = train_yaml(root / "full.yaml", out="full", train=flat)
    assert cli_main(["train", str(full), "--steps", "10"]) == 0
    assert lm_losses(root / "full" / METRICS_NAME) == [r["lm_loss"] for r in records]

    # Killed after the step-4 checkpoint, before the growth: the rerun grows, then trains.
    paused = train_yaml(root / "paused.yaml", out="paused", train=flat)
    assert cli_main(["train", str(paused), "--steps", "4"]) == 0
    resumed = train_yaml(root / "resumed.yaml", out="paused", grow_at_step=4, train=flat)
    assert [r["step"] for r in run_train(load_train_run(resumed), steps=10)] == list(range(5, 11))
    assert lm_losses(root / "paused" / METRICS_NAME) == [r["lm_loss"] for r in records]


def test_grow_at_step_after_the_checkpoint_is_refused(root: Path) -> None:
    run_train(load_train_run(train_yaml(root / "a.yaml", out="a")), steps=4)
    late = train_yaml(root / "b.yaml", out="a", grow_at_step=2)
    with pytest.raises(ConfigError, match=r"grow_at_step: 2, but .* at step 4 without growth"):
        run_train(load_train_run(late), steps=8)
    past_end = train_yaml(root / "c.yaml", out="c", grow_at_step=8)
    with pytest.raises(ConfigError, match="grow_at_step: 8 is not before the last step"):
        run_train(load_train_run(past_end), steps=8)
