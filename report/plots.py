"""The report's figures: matplotlib on the Agg canvas, returned as PNG data URIs.

Why ``Figure`` + ``FigureCanvasAgg`` and not ``pyplot``: no global figure state and no
GUI backend is ever looked up, so the report renders the same in a job on a headless
node as on a laptop, and figures are freed as soon as they are encoded. Why PNG
data URIs: the page stays one self-contained file that opens anywhere, offline.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator, NullFormatter

# Fixed colours for the pipeline's domains, so a domain looks the same in every plot.
DOMAIN_COLOURS = {"web": "#4C78A8", "stem": "#F58518", "code": "#54A24B", "books": "#B279A2"}
OTHER_COLOURS = ("#E45756", "#72B7B2", "#EECA3B", "#9D755D", "#BAB0AC", "#FF9DA6")
PAD_COLOUR = "#D9D9D9"
KEPT_COLOUR, DROPPED_COLOUR, THRESHOLD_COLOUR = "#4C78A8", "#E45756", "#222222"
DPI = 100


def stage_colours(stages: Sequence[str]) -> dict[str, str]:
    """One distinct colour per stage (matplotlib's 20 tab20 colours, darker shades
    first), so no two stages of a funnel share a colour."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    order = [*palette[0::2], *palette[1::2]]
    return {s: _hex(order[i % len(order)]) for i, s in enumerate(stages)}


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(c * 255):02X}" for c in rgb[:3])


def integer_counts(axis) -> None:
    """Counts are whole documents: no 2.5 tick on a count axis."""
    axis.set_major_locator(MaxNLocator(integer=True))


def domain_colour(name: str, known: Sequence[str] = ()) -> str:
    if name in DOMAIN_COLOURS:
        return DOMAIN_COLOURS[name]
    others = [d for d in sorted(known) if d not in DOMAIN_COLOURS]
    index = others.index(name) if name in others else sum(name.encode())
    return OTHER_COLOURS[index % len(OTHER_COLOURS)]


def new_figure(width: float, height: float, rows: int = 1, cols: int = 1):
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes.ravel()


