"""Sections 5 and 6 of the report: the training metrics and the expert allocation.

Both read ``train/metrics.jsonl`` (one record per optimiser step, made by
``model_hooks/train_step.py`` and written by ``model_hooks/run_folder.py``). Values the
trainer measures only sometimes (the gradient norm ratio) or only where a domain had
tokens (loss per domain) are ``null`` in a record; they become gaps in a curve and are
left out of means, never zeros.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from report import training_plots as plots
from report.data import RunData
from report.markup import Num, figure, missing, note, para, table
from report.verdict import EXPERT_TARGET_TOLERANCE, GRAD_RATIO_LIMIT, warmup_end


def _series(records: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in records])


def _per_layer(records: list[dict[str, Any]], key: str) -> dict[str, np.ndarray]:
    """A per-layer list metric as one series per layer (missing layers as gaps)."""
    width = max((len(r.get(key) or []) for r in records), default=0)
    return {
        f"layer {i}": np.array(
            [
                np.nan if len(r.get(key) or []) <= i or r[key][i] is None else float(r[key][i])
                for r in records
            ]
        )
        for i in range(width)
    }


def tokens_axis(records: list[dict[str, Any]]) -> tuple[np.ndarray, str]:
    """Cumulative tokens seen after each step (the trainer's own count where it has one)."""
    if all("tokens_seen" in r for r in records):
        return _series(records, "tokens_seen"), "tokens seen"
    if all("tokens" in r for r in records):
        return np.cumsum(_series(records, "tokens")), "tokens seen"
    return _series(records, "step"), "step"


def phase_boundaries(records: list[dict[str, Any]], x: np.ndarray) -> list[tuple[float, str]]:
    """Where each phase starts on the x axis: the tokens seen before its first step."""
    marks, previous = [], object()
    for i, record in enumerate(records):
        phase = record.get("phase")
        if phase is not None and (phase != previous or record.get("phase_start")):
            marks.append((float(x[i - 1]) if i else 0.0, str(phase)))
        previous = phase
    return marks


def _domain_losses(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    names = list(dict.fromkeys(d for r in records for d in (r.get("loss_by_domain") or {})))
    return {
        name: np.array(
            [
                np.nan
                if (r.get("loss_by_domain") or {}).get(name) is None
                else float(r["loss_by_domain"][name])
                for r in records
            ]
        )
        for name in names
    }


def _last(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else None


def _max(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else None


def expert_target(data: RunData) -> float | None:
    """K_e: from the metrics when the trainer logs it, else the checkpoint's config."""
    logged = next(
        (r["target_ffn_experts"] for r in data.metrics if "target_ffn_experts" in r), None
    )
    return logged if logged is not None else (data.model_config or {}).get("target_ffn_experts")


def _flag(value: float | None, bad: bool) -> str:
    return "" if value is None else ("OUT OF RANGE" if bad else "ok")


# The one row read from wall times (train/timings.jsonl): the only part of a report that
# differs between two runs of the same job (tests/pipeline/test_demo_twice.py leaves it out).
THROUGHPUT_ROW = "tokens per second, median step (wall time)"


def _throughput(records: list[dict[str, Any]]) -> float | None:
    """Median tokens per second over the steps with a wall time (metrics or timings file)."""
    rates = [r["tokens"] / r["step_time_s"] for r in records
             if r.get("tokens") and r.get("step_time_s")]  # fmt: skip
    return float(np.median(rates)) if rates else None


def _summary_rows(data: RunData, x, xlabel, marks, losses, lm, ratio) -> list[list]:
    records = data.metrics
    start = warmup_end(records)
    after = _max(ratio[start:])
    target = expert_target(data)
    warmup_step = records[start].get("step", start + 1)
    rows = [
        ["steps", Num(len(records)), ""],
        [xlabel, Num(int(x[-1]) if np.isfinite(x[-1]) else None), ""],
        ["phases", " → ".join(name for _, name in marks) or "–", ""],
        ["lm loss, first step", Num(_last(lm[:1])), ""],
        ["lm loss, last step", Num(_last(lm)), ""],
        *[[f"loss {name}, last measured", Num(_last(v)), ""] for name, v in losses.items()],
        ["warm-up ends (first step at the peak lr)", Num(int(warmup_step)), ""],
        [f"gradient norm ratio R_g, max after warm-up (limit {GRAD_RATIO_LIMIT})", Num(after),
         _flag(after, after is not None and after > GRAD_RATIO_LIMIT)],
        ["router cosine similarity, last", Num(_last(_series(records, "router_cosine_sim"))), ""],
        ["K_e: target FFN experts per token", Num(target), ""],
    ]  # fmt: skip
    for layer, values in _per_layer(records[start:], "ffn_experts_per_token").items():
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else None
        off = mean is not None and target is not None
        off = off and abs(mean - target) > EXPERT_TARGET_TOLERANCE * target
        flag = _flag(mean, off) if target is not None else "no target recorded"
        rows.append([f"FFN experts per token after warm-up, {layer}", Num(mean), flag])
    throughput = _throughput(records)
    if throughput is not None:
        rows.append([THROUGHPUT_ROW, Num(throughput, 1), ""])
    return rows


def training_section(data: RunData) -> str:
    records = data.metrics
    if not records:
        return missing("No train/metrics.jsonl in this run: the model was not trained here.")
    x, xlabel = tokens_axis(records)
    marks = phase_boundaries(records, x)
    losses = _domain_losses(records)
    lm = _series(records, "lm_loss")
    ratio = _series(records, "grad_norm_ratio")
    rows = _summary_rows(data, x, xlabel, marks, losses, lm, ratio)
    target = expert_target(data)
    k_e = None if target is None else (target, f"K_e {target:g}", False)
    panels = [
        ("balance loss", {"balance loss": _series(records, "balance_loss")}, None),
        ("hidden z-loss", {"z-loss": _series(records, "z_loss")}, None),
        ("gradient norm ratio R_g", {"R_g": ratio},
         (GRAD_RATIO_LIMIT, f"limit {GRAD_RATIO_LIMIT:g}", True)),
        ("router cosine similarity",
         {"mean": _series(records, "router_cosine_sim"),
          **_per_layer(records, "router_cosine_sim_per_layer")}, None),
        ("expert load spread (max / mean)", _per_layer(records, "load_max_over_mean"), None),
        ("FFN experts per token", _per_layer(records, "ffn_experts_per_token"), k_e),
        ("zero-expert share", _per_layer(records, "zero_expert_share"), None),
        ("gradient norm", {"grad norm": _series(records, "grad_norm")}, None),
    ]  # fmt: skip
    panels = [p for p in panels if p[1] and any(np.isfinite(v).any() for v in p[1].values())]
    window = plots.smoothing_window(len(records))
    smoothing = (
        f"solid lines are a centred {window}-step moving mean, the raw per-step values faint"
        if window > 1
        else "too few steps to smooth: raw per-step values"
    )
    text = f"{len(records)} steps; dashed lines mark where a phase starts; {smoothing}."
    return "\n".join(
        [
            para(text),
            table("training", ["metric", "value", "check"], rows),
            figure(plots.losses(x, lm, losses, marks), "Loss and loss per domain against tokens"),
            figure(
                plots.stability(x, panels, marks),
                "Balance loss, z-loss, gradient norm ratio (red: its limit), router similarity, "
                "expert load, FFN experts per token (red: the target K_e)",
            ),
        ]
    )


def expert_matrix(records: list[dict[str, Any]]) -> tuple[np.ndarray, list[str], list[str]]:
    """Mean FFN experts per token, domains x layers, over the steps that measured them.

    Accepts ``{domain: [per layer]}`` and the older ``{domain: mean over layers}``."""
    sums: dict[str, dict[int, float]] = {}
    counts: dict[str, dict[int, int]] = {}
    scalar_only = True
    for record in records:
        for domain, values in (record.get("ffn_experts_per_token_by_domain") or {}).items():
            if isinstance(values, list):
                scalar_only = False
            layers = values if isinstance(values, list) else [values]
            for layer, value in enumerate(layers):
                if value is None:
                    continue
                sums.setdefault(domain, {}).setdefault(layer, 0.0)
                sums[domain][layer] += float(value)
                counts.setdefault(domain, {}).setdefault(layer, 0)
                counts[domain][layer] += 1
    domains = list(sums)
    width = max((max(s) + 1 for s in sums.values() if s), default=0)
    matrix = np.full((len(domains), width), np.nan)
    for i, domain in enumerate(domains):
        for layer, total in sums[domain].items():
            matrix[i, layer] = total / counts[domain][layer]
    layers = ["all layers"] if scalar_only and width == 1 else [str(i) for i in range(width)]
    return matrix, domains, layers


def expert_section(data: RunData) -> str:
    if not data.metrics:
        return missing("No train/metrics.jsonl in this run: no routing was measured.")
    matrix, domains, layers = expert_matrix(data.metrics)
    source = "per data domain"
    if not domains:  # a trainer without domain tags still reports per layer
        per_layer = _per_layer(data.metrics, "ffn_experts_per_token")
        if not per_layer:
            return missing("The metrics hold no FFN experts per token.")
        matrix = np.array([[np.nanmean(v) for v in per_layer.values()]])
        domains, layers, source = ["all data"], [str(i) for i in range(len(per_layer))], "all"
    rows = [
        [d, *[Num(None if np.isnan(v) else float(v), 3) for v in matrix[i]]]
        for i, d in enumerate(domains)
    ]
    uri, scale = plots.heatmap(matrix, domains, layers)
    return "\n".join(
        [
            para(
                f"Mean number of FFN (non-zero) experts per token, {source}, over "
                f"{len(data.metrics)} steps: the LongCat-Flash appendix analysis, by our domain "
                "tags. Fewer FFN experts means more tokens went to zero-computation experts."
            ),
            figure(uri, f"FFN experts per token by data domain and layer; {scale}"),
            table("experts", ["domain", *[f"layer {layer}" for layer in layers]], rows),
            f"<p>{html.escape('Layers are counted from the input (0).')}</p>",
            note(_target_note(expert_target(data))),
        ]
    )


def _target_note(target: float | None) -> str:
    if target is None:
        return "The target K_e is not recorded in this run (no train/ckpt.pt model_config)."
    return f"The router's target is K_e = {target:g} FFN experts per token, for every domain."
