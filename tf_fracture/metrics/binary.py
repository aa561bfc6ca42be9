"""Binary classification metrics with the fracture / injury class (label 1) positive. NumPy only.

Conventions (the same in every function here):
- An item is predicted positive when ``score >= threshold`` (as scikit-learn's ``roc_curve``), so a
  probability of exactly 0.5 is positive at threshold 0.5.
- Equal scores are one step of every curve: items that share a score are always on the same side of
  any threshold, and AUROC counts a tied (positive, negative) pair as half a correct ordering
  (the Mann-Whitney statistic with mid-ranks). This equals scikit-learn's ``roc_auc_score``.
- Ratios whose denominator is zero are 0 (scikit-learn's ``zero_division=0``): precision with no
  predicted positive, recall with no positive label, specificity with no negative label, F1 with
  no true positive. Cohen's kappa is NaN when it is undefined (chance agreement of 1, i.e. labels and
  predictions all one class), as scikit-learn's default.
- AUROC, average precision and the curves need both classes and raise ``ValueError`` otherwise.

Everything is computed from per-score-level counts (:class:`ScoreLevels`), and the internal ``_*``
functions take a batch of such counts (rows), so that the bootstrap evaluates thousands of resamples
in one vectorised call with exactly the code of the point estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tf_fracture.metrics._checks import check_binary, check_both_classes, to_jsonable

THRESHOLD_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "kappa")
RANKING_METRICS = ("auroc", "average_precision", "brier")


@dataclass(frozen=True)
class ScoreLevels:
    """The distinct scores in descending order, with the number of positives and negatives at each."""

    values: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    level_of_item: np.ndarray  # for each item (input order), the index of its score in `values`


def score_levels(labels: np.ndarray, scores: np.ndarray) -> ScoreLevels:
    ascending, inverse = np.unique(scores, return_inverse=True)
    level = ascending.size - 1 - inverse.reshape(-1)
    positives = np.bincount(level, weights=labels, minlength=ascending.size)
    negatives = np.bincount(level, minlength=ascending.size) - positives
    return ScoreLevels(ascending[::-1].copy(), positives, negatives, level)


@dataclass(frozen=True)
class ConfusionCounts:
    """The confusion matrix at one threshold; ``matrix()`` is scikit-learn's ``[[tn, fp], [fn, tp]]``."""

    tn: int
    fp: int
    fn: int
    tp: int

    def matrix(self) -> np.ndarray:
        return np.array([[self.tn, self.fp], [self.fn, self.tp]], dtype=np.int64)

    def to_dict(self) -> dict[str, int]:
        return {"tn": self.tn, "fp": self.fp, "fn": self.fn, "tp": self.tp}


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, float), np.asarray(denominator, float))
    return np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator != 0)


def metrics_from_counts(tn: Any, fp: Any, fn: Any, tp: Any) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall (sensitivity), specificity, F1 and Cohen's kappa from counts.

    Works elementwise on arrays of counts (one entry per bootstrap resample). See the module
    docstring for the values where a ratio is undefined.
    """
    tn, fp, fn, tp = (np.asarray(c, dtype=float) for c in (tn, fp, fn, tp))
    n = tn + fp + fn + tp
    chance = (tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)  # n**2 times the chance agreement
    observed = tp + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(chance < n * n, (n * observed - chance) / (n * n - chance), np.nan)
    return {
        "accuracy": _divide(observed, n),
        "precision": _divide(tp, tp + fp),
        "recall": _divide(tp, tp + fn),
        "specificity": _divide(tn, tn + fp),
        "f1": _divide(2 * tp, 2 * tp + fp + fn),
        "kappa": kappa,
    }


def _counts_at(values: np.ndarray, pos: np.ndarray, neg: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    """(tn, fp, fn, tp) per row of level counts ``pos``/``neg`` (shape (rows, levels))."""
    above = int(np.count_nonzero(values >= threshold))  # values descend: the first `above` levels
    tp = pos[:, :above].sum(axis=1)
    fp = neg[:, :above].sum(axis=1)
    return neg.sum(axis=1) - fp, fp, pos.sum(axis=1) - tp, tp


def _ranking(values: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> dict[str, np.ndarray]:
    """AUROC, average precision and Brier score per row of level counts (rows need both classes)."""
    n_pos = pos.sum(axis=1)
    n_neg = neg.sum(axis=1)
    cum_pos = np.cumsum(pos, axis=1)
    cum_neg = np.cumsum(neg, axis=1)
    # Each positive beats the negatives at strictly lower levels and ties with those at its own.
    below = n_neg[:, None] - cum_neg
    auroc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
    # AP = sum over thresholds of (recall step) * precision; only levels holding positives step.
    precision = _divide(cum_pos, cum_pos + cum_neg)
    average_precision = (pos * precision).sum(axis=1) / n_pos
    brier = (pos * (1.0 - values) ** 2 + neg * values**2).sum(axis=1) / (n_pos + n_neg)
    return {"auroc": auroc, "average_precision": average_precision, "brier": brier}


def _single(levels: ScoreLevels) -> tuple[np.ndarray, np.ndarray]:
    return levels.positives[None, :], levels.negatives[None, :]


def confusion_counts(labels: Any, scores: Any, threshold: float) -> ConfusionCounts:
    """The confusion matrix with items predicted positive where ``score >= threshold``."""
    y, s = check_binary(labels, scores, what="confusion_counts")
    predicted = s >= threshold
    tp = int(np.count_nonzero(predicted & (y == 1)))
    fp = int(np.count_nonzero(predicted & (y == 0)))
    n_pos = int(y.sum())
    return ConfusionCounts(tn=y.size - n_pos - fp, fp=fp, fn=n_pos - tp, tp=tp)


def threshold_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, specificity, F1 and kappa at one threshold (``score >= threshold``)."""
    c = confusion_counts(labels, scores, threshold)
    return {k: float(v) for k, v in metrics_from_counts(c.tn, c.fp, c.fn, c.tp).items()}