def to_data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def funnel(stages: list[str], inputs: list[int], kept: list[int]) -> str:
    """Documents into and out of every stage, first stage at the top."""
    fig, (ax,) = new_figure(9, 0.32 * len(stages) + 1.0)
    y = np.arange(len(stages))[::-1]
    ax.barh(y + 0.2, inputs, height=0.4, color="#BBCCEE", label="input")
    ax.barh(y - 0.2, kept, height=0.4, color="#4C78A8", label="kept")
    for yy, value in zip(y - 0.2, kept, strict=True):
        ax.annotate(
            f"{value:,}",
            (value, yy),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(y, stages)
    ax.set_xlabel("documents")
    integer_counts(ax.xaxis)
    ax.legend(loc="lower right")
    return to_data_uri(fig)


def reasons(rows: list[tuple[str, str, int, bool]]) -> str:
    """Rejected (solid) and failed (hatched) documents per reason, coloured by stage."""
    fig, (ax,) = new_figure(9, 0.24 * len(rows) + 1.1)
    stages = list(dict.fromkeys(stage for stage, *_ in rows))
    colours = stage_colours(stages)
    y = np.arange(len(rows))[::-1]
    for yy, (stage, _, n, error) in zip(y, rows, strict=True):
        ax.barh(yy, n, color=colours[stage], hatch="//" if error else None, edgecolor="white")
    ax.set_yticks(y, [f"{stage}: {reason}" for stage, reason, *_ in rows], fontsize=8)
    ax.set_xlabel("documents")
    integer_counts(ax.xaxis)
    ax.legend(handles=[Patch(color=colours[s], label=s) for s in stages], fontsize=8)
    return to_data_uri(fig)


def counts_bars(panels: list[tuple[str, dict[str, float], str]]) -> str:
    """One bar chart per (title, {label: value}, unit) panel, side by side."""
    fig, axes = new_figure(4.2 * len(panels), 3.2, 1, len(panels))
    for ax, (title, values, unit) in zip(axes, panels, strict=True):
        labels = list(values)
        colours = [domain_colour(x, labels) if x in DOMAIN_COLOURS else "#4C78A8" for x in labels]
        ax.bar(range(len(labels)), list(values.values()), color=colours)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        integer_counts(ax.yaxis)
    return to_data_uri(fig)


def histograms(panels: list[tuple[str, np.ndarray, str, bool]]) -> str:
    """One histogram per (title, values, x label, log x) panel."""
    fig, axes = new_figure(4.2 * len(panels), 3.2, 1, len(panels))
    for ax, (title, values, xlabel, log_x) in zip(axes, panels, strict=True):
        if log_x and values.min() > 0:
            bins = np.geomspace(values.min(), max(values.max(), values.min() * 1.01), 30)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide
        else:
            bins = 30
        ax.hist(values, bins=bins, color="#4C78A8", edgecolor="white")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("documents")
        integer_counts(ax.yaxis)
    return to_data_uri(fig)


def labelled_bars(counts: dict[str, int], xlabel: str, ylabel: str) -> str:
    """Counts per ordered label (bins such as "9-16" included), one bar each."""
    fig, (ax,) = new_figure(5, 2.6)
    ax.bar(range(len(counts)), list(counts.values()), color="#4C78A8")
    ax.set_xticks(range(len(counts)), list(counts))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    integer_counts(ax.yaxis)
    return to_data_uri(fig)


def mix_shares(phases: list[tuple[str, list[str], list[float], list[float]]]) -> str:
    """Every phase as one bar stacked by realised component share (the curriculum at a
    glance), and realised minus declared share per component in percentage points: five
    phases of near-identical declared/realised bar pairs told the reader nothing."""
    names = list(dict.fromkeys(n for _, components, *_ in phases for n in components))
    fig, (shape, error) = new_figure(11, 0.45 * len(phases) + 1.6, 1, 2)
    y = np.arange(len(phases))[::-1]
    left = np.zeros(len(phases))
    for name in names:
        shares = np.array([realised[components.index(name)] if name in components else 0.0
                           for _, components, _, realised in phases])  # fmt: skip
        shape.barh(y, shares, left=left, color=domain_colour(name, names), label=name)
        for yy, x0, w in zip(y, left, shares, strict=True):
            if w >= 0.06:
                shape.text(x0 + w / 2, yy, f"{w:.0%}", ha="center", va="center", fontsize=7,
                           color="white")  # fmt: skip
        left += shares
    shape.set_yticks(y, [phase for phase, *_ in phases], fontsize=8)
    shape.set_xlim(0, 1)
    shape.set_xlabel("realised token share")
    shape.legend(fontsize=7, ncol=min(len(names), 5), loc="upper center",
                 bbox_to_anchor=(0.5, -0.25 if len(phases) > 2 else -0.45))  # fmt: skip
    for i, name in enumerate(names):
        points = [
            (yy, 100 * (realised[c.index(name)] - declared[c.index(name)]))
            for yy, (_, c, declared, realised) in zip(y, phases, strict=True)
            if name in c
        ]
        offset = (i - (len(names) - 1) / 2) * 0.08
        error.scatter([p for _, p in points], [yy + offset for yy, _ in points], s=18,
                      color=domain_colour(name, names), label=name)  # fmt: skip
    error.axvline(0, color="black", linewidth=0.8)
    error.set_yticks(y, [phase for phase, *_ in phases], fontsize=8)
    error.set_xlabel("realised − declared (percentage points)")
    return to_data_uri(fig)


def phase_totals(phases: list[str], tokens: list[int], epochs: dict[str, list[float]]) -> str:
    """Tokens per phase, and the epochs each component used in each phase."""
    fig, (left, right) = new_figure(10, 3.4, 1, 2)
    left.bar(phases, tokens, color="#4C78A8")
    left.set_ylabel("tokens (padding excluded)")
    left.tick_params(axis="x", labelrotation=30, labelsize=8)
    left.set_title("tokens per phase", fontsize=10)
    width = 0.8 / max(len(phases), 1)
    names = list(epochs)
    x = np.arange(len(names))
    for i, phase in enumerate(phases):
        values = [epochs[n][i] for n in names]
        right.bar(x + (i - (len(phases) - 1) / 2) * width, values, width=width, label=phase)
    right.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    right.set_ylabel("epochs over the selection")
    right.set_title("epochs per component", fontsize=10)
    right.legend(fontsize=8)
    return to_data_uri(fig)


def packing(segments: np.ndarray, example: dict | None, seq_len: int, domains: list[str]) -> str:
    """Segments per sequence (histogram) and one sequence drawn as its segments."""
    fig, (hist, row) = new_figure(10, 2.8, 1, 2)
    if segments.size:
        edges = np.arange(segments.min(), segments.max() + 2) - 0.5
        hist.hist(segments, bins=edges, color="#4C78A8", edgecolor="white")
    hist.set_xlabel("segments (documents or pieces) per sequence")
    hist.set_ylabel("sequences")
    integer_counts(hist.xaxis)
    integer_counts(hist.yaxis)
    if example:
        bounds = example["cu_seqlens"]
        for i, domain in enumerate(example["domains"]):
            start, end = bounds[i], bounds[i + 1]
            row.add_patch(
                Rectangle(
                    (start, 0),
                    end - start,
                    1,
                    facecolor=domain_colour(domain, domains),
                    edgecolor="black",
                    linewidth=0.6,
                )
            )
        row.add_patch(
            Rectangle(
                (bounds[-1], 0),
                seq_len - bounds[-1],
                1,
                facecolor=PAD_COLOUR,
                hatch="//",
                edgecolor="grey",
                linewidth=0.6,
            )
        )
        shown = sorted(set(example["domains"]))
        handles = [Patch(color=domain_colour(d, domains), label=d) for d in shown]
        row.legend(
            handles=[*handles, Patch(color=PAD_COLOUR, label="padding")],
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.35),
            ncol=len(handles) + 1,
        )
    row.set_xlim(0, seq_len)
    row.set_ylim(0, 1)
    row.set_yticks([])
    row.set_xlabel("token position")
    count = len(example["domains"]) if example else 0
    row.set_title(f"example sequence: {count} segment{'' if count == 1 else 's'}", fontsize=10)
    return to_data_uri(fig)


