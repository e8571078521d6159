"""``python -m pipeline report RUN_A --compare RUN_B``: two runs on one page.

Why: a user tuning a filter changes one threshold and reruns; the question is then
"what did that change?" — which stage keeps more, which language gained, did the mix
shift, does the loss curve move. Each part draws both runs on the same axes and puts
their numbers in adjacent columns with the difference, from the same files the single
report reads (``data.load_run``), so the numbers match each run's own report.
"""

from __future__ import annotations

import numpy as np

from report import plots
from report import training_plots as training_plots
from report.data import RunData
from report.markup import Num, figure, missing, note, page, table
from report.rejects import sorted_groups, top_reasons
from report.training import _series, expert_target, tokens_axis
from report.verdict import GRAD_RATIO_LIMIT, verdict_box, verdicts


def _names(a: RunData, b: RunData) -> tuple[str, str]:
    """Short labels for the two runs (their folder names, made distinct)."""
    first, second = a.run_dir.name, b.run_dir.name
    if first == second:
        first, second = str(a.run_dir), str(b.run_dir)
    return f"A: {first}", f"B: {second}"


def funnel_compare(a: RunData, b: RunData, names: tuple[str, str]) -> str:
    if a.funnel is None or b.funnel is None:
        return missing("A comparison of funnels needs a curated/ledger.json in both runs.")
    sa, sb = a.funnel.ledger["stages"], b.funnel.ledger["stages"]
    order = list(dict.fromkeys([*a.funnel.order, *b.funnel.order]))

    def kept(stages: dict, name: str) -> int | None:
        return stages[name]["kept"] if name in stages else None

    rows = [
        [s, Num(sa.get(s, {}).get("input")), Num(kept(sa, s)), Num(sb.get(s, {}).get("input")),
         Num(kept(sb, s)),
         Num(None if kept(sa, s) is None or kept(sb, s) is None else kept(sb, s) - kept(sa, s))]
        for s in order
    ]  # fmt: skip
    reasons = sorted(
        {(s, r) for stages in (sa, sb) for s, e in stages.items()
         for kind in ("rejected", "errors") for r in e.get(kind, {})},
        key=lambda key: (order.index(key[0]) if key[0] in order else len(order), key[1]),
    )  # fmt: skip

    def count(stages: dict, stage: str, reason: str) -> int:
        entry = stages.get(stage, {})
        return entry.get("rejected", {}).get(reason, 0) + entry.get("errors", {}).get(reason, 0)

    reason_rows = [
        [s, r, Num(count(sa, s, r)), Num(count(sb, s, r)), Num(count(sb, s, r) - count(sa, s, r))]
        for s, r in reasons
    ]
    bars = plots.grouped_bars(
        [("documents kept after each stage", order,
          {names[0]: [kept(sa, s) or 0 for s in order],
           names[1]: [kept(sb, s) or 0 for s in order]})]
    )  # fmt: skip
    a_head, b_head = (n.split(":")[0] for n in names)
    return "\n".join(
        [
            figure(bars, "Documents kept after each stage, both runs"),
            table("compare-funnel",
                  ["stage", f"{a_head} input", f"{a_head} kept", f"{b_head} input",
                   f"{b_head} kept", "kept, B − A"], rows),
            table("compare-reasons", ["stage", "reason", a_head, b_head, "B − A"], reason_rows),
        ]
    )  # fmt: skip


def languages_compare(a: RunData, b: RunData, names: tuple[str, str]) -> str:
    if a.drilldown is None or b.drilldown is None:
        return missing("A comparison per language needs curated documents in both runs.")
    ga, gb = a.drilldown.groups["language"], b.drilldown.groups["language"]
    merged = {**{k: None for k, _ in sorted_groups(ga)}, **{k: None for k, _ in sorted_groups(gb)}}
    rows = []
    for language in merged:
        left, right = ga.get(language), gb.get(language)
        rows.append([
            language, Num(left.kept if left else 0), Num(left.rejected if left else 0),
            Num(right.kept if right else 0), Num(right.rejected if right else 0),
            Num((right.kept if right else 0) - (left.kept if left else 0)),
            top_reasons(right) if right else "–",
        ])  # fmt: skip
    a_head, b_head = (n.split(":")[0] for n in names)
    headers = ["language", f"{a_head} kept", f"{a_head} rejected", f"{b_head} kept",
               f"{b_head} rejected", "kept, B − A", f"{b_head} top reasons"]  # fmt: skip
    return table("compare-languages", headers, rows)


