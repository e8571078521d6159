"""The verdicts at the top of the report: does the accounting hold, where did most
documents go, and which training or packing number is outside its recommended range.

Why a box of sentences and not another table: a reader opening the page wants to know
in ten seconds whether something is wrong and where to look; every verdict names its
number and its limit, and links to the section with the detail.

The limits (LongCat-Flash, arXiv:2509.01322): the balance loss's gradient norm stays
below 0.1 of the LM loss's after warm-up (R_g); the mean number of FFN experts per token
stays at its target K_e (here: within 5%); packing wastes under 0.1% of the tokens on
padding.
"""

from __future__ import annotations

import html
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from report.data import Funnel, RunData
from report.rejects import NO_LANGUAGE, NOT_RECORDED, sorted_groups

GRAD_RATIO_LIMIT = 0.1
EXPERT_TARGET_TOLERANCE = 0.05
PADDING_LIMIT = 0.001
EATEN_SHARE, EATEN_MIN_DOCUMENTS = 0.5, 5
NOT_SELECTED = (
    "langid",
    "language_not_selected",
)  # a language losing more than half of >= 5 documents


@dataclass(frozen=True)
class Verdict:
    level: str  # "ok", "bad" (out of range), "info" (worth a look, or not measurable)
    text: str
    section: str  # the section id with the detail


def warmup_end(records: list[dict[str, Any]]) -> int:
    """Index of the first record at the peak learning rate: the steps before it are
    the warm-up (the trainer's schedule rises linearly to its peak). 0 without ``lr``."""
    lr = np.array([np.nan if r.get("lr") is None else float(r["lr"]) for r in records])
    if not np.isfinite(lr).any():
        return 0
    return int(np.nanargmax(lr))


def grad_ratio_verdict(records: list[dict[str, Any]]) -> Verdict | None:
    start = warmup_end(records)
    measured = [
        (r.get("step", i + 1), float(r["grad_norm_ratio"]))
        for i, r in enumerate(records[start:], start)
        if r.get("grad_norm_ratio") is not None
    ]
    if not measured:
        return None
    step, worst = max(measured, key=lambda item: item[1])
    over = sum(value > GRAD_RATIO_LIMIT for _, value in measured)
    where = f"after warm-up (from step {records[start].get('step', start + 1)})"
    if over:
        return Verdict(
            "bad",
            f"R_g (balance-loss / LM-loss gradient norm) above "
            f"{GRAD_RATIO_LIMIT:g} {where} at {over} of {len(measured)} measured steps; "
            f"max {worst:.3g} at step {step}.",
            "training",
        )
    return Verdict(
        "ok", f"R_g stays at or below {GRAD_RATIO_LIMIT:g} {where} (max {worst:.3g}).", "training"
    )


def expert_target_verdict(records: list[dict[str, Any]], target: float | None) -> Verdict | None:
    """Mean FFN experts per token per layer after warm-up, against K_e."""
    start = warmup_end(records)
    per_step = [r.get("ffn_experts_per_token") for r in records[start:]]
    per_step = [v if isinstance(v, list) else [v] for v in per_step if v is not None]
    if not per_step:
        return None
    width = max(len(v) for v in per_step)
    means = [
        np.nanmean([float(v[i]) for v in per_step if len(v) > i and v[i] is not None])
        for i in range(width)
    ]
    shown = ", ".join(f"layer {i} {m:.2f}" for i, m in enumerate(means))
    if target is None:
        return Verdict(
            "info",
            f"FFN experts per token after warm-up: {shown}; the target K_e "
            "is not recorded (no train/ckpt.pt model_config).",
            "training",
        )
    off = [
        (i, m) for i, m in enumerate(means) if abs(m - target) > EXPERT_TARGET_TOLERANCE * target
    ]
    if off:
        worst = max(off, key=lambda item: abs(item[1] - target))
        return Verdict(
            "bad",
            f"The router did not hold K_e = {target:g}: mean FFN experts per "
            f"token after warm-up is off by more than {EXPERT_TARGET_TOLERANCE:.0%} in "
            f"{len(off)} of {width} layers (worst: layer {worst[0]} at {worst[1]:.2f}, "
            f"{(worst[1] - target) / target:+.0%}); {shown}.",
            "training",
        )
    return Verdict(
        "ok",
        f"The router held K_e = {target:g} within "
        f"{EXPERT_TARGET_TOLERANCE:.0%} after warm-up: {shown}.",
        "training",
    )


def padding_verdicts(data: RunData) -> list[Verdict]:
    over = [
        (p.manifest.phase, p.manifest.padding_fraction)
        for p in data.phases
        if p.manifest.padding_fraction > PADDING_LIMIT
    ]
    if not data.phases:
        return []
    if not over:
        return [
            Verdict("ok", f"Padding at or below {PADDING_LIMIT:.1%} in every phase.", "packing")
        ]
    shown = ", ".join(f"{phase} {share:.2%}" for phase, share in over)
    return [
        Verdict(
            "bad",
            f"Padding above {PADDING_LIMIT:.1%} of the tokens in {len(over)} of "
            f"{len(data.phases)} phases: {shown}.",
            "packing",
        )
    ]


