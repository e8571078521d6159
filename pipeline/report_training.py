"""Sections 5 and 6 of the report: the training metrics and the expert allocation.

Both read ``train/metrics.jsonl`` (one record per optimiser step, written by
``model_hooks/train.py``). Values the trainer measures only sometimes (the gradient norm
ratio) or only where a domain had tokens (loss per domain) are ``null`` in a record;
they become gaps in a curve and are left out of means, never zeros.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from pipeline import report_plots as plots
from pipeline.report_data import RunData
from pipeline.report_html import Num, figure, missing, para, table

GRAD_RATIO_LIMIT = 0.1  # LongCat-Flash: keep the balance loss's gradient below 0.1 of the LM's


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


def training_section(data: RunData) -> str:
    records = data.metrics
    if not records:
        return missing("No train/metrics.jsonl in this run: the model was not trained here.")
    x, xlabel = tokens_axis(records)
    marks = phase_boundaries(records, x)
    losses = _domain_losses(records)
    lm = _series(records, "lm_loss")
    ratio = _series(records, "grad_norm_ratio")
    rows = [
        ["steps", Num(len(records))],
        [xlabel, Num(int(x[-1]) if np.isfinite(x[-1]) else None)],
        ["phases", " → ".join(name for _, name in marks) or "–"],
        ["lm loss, first step", Num(_last(lm[:1]))],
        ["lm loss, last step", Num(_last(lm))],
        *[[f"loss {name}, last measured", Num(_last(v))] for name, v in losses.items()],
        [f"gradient norm ratio, max (limit {GRAD_RATIO_LIMIT})", Num(_max(ratio))],
        ["router cosine similarity, last", Num(_last(_series(records, "router_cosine_sim")))],
    ]
    panels = [
        ("balance loss", {"balance loss": _series(records, "balance_loss")}, None),
        ("hidden z-loss", {"z-loss": _series(records, "z_loss")}, None),
        ("gradient norm ratio R_g", {"R_g": ratio}, GRAD_RATIO_LIMIT),
        (
            "router cosine similarity",
            {
                "mean": _series(records, "router_cosine_sim"),
                **_per_layer(records, "router_cosine_sim_per_layer"),
            },
            None,
        ),
        ("expert load spread (max / mean)", _per_layer(records, "load_max_over_mean"), None),
        ("FFN experts per token", _per_layer(records, "ffn_experts_per_token"), None),
        ("zero-expert share", _per_layer(records, "zero_expert_share"), None),
        ("gradient norm", {"grad norm": _series(records, "grad_norm")}, None),
    ]
    panels = [p for p in panels if p[1] and any(np.isfinite(v).any() for v in p[1].values())]
    note = f"{len(records)} steps; dashed lines mark where a phase starts."
    return "\n".join(
        [
            para(note),
            table("training", ["metric", "value"], rows),
            figure(plots.losses(x, lm, losses, marks), "Loss and loss per domain against tokens"),
            figure(
                plots.stability(x, panels, marks),
                "Balance loss, z-loss, gradient norm ratio, router similarity, expert load",
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
    return "\n".join(
        [
            para(
                f"Mean number of FFN (non-zero) experts per token, {source}, over "
                f"{len(data.metrics)} steps: the LongCat-Flash appendix analysis, by our domain "
                "tags. Fewer FFN experts means more tokens went to zero-computation experts."
            ),
            figure(
                plots.heatmap(matrix, domains, layers),
                "FFN experts per token by data domain and layer",
            ),
            table("experts", ["domain", *[f"layer {layer}" for layer in layers]], rows),
            f"<p>{html.escape('Layers are counted from the input (0).')}</p>",
        ]
    )
