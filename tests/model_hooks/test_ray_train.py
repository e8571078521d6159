"""The Ray Train entry: two workers through two tiny packed phases on the session's Ray,
and resumes across the local loop and Ray Train (one loop, one checkpoint format)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from model_hooks.run_folder import CKPT_NAME, METRICS_NAME, TIMINGS_NAME
from model_hooks.synthetic import progression_documents, write_packed_phase
from model_hooks.token_stream import TokenStream
from model_hooks.train import train
from model_hooks.train_config import TrainConfig
from tests.model_hooks.helpers import TINY


def _phases(root: Path) -> list[Path]:
    dirs = []
    for i, (name, seq_len, theta, n_docs) in enumerate(
        (("short", 32, 1e4, 40), ("long", 48, 5e5, 40))
    ):
        docs = progression_documents(n_docs, TINY.vocab_size, seed=i, max_doc_len=30)
        write_packed_phase(root / name, docs, seq_len, TINY.vocab_size, phase=name,
                           rope_theta=theta, rows_per_shard=8)  # fmt: skip
        dirs.append(root / name)
    return dirs


@pytest.fixture(autouse=True)
def _fast_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Train's controller polls its workers every 2 s by default; each report waits
    for that poll."""
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


def test_two_workers_train_in_step_through_the_phases(tmp_path: Path, ray_session) -> None:
    from model_hooks.ray_train import fit_with_ray_train

    phases = _phases(tmp_path / "data")
    out = tmp_path / "run"
    cfg = TrainConfig(out_dir=str(out), steps=10, warmup_steps=2, lr=1e-2, ckpt_every=3,
                      grad_ratio_every=4, device="cpu")  # fmt: skip
    records = fit_with_ray_train(cfg, TINY, [str(p) for p in phases], 2, 2, seed=0)

    steps = [r["step"] for r in records]
    assert steps == list(range(1, len(records) + 1)) and 6 <= len(records) <= 10
    losses = [r["lm_loss"] for r in records]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert [r["phase"] for r in records if r["phase_start"]] == ["short", "long"]
    assert all(r["world_size"] == 2 for r in records)
    # The ranks read different rows, yet end as bit-identical replicas.
    assert any(len(set(r["lm_loss_per_rank"])) == 2 for r in records)
    assert records[-1]["max_param_diff_across_ranks"] == 0.0
    assert records[-1]["max_router_bias_diff_across_ranks"] == 0.0
    tokens = [r["tokens_seen"] for r in records]
    assert tokens == sorted(tokens) and tokens[-1] == sum(r["tokens"] for r in records)

    ckpt = torch.load(out / CKPT_NAME, weights_only=True)
    assert ckpt["train_state"]["step"] == len(records)
    stream = TokenStream([str(p) for p in phases], batch_size=2, seed=0, world_size=2)
    for _ in records:
        next(stream)
    assert ckpt["data"] == stream.state_dict()  # the stream's state, as a local run saves
    assert ckpt["model_config"]["rope_theta"] == 5e5  # the last phase's RoPE base
    biases = [v for k, v in ckpt["model"].items() if k.endswith("router.bias")]
    assert biases and all(b.abs().sum() > 0 for b in biases)  # the controller ran
    logged = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines()]
    assert [r["lm_loss"] for r in logged] == losses
    timings = [json.loads(line) for line in (out / TIMINGS_NAME).read_text().splitlines()]
    assert [t["step"] for t in timings] == steps and "step_time_s" not in logged[0]
    assert not any((out / "ray_train").glob("ray-train-*"))  # the run folder is cleaned