def _ranking_point(labels: Any, scores: Any, what: str, probabilities: bool = False) -> dict[str, float]:
    y, s = check_binary(labels, scores, probabilities=probabilities, what=what)
    check_both_classes(y, what)
    levels = score_levels(y, s)
    return {k: float(v[0]) for k, v in _ranking(levels.values, *_single(levels)).items()}


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (ties count half, as scikit-learn's ``roc_auc_score``).

    Constant scores give 0.5. Raises ``ValueError`` when only one class is present.
    """
    return _ranking_point(labels, scores, "roc_auc")["auroc"]


def average_precision(labels: Any, scores: Any) -> float:
    """Average precision, as scikit-learn's ``average_precision_score`` (step-wise, not interpolated)."""
    return _ranking_point(labels, scores, "average_precision")["average_precision"]


def brier_score(labels: Any, probabilities: Any) -> float:
    """Mean squared difference between the predicted probability and the 0/1 label (one class is fine)."""
    y, p = check_binary(labels, probabilities, probabilities=True, what="brier_score")
    return float(np.mean((p - y) ** 2))


@dataclass(frozen=True)
class Curve:
    """Points of a ROC curve (x=fpr, y=tpr) or a precision-recall curve (x=recall, y=precision)."""

    x: np.ndarray
    y: np.ndarray
    thresholds: np.ndarray
    x_name: str
    y_name: str

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({self.x_name: self.x, self.y_name: self.y, "thresholds": self.thresholds})


def _curve_levels(labels: Any, scores: Any, what: str) -> ScoreLevels:
    y, s = check_binary(labels, scores, what=what)
    check_both_classes(y, what)
    return score_levels(y, s)


def roc_curve(labels: Any, scores: Any) -> Curve:
    """ROC points at every distinct score, from (0, 0) at threshold +inf to (1, 1).

    Equals scikit-learn's ``roc_curve(..., drop_intermediate=False)``: thresholds descend.
    """
    levels = _curve_levels(labels, scores, "roc_curve")
    tpr = np.concatenate([[0.0], np.cumsum(levels.positives) / levels.positives.sum()])
    fpr = np.concatenate([[0.0], np.cumsum(levels.negatives) / levels.negatives.sum()])
    return Curve(fpr, tpr, np.concatenate([[np.inf], levels.values]), "fpr", "tpr")


def precision_recall_curve(labels: Any, scores: Any) -> Curve:
    """Precision and recall at every distinct score, as scikit-learn's ``precision_recall_curve``.

    Thresholds ascend; precision and recall have one more point, (recall 0, precision 1), at the end.
    """
    levels = _curve_levels(labels, scores, "precision_recall_curve")
    cum_pos = np.cumsum(levels.positives)
    precision = cum_pos / (cum_pos + np.cumsum(levels.negatives))
    recall = cum_pos / cum_pos[-1]
    return Curve(
        np.concatenate([recall[::-1], [0.0]]),
        np.concatenate([precision[::-1], [1.0]]),
        levels.values[::-1].copy(),
        "recall",
        "precision",
    )


@dataclass(frozen=True)
class CalibrationTable:
    """Reliability bins of width 1/n_bins: [0, e1], (e1, e2], ..., (e_{n-1}, 1] (scikit-learn's binning).

    ``mean_predicted`` and ``observed_fraction`` are NaN (None in JSON) for empty bins. ``ece`` is the
    expected calibration error: the count-weighted mean of |observed - predicted| over the bins.
    """

    edges: np.ndarray
    counts: np.ndarray
    mean_predicted: np.ndarray
    observed_fraction: np.ndarray
    ece: float

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "edges": self.edges,
                "counts": self.counts,
                "mean_predicted": self.mean_predicted,
                "observed_fraction": self.observed_fraction,
                "ece": self.ece,
            }
        )


def calibration_table(labels: Any, probabilities: Any, n_bins: int = 10) -> CalibrationTable:
    """Mean predicted probability against the observed positive fraction in ``n_bins`` uniform bins."""
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"`n_bins` must be a positive integer, but got {n_bins!r}.")
    y, p = check_binary(labels, probabilities, probabilities=True, what="calibration_table")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], p, side="left")
    counts = np.bincount(bins, minlength=n_bins)
    mean_predicted = np.full(n_bins, np.nan)
    observed = np.full(n_bins, np.nan)
    filled = counts > 0
    mean_predicted[filled] = np.bincount(bins, weights=p, minlength=n_bins)[filled] / counts[filled]
    observed[filled] = np.bincount(bins, weights=y, minlength=n_bins)[filled] / counts[filled]
    ece = float(np.sum(counts[filled] * np.abs(observed[filled] - mean_predicted[filled])) / y.size)
    return CalibrationTable(edges, counts, mean_predicted, observed, ece)
