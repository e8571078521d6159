"""Does the bias controller hold K_e with the trainer's defaults? FFN experts per token
(mean over layers) against the target K_e at every step of a training run of the demo
model, after warm-up: the share of steps within 5% of K_e and the mean.

By default the run is the demo curriculum's shape on synthetic documents (five phases
at 1k, 1k, 1k, 4k, 8k tokens, about 100 steps of two rows); ``--curriculum`` trains on
real packed phases instead (a ``curriculum.json`` written by ``pipeline mix``, e.g. the
demo run's). The TrainConfig is the default one but for the number of steps, so the
figure is what a user gets; ``--set KEY=VALUE`` overrides a TrainConfig field (to
compare settings).

Two more figures say how much of a miss is the controller's:

* ``frozen``: the trained model, weights and router biases frozen at the last step,
  routes every batch of the curriculum again. The spread of FFN experts per token from
  batch to batch is then the data's alone (two rows of one domain route differently
  from two of another: the report's dynamic computation), and ``best_band_share`` is the
  most batches a band of +-5% of K_e can hold wherever it is placed: about the ceiling
  of the per-step figure for any controller that sets the biases before it sees the
  batch, as the report's does.
* ``window``: the token-weighted mean of FFN experts per token over the last
  ``--window`` steps (the controller's own horizon: it holds an average, not each batch)
  within 5% of K_e, on the windows that start after warm-up.

``router_inputs`` says, per step and layer, whether the tokens route alike: the
token-specific share of the router's input (1: nothing in common across the batch) and
the spread over the tokens of their FFN experts (0: every token gets the same number).

    python -m bench.controller [--curriculum runs/demo/curriculum.json] [--set bias_mu0=0.1]
        [--model-set embed_init_std=1.0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

from bench.contract import add_contract_arguments, row, write_json
from model_hooks.checkpoint import load_checkpoint
from model_hooks.model import Model, ModelConfig
from model_hooks.moe import Router, RouterInfo
from model_hooks.run_folder import CKPT_NAME
from model_hooks.synthetic import progression_documents, write_packed_phase
from model_hooks.token_stream import TokenStream
from model_hooks.train import train
from model_hooks.train_config import TrainConfig
from strict_config import read_yaml

DEMO_MODEL = Path(__file__).resolve().parent.parent / "configs" / "demo_model.yaml"
SYNTHETIC_PHASES = (("pretrain", 1024, 51), ("midtrain_1", 1024, 21), ("midtrain_2", 1024, 20),
                    ("long_context", 4096, 8), ("long_context_2", 8192, 3))  # fmt: skip
VOCAB = 512


def synthetic_curriculum(root: Path, rows_scale: float = 1.0) -> list[Path]:
    """The demo curriculum's phases (name, seq_len, about 2 x steps rows) on the
    synthetic progression documents, with the long phases' longer documents."""
    dirs = []
    for index, (name, seq_len, steps) in enumerate(SYNTHETIC_PHASES):
        tokens = int(2 * steps * seq_len * rows_scale)
        long = seq_len > 1024
        n_docs = tokens // (seq_len // 2 if long else 300) + 1
        docs = progression_documents(n_docs, VOCAB, seed=index, min_doc_len=64,
                                     max_doc_len=seq_len if long else 600)  # fmt: skip
        write_packed_phase(root / name, docs, seq_len, VOCAB, phase=name)
        dirs.append(root / name)
    return dirs


def layer_mean_ffn(records: list[dict]) -> list[float]:
    """FFN experts per token of each step, the mean over layers."""
    return [sum(r["ffn_experts_per_token"]) / len(r["ffn_experts_per_token"]) for r in records]


def tracking(records: list[dict], k_e: float, warmup: int) -> dict:
    """Share of post-warm-up steps whose FFN experts per token (mean over layers) is
    within 5% of K_e, the mean, and the worst step."""
    values = layer_mean_ffn(records)
    after = values[warmup:]
    within = [abs(v - k_e) <= 0.05 * k_e for v in after]
    return {
        "steps": len(values),
        "warmup_steps": warmup,
        "k_e": k_e,
        "share_within_5pct": round(sum(within) / max(len(after), 1), 3),
        "mean_after_warmup": round(sum(after) / max(len(after), 1), 4),
        "worst_after_warmup": round(max(after, key=lambda v: abs(v - k_e)), 4) if after else None,
        "per_step": [round(v, 3) for v in values],
    }


def window_tracking(records: list[dict], k_e: float, warmup: int, window: int) -> dict:
    """Share of the ``window``-step windows after warm-up whose token-weighted mean FFN
    experts per token is within 5% of K_e: what the controller holds over its horizon."""
    values, tokens = layer_mean_ffn(records), [r["tokens"] for r in records]
    means = []
    for end in range(warmup + window, len(values) + 1):
        weights = tokens[end - window : end]
        total = sum(v * w for v, w in zip(values[end - window : end], weights, strict=True))
        means.append(total / max(sum(weights), 1))
    within = [abs(m - k_e) <= 0.05 * k_e for m in means]
    return {
        "window_steps": window,
        "windows": len(means),
        "share_within_5pct": round(sum(within) / len(means), 3) if means else None,
    }


def best_band_share(values: list[float], k_e: float) -> float:
    """The most of ``values`` that one band of +-5% of K_e holds, wherever it lies."""
    ordered, width = sorted(values), 0.1 * k_e
    best, low = 0, 0
    for high, value in enumerate(ordered):
        while value - ordered[low] > width:
            low += 1
        best = max(best, high - low + 1)
    return round(best / max(len(values), 1), 3)


