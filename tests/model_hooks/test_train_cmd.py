"""``python -m pipeline train TRAIN.yaml``: the config, the curriculum, exact resume
after SIGKILL, and a loss that goes down."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_hooks.checkpoint import load_checkpoint
from model_hooks.run_folder import CKPT_NAME, METRICS_NAME
from pipeline.cli import main as cli_main
from pipeline.config import ConfigError
from pipeline.train_cmd import load_train_run, run_train
from tests.model_hooks.helpers import TINY
from tests.model_hooks.train_cmd_helpers import PHASES, lm_losses, train_yaml, write_curriculum

REPO = Path(__file__).resolve().parents[2]

# Runs the real command in a child process that SIGKILLs itself as step `kill_at`
# (0-based) begins: after the checkpoint of step 4, before any later one.
_KILLED_RUN = """
import os, signal, sys
import torch
torch.set_num_threads(1)
import model_hooks.train as train_module
real_step, kill_at = train_module.train_step, int(sys.argv[2])
def train_step(model, opt, batch, cfg, step, *rest):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_step(model, opt, batch, cfg, step, *rest)
train_module.train_step = train_step
from pipeline.cli import main
sys.exit(main(["train", sys.argv[1]]))
"""


@pytest.fixture
def curriculum(tmp_path: Path) -> Path:
    return write_curriculum(tmp_path)


def test_trains_the_phases_in_curriculum_order(curriculum: Path) -> None:
    run = load_train_run(train_yaml(curriculum.parent / "train.yaml"))
    assert run.model.vocab_size == TINY.vocab_size  # from the manifests
    assert [d.name for d in run.phase_dirs] == [name for name, _, _ in PHASES]
    records = run_train(run)
    phases = [r["phase"] for r in records]
    assert phases == sorted(phases, key=[name for name, _, _ in PHASES].index)
    assert {r["phase"] for r in records if r["phase_start"]} == {"short", "long"}
    ckpt = load_checkpoint(Path(run.config.out) / CKPT_NAME)
    assert ckpt["train_state"]["step"] == len(records)  # every batch of both phases
    assert ckpt["model_config"]["rope_theta"] == PHASES[-1][2]  # the last phase's base
    assert set(ckpt) == {"model", "optimizer", "data", "train_state", "model_config"}
    assert run_train(run) == []  # a rerun of a finished run has nothing left to do


def test_sigkill_then_rerun_gives_the_uninterrupted_losses(curriculum: Path) -> None:
    straight = train_yaml(curriculum.parent / "straight.yaml", out="straight")
    assert cli_main(["train", str(straight)]) == 0
    expected = lm_losses(curriculum.parent / "straight" / METRICS_NAME)
    assert len(expected) > 6

    killed = train_yaml(curriculum.parent / "killed.yaml", out="killed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(killed), "5"], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert child.returncode == -9, child.stderr  # SIGKILL, mid-run
    run_dir = curriculum.parent / "killed"
    assert load_checkpoint(run_dir / CKPT_NAME)["train_state"]["step"] == 4
    assert len(lm_losses(run_dir / METRICS_NAME)) == 5  # one step past the checkpoint

    assert cli_main(["train", str(killed)]) == 0  # the same command again
    steps = [json.loads(line)["step"] for line in (run_dir / METRICS_NAME).read_text().splitlines()]
    assert steps == list(range(1, len(expected) + 1))
    assert lm_losses(run_dir / METRICS_NAME) == expected


def test_short_training_lowers_the_loss(curriculum: Path) -> None:
    path = train_yaml(curriculum.parent / "train.yaml", phases=["packed/short"],
                      curriculum=None, epochs=4)  # fmt: skip
    records = run_train(load_train_run(path))
    losses = [r["lm_loss"] for r in records]
    assert len(losses) >= 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4


def test_steps_override_and_explicit_phases(curriculum: Path) -> None:
    path = train_yaml(curriculum.parent / "train.yaml", phases=["packed/long"], curriculum=None)
    assert cli_main(["train", str(path), "--steps", "3"]) == 0
    metrics = [json.loads(x) for x in (curriculum.parent / "run" / METRICS_NAME).open()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert {m["phase"] for m in metrics} == {"long"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"phases": ["packed/short"]}, "exactly one of `curriculum` and `phases`"),
        ({"curriculum": "missing.json"}, "curriculum: "),
        ({"curriculum": None, "phases": ["packed/nope"]}, "phases[0]: no packed phase"),
        ({"train": {"lr": "fast"}}, "train.lr: Input should be a valid number"),
        ({"train": {"out_dir": "x"}}, "train.out_dir: unknown key"),
        ({"model": {"d_model": -1}}, "model.d_model: Input should be greater than 0"),
        ({"batch_size": 0}, "batch_size: Input should be greater than 0"),
        ({"train": {"balance_groups": 3}}, "train.balance_groups=3 must divide"),
        ({"grow_at_step": 2, "ray_workers": 2}, "grow_at_step runs in this process only"),
        (
            {"model": {"init_std": 0.01}, "width_transfer": {"proxy_model": {"d_model": 16}}},
            "model.init_std comes from width_transfer.proxy_model",
        ),
    ],
)
def test_bad_configs_name_the_file_and_key(
    curriculum: Path, capsys: pytest.CaptureFixture[str], overrides: dict, message: str
) -> None:
    path = train_yaml(curriculum.parent / "bad.yaml", **overrides)
    assert cli_main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err, err
    assert not (curriculum.parent / "run").exists()  # nothing started


def test_model_file_errors_name_the_model_file(curriculum: Path) -> None:
    model = curriculum.parent / "model.yaml"
    model.write_text("d_model: 32\nwidth: 3\n")
    path = train_yaml(curriculum.parent / "train.yaml", model="model.yaml")
    with pytest.raises(ConfigError, match=r"model\.width: unknown key"):
        load_train_run(path)
    (curriculum.parent / "model.yaml").write_text(": not yaml [")
    with pytest.raises(ConfigError, match=r"model\.yaml: not valid YAML"):
        load_train_run(path)


def test_a_run_folder_of_another_model_is_refused(curriculum: Path) -> None:
    run_train(load_train_run(train_yaml(curriculum.parent / "a.yaml")), steps=2)
    other = train_yaml(curriculum.parent / "b.yaml", model={"d_ffn": 96})
    with pytest.raises(ConfigError, match=r"b.yaml: model.d_ffn: 96, but .* trained with 64"):
        run_train(load_train_run(other))
    scaled = train_yaml(curriculum.parent / "c.yaml", train={"hidden_lr_scale": 0.5})
    with pytest.raises(ConfigError, match=r"train\.hidden_lr_scale: 0\.5, but .* trained with 1"):
        run_train(load_train_run(scaled))


def test_a_run_folder_of_an_old_version_is_refused_before_training(curriculum: Path) -> None:
    path = train_yaml(curriculum.parent / "a.yaml")
    run_train(load_train_run(path), steps=2)
    ckpt_path = Path(load_train_run(path).config.out) / CKPT_NAME
    ckpt = load_checkpoint(ckpt_path)
    torch.save({**ckpt, "data": {"source": "ray_data", "phase": 0, "batches": 2}}, ckpt_path)
    with pytest.raises(ConfigError, match=r"a\.yaml: out: .*ckpt\.pt was written by the old Ray"):
        run_train(load_train_run(path), steps=4)
    model = dict(ckpt["model"])
    stacked = model.pop("layers.0.moe.experts.w_up")
    model |= {f"layers.0.moe.experts.{i}.w_up.weight": w for i, w in enumerate(stacked)}
    torch.save({**ckpt, "model": model}, ckpt_path)
    with pytest.raises(ConfigError, match=r"before the FFN experts were stacked"):
        run_train(load_train_run(path), steps=4)


@pytest.mark.skipif(
    importlib.util.find_spec("model_hooks.ray_train") is None,
    reason="model_hooks/ray_train.py (Ray Train path) is not in this checkout",
)
def test_ray_workers_go_through_ray_train(
    curriculum: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model_hooks.ray_train as ray_train

    calls = []

    def fake_fit(train_cfg, model_cfg, phase_dirs, batch_size, num_workers, seed, *,
                 epochs, loader_workers):  # fmt: skip
        calls.append((train_cfg.steps, model_cfg.vocab_size, phase_dirs, batch_size,
                      num_workers, seed, epochs, loader_workers))  # fmt: skip
        return []

    monkeypatch.setattr(ray_train, "fit_with_ray_train", fake_fit)
    yaml_path = train_yaml(curriculum.parent / "t.yaml", ray_workers=2, epochs=2, num_workers=1)
    run = load_train_run(yaml_path)
    assert run_train(run, steps=3) == []
    dirs = [str(d) for d in run.phase_dirs]
    assert calls == [(3, TINY.vocab_size, dirs, 2, 2, 3, 2, 1)]
    assert not (Path(run.config.out) / CKPT_NAME).exists()  # nothing trained in-process


def test_a_local_run_continues_on_ray_train_with_the_batches_left(
    curriculum: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """steps: null after a world-size change: the steps done plus every batch left from
    the checkpoint's stream position at the new world size (not a count from the start)."""
    import model_hooks.ray_train as ray_train
    from model_hooks.token_stream import TokenStream

    path = train_yaml(curriculum.parent / "t.yaml", train={"steps": None})
    run_train(load_train_run(path), steps=3)  # locally, world size 1
    seen = []

    def fake_fit(train_cfg, *args, **kwargs) -> list[dict]:
        seen.append(train_cfg.steps)
        return []

    monkeypatch.setattr(ray_train, "fit_with_ray_train", fake_fit)
    run = load_train_run(train_yaml(curriculum.parent / "t.yaml", train={"steps": None},
                                    ray_workers=2))  # fmt: skip
    run_train(run)
    stream = TokenStream(run.phase_dirs, batch_size=2, seed=3, world_size=2)
    stream.load_state_dict(load_checkpoint(Path(run.config.out) / CKPT_NAME)["data"])
    assert seen == [3 + stream.num_batches()]
    from_the_start = TokenStream(run.phase_dirs, batch_size=2, seed=3, world_size=2)
    assert seen[0] != from_the_start.num_batches()  # what the count used to be


def test_demo_flow_trains_through_pipeline_train(tmp_path: Path) -> None:
    """The main job's train step: configs/demo_train.yaml copied into the run folder,
    its curriculum.json and demo_model.yaml, through `pipeline train`'s code path."""
    from pipeline.flow import stage_demo_configs, train_on_curriculum

    write_curriculum(tmp_path)
    stage_demo_configs(tmp_path)
    run = load_train_run(tmp_path / "demo_train.yaml")
    assert run.config.out == str((tmp_path / "train").resolve())
    assert run.model.d_model == 64 and run.model.vocab_size == TINY.vocab_size  # demo_model
    assert train_on_curriculum(tmp_path, 3, 2, tmp_path / "demo_model.yaml") == 0
    metrics = [json.loads(x) for x in (tmp_path / "train" / METRICS_NAME).open()]
    assert [m["step"] for m in metrics] == [1, 2, 3] and metrics[0]["phase"] == "short"
