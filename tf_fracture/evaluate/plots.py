"""The report's figures: confusion matrix, ROC, precision-recall and calibration.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot (no global figure, no
interactive backend: safe in threads, on servers and in tests); ``save_figure`` writes it as PNG
with the Agg renderer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tf_fracture import metrics

THRESHOLD_LABELS = {
    "fixed": "threshold 0.5",
    "youden": "Youden (val)",
    "target_sensitivity": "target sensitivity (val)",
}
# Hollow markers of decreasing size, so that operating points that coincide stay visible inside each other.
_MARKERS = {"fixed": ("o", 12), "youden": ("s", 9), "target_sensitivity": ("^", 6)}
_DPI = 120


@dataclass(frozen=True)
class CurveSeries:
    """One curve to draw: its points, its summary (AUROC or AP with CI) and its operating points."""

    label: str
    curve: metrics.Curve
    summary: metrics.Estimate
    operating_points: Mapping[str, tuple[float, float, float]]  # name -> (x, y, threshold)


def format_estimate(estimate: metrics.Estimate, digits: int = 3) -> str:
    """``0.912 [0.871, 0.948]`` (or just the value without an interval)."""
    if estimate.value is None or not np.isfinite(estimate.value):
        return "n/a"
    text = f"{estimate.value:.{digits}f}"
    if estimate.ci_low is not None and estimate.ci_high is not None:
        text += f" [{estimate.ci_low:.{digits}f}, {estimate.ci_high:.{digits}f}]"
    return text


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = _DPI) -> None:
    """Writes ``figure`` as PNG with the Agg renderer."""
    FigureCanvasAgg(figure)
    figure.savefig(os.fspath(path), dpi=dpi, format="png")


def confusion_matrix_figure(
    confusion: metrics.ConfusionCounts,
    threshold: float,
    class_names: Sequence[str] = ("no fracture", "fracture"),
    title: str = "",
) -> Figure:
    """2x2 matrix (rows: true class, columns: predicted) with counts and the percentage of the true class."""
    matrix = confusion.matrix()
    row_totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, row_totals, out=np.zeros(matrix.shape), where=row_totals > 0)
    figure = Figure(figsize=(5.2, 4.6), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(2):
        for j in range(2):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(
                j, i, f"{matrix[i, j]}\n{100 * share[i, j]:.1f}%", ha="center", va="center", color=colour, fontsize=13
            )
    ax.set_xticks([0, 1], [f"{name}" for name in class_names])
    ax.set_yticks([0, 1], [f"{name}" for name in class_names], rotation=90, va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"Confusion matrix at threshold {threshold:.3f}", fontsize=11)
    colourbar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colourbar.set_label("share of the true class")
    return figure


def roc_figure(series: Sequence[CurveSeries], title: str = "ROC curve") -> Figure:
    """ROC curves (AUROC [95% CI] in the legend), the chance diagonal and the operating points."""
    figure = Figure(figsize=(5.6, 5.4), layout="constrained")
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance (AUROC 0.5)")
    _draw_curves(ax, series, "AUROC", drawstyle="default")  # straight segments: tied scores are diagonal
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    _finish(ax, title, loc="lower right")
    return figure


def precision_recall_figure(
    series: Sequence[CurveSeries], prevalence: float, title: str = "Precision-recall"
) -> Figure:
    """Precision-recall curves (AP [95% CI] in the legend) and the prevalence (chance) baseline."""
    figure = Figure(figsize=(5.6, 5.4), layout="constrained")
    ax = figure.add_subplot()
    ax.axhline(prevalence, linestyle="--", color="grey", linewidth=1, label=f"chance (prevalence {prevalence:.2f})")
    _draw_curves(ax, series, "AP", drawstyle="steps-post")  # average precision's step interpolation
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (positive predictive value)")
    _finish(ax, title, loc="lower left")
    return figure


def calibration_figure(
    labels: np.ndarray,
    scores: np.ndarray,
    table: metrics.CalibrationTable,
    class_names: Sequence[str] = ("no fracture", "fracture"),
    title: str = "Calibration",
) -> Figure:
    """Reliability diagram (observed positive fraction per bin against the mean predicted probability)
    over a histogram of the predicted probabilities per true class."""
    figure = Figure(figsize=(5.6, 6.4), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    filled = table.counts > 0
    top.plot(
        table.mean_predicted[filled],
        table.observed_fraction[filled],
        marker="o",
        color="C0",
        label=f"model (ECE {table.ece:.3f})",
    )
    top.set_ylabel("observed fraction of positives")
    top.set_xlim(0, 1)
    top.set_ylim(-0.02, 1.02)
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize=9)
    top.set_title(title, fontsize=11)
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    bottom.hist(
        [scores[labels == 0], scores[labels == 1]],
        bins=table.edges,
        stacked=True,
        color=["C2", "C3"],
        label=[f"true {class_names[0]}", f"true {class_names[1]}"],
    )
    bottom.set_ylim(0, max(1, int(table.counts.max())) * 1.45)  # room for the legend above the bars
    bottom.set_xlabel("predicted probability of the positive class")
    bottom.set_ylabel("count")
    bottom.legend(loc="upper center", fontsize=8, ncols=2)
    return figure


def _draw_curves(ax, series: Sequence[CurveSeries], summary_name: str, drawstyle: str) -> None:
    for k, s in enumerate(series):
        colour = f"C{k}"
        ax.plot(
            s.curve.x,
            s.curve.y,
            drawstyle=drawstyle,
            color=colour,
            linewidth=1.8,
            label=f"{s.label}: {summary_name} {format_estimate(s.summary)}",
        )
        for name, (x, y, threshold) in s.operating_points.items():
            ax.plot(
                x,
                y,
                linestyle="none",
                marker=_MARKERS.get(name, ("D", 6))[0],
                markersize=_MARKERS.get(name, ("D", 6))[1],
                markerfacecolor="none",
                markeredgecolor=colour,
                markeredgewidth=2,
                label=f"{s.label} {THRESHOLD_LABELS.get(name, name)} = {threshold:.3f}",
            )


def _finish(ax, title: str, loc: str) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.02)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=11)
    ax.legend(loc=loc, fontsize=8, framealpha=0.9)