@pytest.mark.slow
def test_a_second_call_resumes_from_the_checkpoint(tmp_path: Path, ray_session) -> None:
    from model_hooks.ray_train import fit_with_ray_train

    phases = [str(p) for p in _phases(tmp_path / "data")]
    out = tmp_path / "run"

    def cfg(steps: int) -> TrainConfig:
        return TrainConfig(out_dir=str(out), steps=steps, warmup_steps=2, lr=1e-2,
                           ckpt_every=3, grad_ratio_every=0, device="cpu")  # fmt: skip

    first = fit_with_ray_train(cfg(4), TINY, phases, 2, 2, seed=0)
    assert [r["step"] for r in first] == [1, 2, 3, 4]
    data = torch.load(out / CKPT_NAME, weights_only=True)["data"]
    assert (data["phase"], data["epoch"], data["sample"], data["world_size"]) == (0, 0, 16, 2)
    second = fit_with_ray_train(cfg(8), TINY, phases, 2, 2, seed=0)
    assert [r["step"] for r in second] == [5, 6, 7, 8]
    assert second[0]["tokens_seen"] == first[-1]["tokens_seen"] + second[0]["tokens"]
    assert second[-1]["max_param_diff_across_ranks"] == 0.0
    logged = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 9))
    assert fit_with_ray_train(cfg(8), TINY, phases, 2, 2, seed=0) == []  # nothing left


def _fixed_schedule(out: Path, steps: int) -> TrainConfig:
    """A schedule whose first steps do not depend on ``steps`` (no decay, pinned
    controller half-life), so a run paused at 4 and resumed to 8 is the 8-step run."""
    return TrainConfig(out_dir=str(out), steps=steps, warmup_steps=2, lr=1e-2, decay_steps=0,
                       bias_mu_decay_steps=50, ckpt_every=3, grad_ratio_every=3,
                       device="cpu")  # fmt: skip


def test_local_and_ray_train_resume_each_other(tmp_path: Path, ray_session) -> None:
    """World size 1: half a run on one path and the rest on the other is the
    uninterrupted local run, bit for bit (one loop, one checkpoint format)."""
    from model_hooks.ray_train import fit_with_ray_train

    phases = [str(p) for p in _phases(tmp_path / "data")]

    def local(out: Path, steps: int) -> list[dict]:
        return train(_fixed_schedule(out, steps), TokenStream(phases, batch_size=2, seed=0), TINY)

    def on_ray(out: Path, steps: int) -> list[dict]:
        return fit_with_ray_train(_fixed_schedule(out, steps), TINY, phases, 2, 1, seed=0)

    reference = local(tmp_path / "ref", 8)
    losses = [r["lm_loss"] for r in reference]
    final = torch.load(tmp_path / "ref" / CKPT_NAME, weights_only=True)

    for first, second, name in (
        (local, on_ray, "local-then-ray"),
        (on_ray, local, "ray-then-local"),
    ):
        out = tmp_path / name
        head, tail = first(out, 4), second(out, 8)
        assert [r["step"] for r in head + tail] == list(range(1, 9)), name
        assert [r["lm_loss"] for r in head + tail] == losses, name
        ckpt = torch.load(out / CKPT_NAME, weights_only=True)
        assert ckpt["data"] == final["data"] and ckpt["train_state"] == final["train_state"]
        assert all(torch.equal(ckpt["model"][k], v) for k, v in final["model"].items()), name
        logged = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines()]
        assert [r["lm_loss"] for r in logged] == losses, name


def test_ray_train_refuses_an_old_ray_data_checkpoint(tmp_path: Path) -> None:
    from model_hooks.old_checkpoints import OldCheckpointError
    from model_hooks.ray_train import fit_with_ray_train

    phases = [str(p) for p in _phases(tmp_path / "data")]
    out = tmp_path / "run"
    train(_fixed_schedule(out, 2), TokenStream(phases, batch_size=2, seed=0), TINY)
    ckpt = torch.load(out / CKPT_NAME, weights_only=True)
    ckpt["data"] = {"source": "ray_data", "phase": 0, "batches": 2}  # the old Ray Data path
    torch.save(ckpt, out / CKPT_NAME)
    with pytest.raises(OldCheckpointError, match=f"{out / CKPT_NAME} was written by the old"):
        fit_with_ray_train(_fixed_schedule(out, 4), TINY, phases, 2, 1, seed=0)
    with pytest.raises(OldCheckpointError, match="Ray Data's own row order"):
        train(_fixed_schedule(out, 4), TokenStream(phases, batch_size=2, seed=0), None)