def token_specific_share(x_TD: torch.Tensor) -> float:
    """How much of a batch's vectors is their own: the RMS of their deviation from the
    batch mean over their RMS (1 when they share nothing, 0 when they are all alike)."""
    x_TD = x_TD.detach().float()
    spread = (x_TD - x_TD.mean(dim=0, keepdim=True)).pow(2).sum(-1).mean()
    return float((spread / x_TD.pow(2).sum(-1).mean().clamp(min=1e-30)).sqrt())


@contextmanager
def router_inputs_watch(n_layers: int, n_ffn: int) -> Iterator[list[dict]]:
    """Per training forward (grad enabled; the controller's re-routing runs without),
    for each layer in order: the token-specific share of the router's input and the
    standard deviation over the batch's tokens (padding included) of their FFN experts.
    All tokens routing alike shows as both near 0."""
    steps: list[dict] = []

    def watch(module: torch.nn.Module, args: tuple, output: object) -> None:
        if not isinstance(module, Router) or not torch.is_grad_enabled():
            return
        assert isinstance(output, RouterInfo)
        if not steps or len(steps[-1]["input_token_share"]) == n_layers:
            steps.append({"input_token_share": [], "ffn_per_token_std": []})
        steps[-1]["input_token_share"].append(round(token_specific_share(args[0]), 3))
        ffn_T = (output.topk_TK < n_ffn).sum(-1).float()
        steps[-1]["ffn_per_token_std"].append(round(float(ffn_T.std()), 3))

    handle = torch.nn.modules.module.register_module_forward_hook(watch)
    try:
        yield steps
    finally:
        handle.remove()


@torch.no_grad()
def frozen_routing(run_dir: Path, dirs: list[Path], batch_size: int, k_e: float) -> dict:
    """Every batch of the curriculum through the model of ``run_dir/ckpt.pt`` with its
    weights and router biases fixed: FFN experts per token per batch (real tokens, the
    mean over layers), their spread and the best band's share."""
    ckpt = load_checkpoint(run_dir / CKPT_NAME)
    model = Model(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    n_ffn, values = model.cfg.n_ffn_experts, []
    for batch in TokenStream([str(d) for d in dirs], batch_size=batch_size, seed=0):
        if batch.get("rope_theta") is not None:  # as train_step: each phase its own base
            model.cfg = model.cfg.model_copy(update={"rope_theta": float(batch["rope_theta"])})
        _, _, infos = model(batch["tokens"], batch["positions"], batch["doc_index"],
                            batch.get("cu_seqlens"))  # fmt: skip
        real_T = batch["token_mask"].flatten()
        per_layer = [(info.topk_TK[real_T] < n_ffn).sum(-1).float().mean() for info in infos]
        values.append(float(sum(per_layer)) / len(per_layer))
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
    return {
        "batches": len(values),
        "mean": round(mean, 4),
        "std_between_batches": round(std, 4),
        "best_band_share": best_band_share(values, k_e),
        "share_within_5pct_of_k_e": round(
            sum(abs(v - k_e) <= 0.05 * k_e for v in values) / len(values), 3
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--curriculum", type=Path, help="a curriculum.json (default: synthetic)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a TrainConfig field (YAML value)")  # fmt: skip
    parser.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a ModelConfig field over the demo model's (YAML value)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the figure")
    parser.add_argument("--window", type=int, default=10, help="steps per window figure")
    add_contract_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    model_overrides = {
        k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.model_set)
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.curriculum is not None:
            spec = json.loads(args.curriculum.read_text())
            dirs = [args.curriculum.parent / p["dir"] for p in spec["phases"]]
        else:
            dirs = synthetic_curriculum(Path(tmp) / "phases", 0.25 if args.quick else 1.0)
        stream = TokenStream([str(d) for d in dirs], batch_size=args.batch_size, seed=0)
        fields = read_yaml(DEMO_MODEL) | model_overrides
        model_cfg = ModelConfig(**fields, vocab_size=max(p.vocab_size for p in stream.phases))
        cfg = TrainConfig(**{"out_dir": str(Path(tmp) / "run"), "steps": stream.num_batches(),
                             "grad_ratio_every": 0, "device": "cpu", **overrides})  # fmt: skip
        with router_inputs_watch(model_cfg.n_layers, model_cfg.n_ffn_experts) as inputs:
            records = train(cfg, stream, model_cfg)
        k_e = model_cfg.target_ffn_experts
        frozen = frozen_routing(Path(cfg.out_dir), dirs, args.batch_size, k_e)
    last = records[-10:]
    result = tracking(records, k_e, args.warmup) | {
        "window": window_tracking(records, k_e, args.warmup, args.window),
        "frozen": frozen,
        "router_inputs": {  # per step, each layer: see router_inputs_watch
            key: [step[key] for step in inputs]
            for key in ("input_token_share", "ffn_per_token_std")
        },
        "data": str(args.curriculum or "synthetic demo-shaped curriculum"),
        "overrides": overrides,
        "model_overrides": model_overrides,
        "final_lm_loss": round(records[-1]["lm_loss"], 4),
        "lm_loss_last_10_steps": round(sum(r["lm_loss"] for r in last) / len(last), 4),
    }
    print(json.dumps(result, indent=2))
    rows = [
        row("steps with FFN experts per token within 5% of K_e, after warm-up",
            result["share_within_5pct"], unit="share of steps"),
        row("mean FFN experts per token after warm-up", result["mean_after_warmup"],
            unit=f"experts (K_e = {result['k_e']})", compare=False),
        row(f"{args.window}-step windows (token-weighted) within 5% of K_e, after warm-up",
            result["window"]["share_within_5pct"], unit="share of windows"),
        row("batches within one +-5% band, model and biases frozen at the last step",
            frozen["best_band_share"], unit="share of batches (per-step ceiling)",
            compare=False),
    ]  # fmt: skip
    write_json(args.json, "controller", rows, [json.dumps(result)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
