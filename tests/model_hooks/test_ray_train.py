"""The Ray Train entry: two workers through two tiny packed phases on the session's Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from model_hooks.synthetic import progression_documents, write_packed_phase
from model_hooks.train import CKPT_NAME, METRICS_NAME, TrainConfig
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
    assert ckpt["model_config"]["rope_theta"] == 5e5  # the last phase's RoPE base
    biases = [v for k, v in ckpt["model"].items() if k.endswith("router.bias")]
    assert biases and all(b.abs().sum() > 0 for b in biases)  # the controller ran
    logged = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines()]
    assert [r["lm_loss"] for r in logged] == losses
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
    assert torch.load(out / CKPT_NAME, weights_only=True)["data"] == {
        "source": "ray_data", "phase": 0, "batches": 4,
    }  # fmt: skip
    second = fit_with_ray_train(cfg(8), TINY, phases, 2, 2, seed=0)
    assert [r["step"] for r in second] == [5, 6, 7, 8]
    assert second[0]["tokens_seen"] == first[-1]["tokens_seen"] + second[0]["tokens"]
    assert second[-1]["max_param_diff_across_ranks"] == 0.0
    logged = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 9))
    assert fit_with_ray_train(cfg(8), TINY, phases, 2, 2, seed=0) == []  # nothing left