def funnel_verdicts(data: RunData, holds: bool | None, totals: tuple[int, int] | None) -> list:
    funnel = data.funnel
    if funnel is None or holds is None or totals is None:
        return [Verdict("info", "No ledger: the curation did not run here.", "funnel")]
    verdicts = [
        Verdict(
            "ok" if holds else "bad",
            f"Accounting identity {'holds' if holds else 'DOES NOT HOLD'}: input "
            f"{totals[0]:,} = kept + rejected + errors = {totals[1]:,}.",
            "funnel",
        )
    ]
    stages = funnel.ledger["stages"]
    run_input = stages[funnel.order[0]]["input"] or 1
    reasons = sorted(
        (
            (n, stage, reason)
            for stage in funnel.order
            for kind in ("rejected", "errors")
            for reason, n in stages[stage][kind].items()
        ),
        reverse=True,
    )[:3]
    if reasons:
        shown = "; ".join(
            f"{stage}: {reason} {n:,} ({n / run_input:.1%})" for n, stage, reason in reasons
        )
        kept = stages[funnel.order[-1]]["kept"]
        verdicts.append(
            Verdict(
                "info",
                f"Kept {kept:,} of {run_input:,} documents "
                f"({kept / run_input:.1%}). Largest drops: {shown}.",
                "funnel",
            )
        )
    verdicts.extend(_eaten_languages(data))
    return verdicts


def _eaten_languages(data: RunData) -> list[Verdict]:
    """Languages that lose most of their documents to quality rules. A language the
    config did not select (langid's ``language_not_selected``) is not being eaten: it
    was not asked for, so those rejects are left out of its share."""
    drill = data.drilldown
    if drill is None:
        return []
    eaten = []
    for language, group in sorted_groups(drill.groups["language"]):
        judged = Counter({key: n for key, n in group.reasons.items() if key != NOT_SELECTED})
        total = group.kept + sum(judged.values())
        if language in (NO_LANGUAGE, NOT_RECORDED) or total < EATEN_MIN_DOCUMENTS:
            continue
        if sum(judged.values()) / total > EATEN_SHARE:
            (_, reason), n = judged.most_common(1)[0]
            eaten.append(f"{language} ({sum(judged.values())} of {total}, most by {reason}: {n})")
    if not eaten:
        return []
    return [
        Verdict(
            "bad",
            "More than half of the documents rejected in language(s): " + "; ".join(eaten) + ".",
            "breakdown",
        )
    ]


def verdict_box(verdicts: list[Verdict]) -> str:
    items = "".join(
        f'<li class="{v.level}" data-verdict="{v.level}">{html.escape(v.text)} '
        f'<a href="#{v.section}">details</a></li>'
        for v in verdicts
    )
    bad = sum(v.level == "bad" for v in verdicts)
    head = f"{bad} problem{'s' if bad != 1 else ''} found" if bad else "No problem found"
    return f'<div class="verdicts" data-bad="{bad}"><strong>{head}</strong><ul>{items}</ul></div>'


def identity_checks(funnel: Funnel) -> list[tuple[str, int, int]]:
    """The accounting identity, recomputed from the per-stage counts: (check, left, right)."""
    ledger, order = funnel.ledger, funnel.order
    stages = ledger["stages"]
    checks = []
    for name in order:
        entry = stages[name]
        dropped = sum(entry["rejected"].values()) + sum(entry["errors"].values())
        checks.append(
            (f"{name}: input = kept + rejected + errors", entry["input"], entry["kept"] + dropped)
        )
    for a, b in itertools.pairwise(order):
        checks.append((f"{a} kept = {b} input", stages[a]["kept"], stages[b]["input"]))
    rejected = sum(sum(stages[s]["rejected"].values()) for s in order)
    errors = sum(sum(stages[s]["errors"].values()) for s in order)
    first, kept = stages[order[0]]["input"], stages[order[-1]]["kept"]
    checks.append(("run: input = kept + rejected + errors", first, kept + rejected + errors))
    if "documents_written" in ledger:
        checks.append(("kept = documents written", kept, ledger["documents_written"]))
    totals = ledger.get("totals", {})
    for key, value in (
        ("input", first),
        ("kept", kept),
        ("rejected", rejected),
        ("errors", errors),
    ):
        if key in totals:
            checks.append((f"ledger totals.{key} = recomputed", totals[key], value))
    return checks


def verdicts(data: RunData) -> list[Verdict]:
    """The box at the top: accounting, largest drops, eaten languages, training, packing."""
    holds = totals = None
    if data.funnel is not None and data.funnel.order:
        checks = identity_checks(data.funnel)
        holds = all(left == right for _, left, right in checks)
        run = next(check for check in checks if check[0].startswith("run:"))
        totals = (run[1], run[2])
    found = funnel_verdicts(data, holds, totals)
    logged = (r["target_ffn_experts"] for r in data.metrics if "target_ffn_experts" in r)
    target = next(logged, (data.model_config or {}).get("target_ffn_experts"))
    for verdict in (grad_ratio_verdict(data.metrics), expert_target_verdict(data.metrics, target)):
        if verdict is not None:
            found.append(verdict)
    found.extend(padding_verdicts(data))
    return found