def kept_rejected_bars(panels: list[tuple[str, list[tuple[str, int, int]]]]) -> str:
    """Per (title, [(label, kept, rejected)]) panel: one stacked horizontal bar per label,
    kept then rejected, so a group being eaten shows as a mostly red bar."""
    tallest = max(len(rows) for _, rows in panels)
    fig, axes = new_figure(4.2 * len(panels), 0.28 * tallest + 1.4, 1, len(panels))
    for ax, (title, rows) in zip(axes, panels, strict=True):
        y = np.arange(len(rows))[::-1]
        kept = np.array([k for _, k, _ in rows])
        rejected = np.array([r for _, _, r in rows])
        ax.barh(y, kept, color=KEPT_COLOUR, label="kept")
        ax.barh(y, rejected, left=kept, color=DROPPED_COLOUR, label="rejected")
        ax.set_yticks(y, [label for label, *_ in rows], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("documents")
        integer_counts(ax.xaxis)
        ax.legend(fontsize=7, loc="lower right")
    return to_data_uri(fig)


def score_distributions(
    panels: list[tuple[str, np.ndarray | None, np.ndarray, float, str]],
) -> str:
    """Per (title, kept scores or None, dropped scores, threshold, x label) panel: both
    sides stacked on shared bins, the threshold drawn; "not recorded" where kept is None."""
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = new_figure(3.6 * cols, 2.7 * rows, rows, cols)
    for ax, (title, kept, dropped, threshold, xlabel) in zip(axes, panels, strict=False):
        sides = [("kept", kept, KEPT_COLOUR), ("dropped", dropped, DROPPED_COLOUR)]
        drawn = [(name, v, c) for name, v, c in sides if v is not None and v.size]
        values = np.concatenate([v for _, v, _ in drawn]) if drawn else np.array([threshold])
        low, high = min(values.min(), threshold), max(values.max(), threshold)
        span = high - low or max(abs(high), 1.0)
        bins = np.linspace(low - 0.02 * span, high + 0.02 * span, 31)
        if drawn:
            ax.hist([v for _, v, _ in drawn], bins=bins, stacked=True,
                    color=[c for *_, c in drawn], label=[n for n, *_ in drawn])  # fmt: skip
        ax.axvline(threshold, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.2,
                   label=f"threshold {threshold:g}")  # fmt: skip
        ax.set_title(title + ("\n(kept documents: not recorded)" if kept is None else ""),
                     fontsize=9)  # fmt: skip
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("documents", fontsize=8)
        integer_counts(ax.yaxis)
        ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return to_data_uri(fig)


RUN_COLOURS = ("#4C78A8", "#F58518")  # run A, run B of a comparison


def grouped_bars(panels: list[tuple[str, list[str], dict[str, list[float]]]]) -> str:
    """Per (title, labels, {run: values}) panel: the runs' bars side by side per label."""
    fig, axes = new_figure(10, 2.8 * len(panels) + 0.4, len(panels), 1)
    for ax, (title, labels, runs) in zip(axes, panels, strict=True):
        x = np.arange(len(labels))
        width = 0.8 / max(len(runs), 1)
        for i, (run, values) in enumerate(runs.items()):
            offset = (i - (len(runs) - 1) / 2) * width
            ax.bar(x + offset, values, width=width, color=RUN_COLOURS[i % 2], label=run)
        ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    return to_data_uri(fig)
