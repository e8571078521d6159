"""bench.controller's figures that separate the controller's misses from the data's:
the window figure, the best +-5% band and the frozen re-routing of a trained run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.controller import (
    best_band_share,
    frozen_routing,
    main,
    router_inputs_watch,
    token_specific_share,
    window_tracking,
)
from model_hooks.checkpoint import load_checkpoint
from model_hooks.model import Model
from model_hooks.run_folder import CKPT_NAME
from model_hooks.synthetic import progression_documents, write_packed_phase
from model_hooks.token_stream import TokenStream
from model_hooks.train import train
from model_hooks.train_config import TrainConfig
from tests.model_hooks.helpers import TINY


def _records(values: list[float], tokens: list[int]) -> list[dict]:
    return [
        {"ffn_experts_per_token": [v, v], "tokens": n} for v, n in zip(values, tokens, strict=True)
    ]


def test_window_figure_weights_steps_by_their_tokens() -> None:
    # After a 1-step warm-up, windows of 2: (3.0, 2.0) weighted 1:3 -> 2.25, on K_e (its
    # plain mean, 2.5, would be out); (2.0, 3.0) weighted 3:3 -> 2.5, out of 5%.
    records = _records([9.0, 3.0, 2.0, 3.0], [5, 1, 3, 3])
    result = window_tracking(records, k_e=2.25, warmup=1, window=2)
    assert result["windows"] == 2
    assert result["share_within_5pct"] == 0.5


def test_best_band_holds_the_densest_stretch() -> None:
    # The band is 0.25 wide at K_e 2.5: 2.0, 2.1, 2.2 fit together; 2.6 and 3.0 do not.
    assert best_band_share([2.0, 3.0, 2.1, 2.6, 2.2], 2.5) == 0.6
    assert best_band_share([2.5] * 4, 2.5) == 1.0


def test_frozen_routing_uses_the_trained_weights_and_biases(tmp_path: Path) -> None:
    docs = progression_documents(40, TINY.vocab_size, seed=0)
    write_packed_phase(tmp_path / "p", docs, 64, TINY.vocab_size, phase="p")
    dirs = [tmp_path / "p"]
    stream = TokenStream([str(d) for d in dirs], batch_size=2, seed=0)
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), steps=2, grad_ratio_every=0,
                      router_cosine_every=0, device="cpu")  # fmt: skip
    train(cfg, stream, TINY)
    result = frozen_routing(tmp_path / "run", dirs, 2, TINY.target_ffn_experts)
    assert result["batches"] == TokenStream([str(d) for d in dirs], batch_size=2).num_batches()
    assert 0.0 <= result["mean"] <= TINY.top_k

    # FFN biases far above any probability: every pick is an FFN expert, in every batch.
    path = tmp_path / "run" / CKPT_NAME
    ckpt = load_checkpoint(path)
    for name, bias in ckpt["model"].items():
        if name.endswith("router.bias"):
            bias[: TINY.n_ffn_experts] = 10.0
    torch.save(ckpt, path)
    pinned = frozen_routing(tmp_path / "run", dirs, 2, TINY.target_ffn_experts)
    assert pinned["mean"] == TINY.top_k and pinned["std_between_batches"] == 0.0
    assert pinned["best_band_share"] == 1.0 and pinned["share_within_5pct_of_k_e"] == 0.0


def test_main_applies_model_overrides_over_the_demo_model(tmp_path: Path, capsys) -> None:
    """``--model-set`` changes the demo model the run trains (here K_e, which the figures
    are taken against), and the output names the overrides and the closing loss."""
    docs = progression_documents(30, TINY.vocab_size, seed=0)
    write_packed_phase(tmp_path / "p", docs, 64, TINY.vocab_size, phase="p")
    (tmp_path / "curriculum.json").write_text(json.dumps({"phases": [{"dir": "p"}]}))
    argv = ["--curriculum", str(tmp_path / "curriculum.json"), "--warmup", "1", "--window", "2",
            "--model-set", "target_ffn_experts=2.0", "--set", "router_cosine_every=0"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(out[: out.index("\n}\n") + 2])
    assert result["k_e"] == 2.0 and result["model_overrides"] == {"target_ffn_experts": 2.0}
    assert result["overrides"] == {"router_cosine_every": 0}
    assert result["lm_loss_last_10_steps"] > 0
    shares = result["router_inputs"]["input_token_share"]
    assert len(shares) == result["steps"] and all(len(s) == 2 for s in shares)


def test_router_inputs_watch_records_each_training_forward_per_layer() -> None:
    """One entry per forward with gradients (the controller's no-grad re-routing is left
    out), one value per layer; vectors all alike have no token-specific share."""
    assert token_specific_share(torch.ones(5, 4)) == 0.0
    assert token_specific_share(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(1.0)
    torch.manual_seed(0)
    model = Model(TINY)
    tokens_BT = torch.randint(0, TINY.vocab_size, (1, 32))
    positions_BT = torch.arange(tokens_BT.shape[1])[None]
    doc_BT = torch.zeros_like(tokens_BT)
    with router_inputs_watch(TINY.n_layers, TINY.n_ffn_experts) as steps:
        for _ in range(2):
            model(tokens_BT, positions_BT, doc_BT)
        with torch.no_grad():
            model.routing(tokens_BT, positions_BT, doc_BT)
    assert len(steps) == 2
    for step in steps:
        assert len(step["input_token_share"]) == len(step["ffn_per_token_std"]) == TINY.n_layers
        assert all(0.0 < share <= 1.0 for share in step["input_token_share"])
