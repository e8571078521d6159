from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from model_hooks.checkpoint import grow_checkpoint, load_checkpoint
from model_hooks.old_checkpoints import OldCheckpointError
from model_hooks.old_checkpoints import main as convert_main
from model_hooks.optimizer import get_lr
from model_hooks.run_folder import CKPT_NAME, METRICS_NAME, TIMINGS_NAME
from model_hooks.synthetic import SyntheticBatches
from model_hooks.train import train
from model_hooks.train_config import TrainConfig
from tests.model_hooks.helpers import TINY

METRIC_KEYS = {
    "step", "lr", "lm_loss", "loss_by_domain", "ffn_experts_per_token_by_domain",
    "balance_loss", "z_loss", "grad_norm", "grad_norm_ratio", "router_cosine_sim",
    "router_cosine_sim_per_layer", "ffn_experts_per_token", "zero_expert_share",
    "load_max_over_mean", "bias_mu", "tokens", "phase", "phase_start",
    "tokens_seen",
}  # fmt: skip


def _cfg(out: Path, **overrides: object) -> TrainConfig:
    knobs = {"out_dir": str(out), "steps": 6, "warmup_steps": 2, "lr": 3e-3, "device": "cpu"}
    return TrainConfig(**{**knobs, **overrides})


def _source() -> SyntheticBatches:
    return SyntheticBatches(batch_size=2, seq_len=32, vocab_size=TINY.vocab_size, seed=3)