def mix_compare(a: RunData, b: RunData, names: tuple[str, str]) -> str:
    pa_, pb = (
        {p.manifest.phase: p.manifest for p in a.phases},
        {p.manifest.phase: p.manifest for p in b.phases},
    )
    phases = [p for p in dict.fromkeys([*pa_, *pb])]
    if not phases:
        return missing("Neither run has packed phases.")
    panels, rows = [], []
    for phase in phases:
        left = {c.name: c for c in pa_[phase].components} if phase in pa_ else {}
        right = {c.name: c for c in pb[phase].components} if phase in pb else {}
        components = list(dict.fromkeys([*left, *right]))
        shares = {
            names[0]: [left[c].realised_share if c in left else 0.0 for c in components],
            names[1]: [right[c].realised_share if c in right else 0.0 for c in components],
        }
        panels.append((f"phase {phase}: realised token share", components, shares))
        for c in components:
            rows.append([
                phase, c, Num(left[c].realised_share if c in left else None),
                Num(right[c].realised_share if c in right else None),
                Num(left[c].tokens if c in left else None),
                Num(right[c].tokens if c in right else None),
            ])  # fmt: skip
    a_head, b_head = (n.split(":")[0] for n in names)
    headers = ["phase", "component", f"{a_head} share", f"{b_head} share", f"{a_head} tokens",
               f"{b_head} tokens"]  # fmt: skip
    return "\n".join(
        [
            figure(plots.grouped_bars(panels), "Realised token share per component, both runs"),
            table("compare-mix", headers, rows),
        ]
    )


COMPARED_CURVES = (
    ("lm loss", "lm_loss", None),
    ("gradient norm ratio R_g", "grad_norm_ratio", (GRAD_RATIO_LIMIT, "limit 0.1", True)),
    ("balance loss", "balance_loss", None),
    ("router cosine similarity", "router_cosine_sim", None),
)


def _mean_ffn_experts(records: list[dict]) -> np.ndarray:
    """Per step, the mean over layers (older logs hold one number, not a list)."""
    means = []
    for record in records:
        value = record.get("ffn_experts_per_token")
        values = [v for v in (value if isinstance(value, list) else [value]) if v is not None]
        means.append(float(np.mean(values)) if values else np.nan)
    return np.array(means)


def training_compare(a: RunData, b: RunData, names: tuple[str, str]) -> str:
    if not a.metrics or not b.metrics:
        return missing("A comparison of training needs train/metrics.jsonl in both runs.")
    axes = {names[0]: tokens_axis(a.metrics)[0], names[1]: tokens_axis(b.metrics)[0]}
    panels = []
    for title, key, limit in COMPARED_CURVES:
        series = {
            names[0]: (axes[names[0]], _series(a.metrics, key)),
            names[1]: (axes[names[1]], _series(b.metrics, key)),
        }
        if any(np.isfinite(y).any() for _, y in series.values()):
            panels.append((title, series, limit))
    ffn = {run: (axes[run], _mean_ffn_experts(data.metrics))
           for run, data in zip(names, (a, b), strict=True)}  # fmt: skip
    targets = {expert_target(a), expert_target(b)}
    target = targets.pop() if len(targets) == 1 else None  # one line only if both agree
    reference = None if target is None else (target, f"K_e {target:g}", False)
    if any(np.isfinite(y).any() for _, y in ffn.values()):
        panels.append(("FFN experts per token, mean over layers", ffn, reference))
    return figure(
        training_plots.compare_curves(panels),
        "Training curves of both runs against tokens seen (smoothed; raw faint)",
    )


def render_compare(a: RunData, b: RunData) -> str:
    names = _names(a, b)
    lead = "".join(f"<h3>{run}</h3>{verdict_box(verdicts(data))}"
                   for run, data in zip(names, (a, b), strict=True))  # fmt: skip
    sections = [
        ("compare-funnel", "1. Funnel, both runs", funnel_compare(a, b, names)),
        ("compare-languages", "2. Kept and rejected per language, both runs",
         languages_compare(a, b, names)),
        ("compare-mix", "3. Mix, both runs", mix_compare(a, b, names)),
        ("compare-training", "4. Training, both runs", training_compare(a, b, names)),
    ]  # fmt: skip
    subtitle = f"{names[0]} ({a.run_dir}) against {names[1]} ({b.run_dir})"
    sections[0] = (sections[0][0], sections[0][1],
                   note("Differences are B − A.") + sections[0][2])  # fmt: skip
    return page(f"Run comparison: {a.run_dir.name} vs {b.run_dir.name}", subtitle, sections, lead)
