"""The training figures: curves against tokens seen, and the expert heatmap.

Why smoothing with the raw curve left faint: per-step losses of a small batch jump by
more than the trend a reader looks for, but hiding the raw values would hide a spike,
so both are drawn (W&B's and TensorBoard's convention). The smoothing is a centred,
gap-aware moving mean: a step that did not measure a value (``null`` in the log) is
left out of its neighbours' means instead of counting as zero.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes

from report.plots import domain_colour, new_figure, to_data_uri

RAW_ALPHA = 0.25
LABEL_STEP_POINTS = 11  # how far a phase label moves down to clear the one before it


def smoothing_window(points: int) -> int:
    """About 1/20 of the run, at least 3 points, and none for a run too short to smooth."""
    return 1 if points < 10 else max(3, points // 20) | 1  # odd: centred


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean over the finite values only; NaN where none is in reach."""
    if window <= 1:
        return values.astype(float)
    finite = np.isfinite(values)
    kernel = np.ones(window)
    total = np.convolve(np.where(finite, values, 0.0), kernel, mode="same")
    count = np.convolve(finite.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _curve(ax: Axes, x: np.ndarray, values: np.ndarray, colour, label: str, width=1.4) -> None:
    """The raw series faint, its smoothed line solid, one legend entry."""
    window = smoothing_window(int(np.isfinite(values).sum()))
    gappy = np.isnan(values).any()
    if window > 1:
        ax.plot(x, values, color=colour, alpha=RAW_ALPHA, linewidth=0.8,
                marker="." if gappy else None, markersize=3)  # fmt: skip
        shown = smooth(values, window)
    else:
        shown = values
    ax.plot(x, shown, color=colour, linewidth=width, label=label,
            marker="." if gappy and window == 1 else None)  # fmt: skip


def phase_lines(ax: Axes, boundaries: list[tuple[float, str]], label: bool) -> None:
    """A dashed line where each phase starts; labels moved down until none overlaps."""
    for x, _ in boundaries:
        ax.axvline(x, color="black", linestyle="--", linewidth=0.8, alpha=0.6)
    if not label:
        return
    ax.figure.canvas.draw()  # lay the figure out first: label extents are then final
    renderer = ax.figure.canvas.get_renderer()
    placed = []
    for x, name in boundaries:
        text = ax.annotate(name, (x, 1.0), xycoords=("data", "axes fraction"),
                           xytext=(3, -10), textcoords="offset points", fontsize=8,
                           backgroundcolor=(1, 1, 1, 0.7))  # fmt: skip
        for row in range(1, 12):
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            text.set_position((3, -10 - LABEL_STEP_POINTS * row))
        placed.append(text.get_window_extent(renderer))


def losses(x: np.ndarray, lm: np.ndarray, by_domain: dict[str, np.ndarray], boundaries) -> str:
    """LM loss and loss per domain against tokens seen (smoothed, raw faint)."""
    fig, (ax,) = new_figure(10, 3.8)
    _curve(ax, x, lm, "black", "lm loss (all)", width=1.8)
    for name, values in by_domain.items():
        if np.isfinite(values).any():  # a domain this run never measured is left out
            _curve(ax, x, values, domain_colour(name, list(by_domain)), name, width=1.1)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy")
    ax.legend(fontsize=8, ncol=min(len(by_domain) + 1, 6), loc="upper right")
    phase_lines(ax, boundaries, label=True)
    return to_data_uri(fig)


def stability(
    x: np.ndarray,
    panels: list[tuple[str, dict[str, np.ndarray], tuple[float, str, bool] | None]],
    boundaries,
) -> str:
    """A grid of (title, {series: values}, (reference, its label, log scale)) panels."""
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = new_figure(10, 2.7 * rows, rows, cols)
    colours = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#9D755D"]
    for ax, (title, series, reference) in zip(axes, panels, strict=False):
        many = len(series) > 1
        for i, (name, values) in enumerate(series.items()):
            _curve(ax, x, values, colours[i % len(colours)], name, width=1.0 if many else 1.4)
        if reference is not None:
            value, label, log = reference
            ax.axhline(value, color="red", linestyle=":", label=label)
            finite = np.concatenate([v[np.isfinite(v)] for v in series.values()])
            if log and finite.size and finite.min() > 0:
                ax.set_yscale("log")  # the limit stays readable next to values far above it
        phase_lines(ax, boundaries, label=False)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("tokens seen", fontsize=8)
        if many or reference is not None:
            ax.legend(fontsize=7, ncol=2)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return to_data_uri(fig)


def heatmap(matrix: np.ndarray, domains: list[str], layers: list[str]) -> tuple[str, str]:
    """Mean FFN experts per token, domains by layers, each cell annotated; also returns
    the colour scale's range in words (it spans the data, not zero to top-k)."""
    fig, (ax,) = new_figure(max(5, 1.0 * len(layers) + 3), 0.6 * len(domains) + 1.8)
    finite = matrix[np.isfinite(matrix)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(matrix, cmap="viridis", aspect="auto", vmin=low, vmax=high)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_yticks(range(len(domains)), domains)
    ax.set_xlabel("layer")
    ax.set_ylabel("data domain")
    middle = (low + high) / 2
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if value > middle else "white")  # fmt: skip
    scale = f"colour scale {low:.2f} to {high:.2f} (the data's range, not from 0)"
    ax.set_title(scale, fontsize=9)
    fig.colorbar(image, ax=ax, label="FFN experts per token")
    return to_data_uri(fig), scale


def compare_curves(
    panels: list[
        tuple[str, dict[str, tuple[np.ndarray, np.ndarray]], tuple[float, str, bool] | None]
    ],
) -> str:
    """Per (title, {run: (x, values)}, (reference, its label, log scale)) panel: both
    runs' curves on one axis."""
    from report.plots import RUN_COLOURS

    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = new_figure(10, 2.8 * rows, rows, cols)
    for ax, (title, runs, limit) in zip(axes, panels, strict=False):
        for i, (run, (x, values)) in enumerate(runs.items()):
            _curve(ax, x, values, RUN_COLOURS[i % 2], run)
        if limit is not None:
            value, label, log = limit
            ax.axhline(value, color="red", linestyle=":", label=label)
            if log:
                ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("tokens seen", fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return to_data_uri(fig)