def test_resume_replays_the_same_losses(tmp_path: Path) -> None:
    # Extending a 3-step run to 6: the LR at steps 0-2 is the same under both lengths,
    # and the controller's half-life is pinned (by default it scales with ``steps``).
    pinned = {"bias_mu_decay_steps": 1000}
    straight = train(_cfg(tmp_path / "a", **pinned), _source(), TINY)
    first = train(_cfg(tmp_path / "b", steps=3, **pinned), _source(), TINY)
    second = train(_cfg(tmp_path / "b", **pinned), _source())  # model_config from the ckpt
    assert [r["step"] for r in first + second] == list(range(1, 7))
    assert [r["lm_loss"] for r in first + second] == [r["lm_loss"] for r in straight]
    assert [r["balance_loss"] for r in first + second] == [r["balance_loss"] for r in straight]
    a, b = (load_checkpoint(tmp_path / d / CKPT_NAME)["model"] for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = (tmp_path / "b" / METRICS_NAME).read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == list(range(1, 7))


def test_checkpoint_has_fixed_keys_and_loads_weights_only(tmp_path: Path) -> None:
    train(_cfg(tmp_path, steps=2), _source(), TINY)
    ckpt = torch.load(tmp_path / CKPT_NAME, weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "data", "train_state", "model_config"}
    assert ckpt["train_state"]["step"] == 2 and ckpt["data"]["step"] == 2
    assert ckpt["model_config"] == TINY.model_dump()
    assert ckpt["optimizer"]["param_groups"][0]["eps"] == 1e-16


def test_metrics_are_logged_every_step(tmp_path: Path) -> None:
    records = train(_cfg(tmp_path, steps=2), _source(), TINY)
    lines = (tmp_path / METRICS_NAME).read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    for record in records:
        assert set(record) == METRIC_KEYS
        assert set(record["loss_by_domain"]) == {"web", "code", "math"}
        assert len(record["ffn_experts_per_token"]) == TINY.n_layers
        assert 0 < record["grad_norm_ratio"] < math.inf
        assert 0 <= record["zero_expert_share"][0] <= 1
        assert record["load_max_over_mean"][0] >= 1


def test_growth_checkpoint_resumes_at_the_same_step(tmp_path: Path) -> None:
    train(_cfg(tmp_path / "half", steps=2), _source(), TINY)
    (tmp_path / "full").mkdir()
    grow_checkpoint(tmp_path / "half" / CKPT_NAME, tmp_path / "full" / CKPT_NAME)
    records = train(_cfg(tmp_path / "full", steps=3), _source())
    assert [r["step"] for r in records] == [3]
    assert len(records[0]["ffn_experts_per_token"]) == 2 * TINY.n_layers


def test_short_training_lowers_the_loss(tmp_path: Path) -> None:
    knobs = {"steps": 30, "warmup_steps": 4, "lr": 1e-2, "grad_ratio_every": 0}
    cfg = _cfg(tmp_path, **knobs)
    source = SyntheticBatches(batch_size=4, seq_len=48, vocab_size=TINY.vocab_size)
    losses = [r["lm_loss"] for r in train(cfg, source, TINY)]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5  # about 0.4 when written


def test_diagnostics_every_n_steps(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, steps=7, grad_ratio_every=3, router_cosine_every=2)
    records = train(cfg, _source(), TINY)
    assert [r["grad_norm_ratio"] is not None for r in records] == [
        True, False, False, True, False, False, True,  # steps 0, 3, 6 (the last)
    ]  # fmt: skip
    assert [r["router_cosine_sim"] is not None for r in records] == [
        True, False, True, False, True, False, True,
    ]  # fmt: skip
    assert all((r["router_cosine_sim_per_layer"] is None) == (r["router_cosine_sim"] is None)
               for r in records)  # fmt: skip


def test_resume_with_more_steps_continues_the_lr(tmp_path: Path) -> None:
    """A finished 4-step cosine resumed to 8 steps: the LR goes on from where it was
    (no jump back up the new cosine) down to min_lr at step 8; a second resume keeps
    the anchor. A warmup-stable-decay run extended in its stable phase is unchanged."""
    first = train(_cfg(tmp_path / "cos", steps=4, min_lr=1e-4), _source(), TINY)
    second = train(_cfg(tmp_path / "cos", steps=8, min_lr=1e-4), _source(), stop_at_step=6)
    third = train(_cfg(tmp_path / "cos", steps=8, min_lr=1e-4), _source())
    lrs = [r["lr"] for r in first + second + third]
    plain = _cfg(tmp_path / "x", steps=8, min_lr=1e-4)
    assert get_lr(4, plain) > 1.2 * lrs[3]  # what the new schedule alone would jump to
    assert lrs[4] == lrs[3] and all(b < a for a, b in itertools.pairwise(lrs[4:]))
    assert 1e-4 < lrs[-1] < 0.25 * lrs[3]  # on its way to min_lr at step 8
    anchor = load_checkpoint(tmp_path / "cos" / CKPT_NAME)["train_state"]["lr_anchor"]
    assert anchor == {"step": 4, "lr": lrs[3]}
    wsd = {"decay_steps": 2}
    train(_cfg(tmp_path / "wsd", steps=6, **wsd), _source(), TINY, stop_at_step=3)
    records = train(_cfg(tmp_path / "wsd", steps=10, **wsd), _source())
    assert [r["step"] for r in records] == list(range(4, 11))
    assert [r["lr"] for r in records[:5]] == [3e-3] * 5  # still flat until its decay
    state = load_checkpoint(tmp_path / "wsd" / CKPT_NAME)["train_state"]
    assert state["lr_anchor"] is None


def test_paused_run_resumes_exactly_with_the_defaults(tmp_path: Path) -> None:
    straight = train(_cfg(tmp_path / "a"), _source(), TINY)
    first = train(_cfg(tmp_path / "b"), _source(), TINY, stop_at_step=3)
    second = train(_cfg(tmp_path / "b"), _source())
    assert [r["lm_loss"] for r in first + second] == [r["lm_loss"] for r in straight]
    assert [r["bias_mu"] for r in first + second] == [r["bias_mu"] for r in straight]


def test_two_runs_write_byte_identical_outputs(tmp_path: Path) -> None:
    """Two threads and the global deterministic mode off: train() turns it on for the
    run; the checkpoints and metrics.jsonl of two runs match byte for byte, the wall
    times live in timings.jsonl."""
    import hashlib

    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(2)
    for run in ("a", "b"):
        source = SyntheticBatches(batch_size=2, seq_len=48, vocab_size=TINY.vocab_size, seed=4)
        train(_cfg(tmp_path / run, steps=4, ckpt_every=2), source, TINY)
    assert not torch.are_deterministic_algorithms_enabled()  # restored afterwards

    def digest(run: str, name: str) -> str:
        return hashlib.sha256((tmp_path / run / name).read_bytes()).hexdigest()

    for name in (CKPT_NAME, METRICS_NAME):
        assert digest("a", name) == digest("b", name), name
    timings = [
        json.loads(line) for line in (tmp_path / "a" / TIMINGS_NAME).read_text().splitlines()
    ]
    assert [t["step"] for t in timings] == [1, 2, 3, 4]
    assert all(t["step_time_s"] > 0 for t in timings)
    assert "step_time_s" not in (tmp_path / "a" / METRICS_NAME).read_text()


def _per_expert_layout(ckpt: dict) -> dict:
    """``ckpt`` as the trainer wrote it before the experts were stacked: one
    ``experts.{i}.{w}.weight`` per expert in the model and in the optimiser (names,
    indices and AdamW moments), in the old module order."""
    model = {}
    for key, value in ckpt["model"].items():
        prefix, _, name = key.rpartition(".")
        if prefix.endswith(".experts"):
            model |= {f"{prefix}.{i}.{name}.weight": value[i].clone() for i in range(len(value))}
        else:
            model[key] = value
    state, groups, index = {}, [], 0
    for group in ckpt["optimizer"]["param_groups"]:
        names, params, expert_runs = [], [], {}
        for name, pid in zip(group["param_names"], group["params"], strict=True):
            prefix, _, w = name.rpartition(".")
            if prefix.endswith(".experts"):
                expert_runs.setdefault(prefix, []).append((w, pid))
                if len(expert_runs[prefix]) < 3:
                    continue
                n = len(ckpt["model"][name])
                for i in range(n):
                    for w_name, w_pid in expert_runs[prefix]:
                        names.append(f"{prefix}.{i}.{w_name}.weight")
                        old = ckpt["optimizer"]["state"][w_pid]
                        state[index] = {k: v if k == "step" else v[i].clone()
                                        for k, v in old.items()}  # fmt: skip
                        params.append(index)
                        index += 1
                continue
            names.append(name)
            state[index] = ckpt["optimizer"]["state"][pid]
            params.append(index)
            index += 1
        groups.append({**group, "param_names": names, "params": params})
    return {**ckpt, "model": model, "optimizer": {"state": state, "param_groups": groups}}


def test_a_checkpoint_from_before_the_stacked_experts_is_refused_then_converted(
    tmp_path: Path,
) -> None:
    old_run, new_run = tmp_path / "old", tmp_path / "new"
    train(_cfg(old_run, steps=3, bias_mu_decay_steps=50), _source(), TINY)
    reference = train(_cfg(old_run, steps=6, bias_mu_decay_steps=50), _source(), None)
    train(_cfg(new_run, steps=3, bias_mu_decay_steps=50), _source(), TINY)
    ckpt_path = new_run / CKPT_NAME
    old = _per_expert_layout(load_checkpoint(ckpt_path))
    assert "layers.0.moe.experts.3.w_down.weight" in old["model"]
    torch.save(old, ckpt_path)

    with pytest.raises(OldCheckpointError) as refused:  # not a tensor-shape error
        train(_cfg(new_run, steps=6, bias_mu_decay_steps=50), _source(), None)
    message = str(refused.value)
    assert str(ckpt_path) in message and "before the FFN experts were stacked" in message
    assert f"python -m model_hooks.old_checkpoints {ckpt_path}" in message
    assert load_checkpoint(ckpt_path)["model"].keys() == old["model"].keys()  # untouched

    assert convert_main([str(new_run)]) == 0
    resumed = train(_cfg(new_run, steps=6, bias_mu_decay_steps=50), _source(), None)
    assert [r["lm_loss"] for r in resumed] == [r["lm_loss"] for r in reference]


def test_a_checkpoint_of_other_parameters_is_refused_by_name(tmp_path: Path) -> None:
    train(_cfg(tmp_path, steps=2), _source(), TINY)
    with pytest.raises(ValueError, match=r"optimiser state is for other parameters.*group 0"):
        train(_cfg(tmp_path, steps=4, hidden_lr_scale=0.5), _source(), None)
