"""The trainer on packed shards: phases in order, RoPE base per phase, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model_hooks.checkpoint import load_checkpoint
from model_hooks.model import Model
from model_hooks.moe import RouterInfo
from model_hooks.run_folder import CKPT_NAME, METRICS_NAME
from model_hooks.synthetic import pack_rows, progression_documents, write_packed_phase
from model_hooks.token_stream import TokenStream
from model_hooks.train import main, train
from model_hooks.train_config import TrainConfig
from model_hooks.train_step import domain_metrics
from tests.model_hooks.helpers import TINY


def _phases(root: Path, n_docs: int = 60) -> list[Path]:
    dirs = []
    for i, (name, seq_len, theta) in enumerate((("short", 32, 1e4), ("long", 64, 5e5))):
        docs = progression_documents(n_docs, TINY.vocab_size, seed=i, max_doc_len=30)
        write_packed_phase(root / name, docs, seq_len, TINY.vocab_size, phase=name,
                           rope_theta=theta, rows_per_shard=16)  # fmt: skip
        dirs.append(root / name)
    return dirs


def _cfg(out: Path, **overrides: object) -> TrainConfig:
    knobs = {"out_dir": str(out), "steps": 8, "warmup_steps": 2, "device": "cpu"}
    return TrainConfig(**{**knobs, **overrides})


class _KilledAfter:
    """A source whose process dies after n batches (after the last checkpoint)."""

    def __init__(self, source: TokenStream, n: int) -> None:
        self.source, self.left = source, n
        self.state_dict, self.load_state_dict = source.state_dict, source.load_state_dict

    def __next__(self) -> dict:
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return next(self.source)


def test_stream_training_resumes_exactly_across_a_phase_boundary(tmp_path: Path) -> None:
    phases = _phases(tmp_path / "data", n_docs=30)

    def stream() -> TokenStream:
        return TokenStream(phases, batch_size=2, seed=4)

    steps = stream().num_batches()
    short_steps = TokenStream(phases[:1], batch_size=2).num_batches()
    assert 4 < short_steps < steps
    cfg = _cfg(tmp_path / "a", steps=steps, ckpt_every=4, grad_ratio_every=3)
    straight = train(cfg, stream(), TINY)
    cfg = cfg.model_copy(update={"out_dir": str(tmp_path / "c")})
    with pytest.raises(KeyboardInterrupt):  # killed at step 6, the checkpoint is at 4
        train(cfg, _KilledAfter(stream(), 6), TINY)
    assert load_checkpoint(tmp_path / "c" / CKPT_NAME)["train_state"]["step"] == 4
    resumed = train(cfg, stream())
    assert [r["step"] for r in resumed] == list(range(5, steps + 1))
    assert [r["lm_loss"] for r in resumed] == [r["lm_loss"] for r in straight[4:]]
    assert straight[0]["phase"] == "short" and straight[-1]["phase"] == "long"
    starts = [(r["step"], r["phase"]) for r in straight if r["phase_start"]]
    assert starts == [(1, "short"), (short_steps + 1, "long")]
    tokens = [r["tokens_seen"] for r in straight]
    assert tokens == sorted(tokens) and tokens[-1] == sum(r["tokens"] for r in straight)
    assert [r["tokens_seen"] for r in resumed] == tokens[4:]
    ckpt = torch.load(tmp_path / "c" / CKPT_NAME, weights_only=True)
    assert ckpt["data"]["phase"] == 2  # the curriculum is done
    assert ckpt["model_config"]["rope_theta"] == 5e5  # the last phase's RoPE base
    logged = (tmp_path / "c" / METRICS_NAME).read_text().splitlines()
    assert [json.loads(line)["lm_loss"] for line in logged] == [r["lm_loss"] for r in straight]


def test_short_training_on_packed_shards_lowers_the_loss(tmp_path: Path) -> None:
    phase = _phases(tmp_path / "data", n_docs=200)[:1]
    stream = TokenStream(phase, batch_size=4, epochs=3)
    cfg = _cfg(tmp_path / "run", steps=30, warmup_steps=4, lr=1e-2, grad_ratio_every=0)
    losses = [r["lm_loss"] for r in train(cfg, stream, TINY)]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def test_command_line_trains_through_the_phases(tmp_path: Path, capsys) -> None:
    phases = _phases(tmp_path / "data", n_docs=20)
    model = tmp_path / "model.json"
    model.write_text(json.dumps(TINY.model_dump()))
    out = tmp_path / "run"
    args = ["--phases", *map(str, phases), "--out", str(out), "--batch-size", "2"]
    assert main([*args, "--model", str(model)]) == 0
    records = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines()]
    assert {r["phase"] for r in records} == {"short", "long"}
    assert records[-1]["step"] == TokenStream(phases, batch_size=2).num_batches()
    assert "long" in capsys.readouterr().out
    assert main([*args, "--steps", str(len(records))]) == 0  # resumes, nothing left to do


def test_padding_is_left_out_of_routing_counts() -> None:
    doc = torch.arange(1, 6)
    batch = pack_rows([[(doc, 1)]], seq_len=8, domain_names=["web", "code"])  # 3 padding
    T = 8
    # Real tokens pick one FFN expert and a zero expert; padding picks two FFN experts.
    topk_TK = torch.tensor([[0, 4]] * 5 + [[1, 2]] * 3)
    info = RouterInfo(torch.full((T, 6), 1 / 6), topk_TK)
    ce_BT = torch.ones(1, T)
    metrics = domain_metrics(ce_BT, batch, [info], n_ffn=4)
    assert metrics["ffn_experts_per_token_by_domain"]["code"] == [1.0]
    assert metrics["ffn_experts_per_token_by_domain"]["web"] == [None]
    real = info.select(batch["token_mask"].flatten())
    assert real.topk_TK.shape == (5, 2)
    model = Model(TINY)
    router = model.layers[0].moe.router
    router.update_bias(real.topk_TK, 0.1, TINY.target_ffn_experts)
    assert router.bias[1] == router.bias[2] > router.bias[0]  # padding picks not counted
