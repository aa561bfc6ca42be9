"""Evaluation of one set of predictions: every metric with a bootstrap confidence interval, at the
thresholds chosen on validation; per-study aggregation (MURA) and per-subgroup (body part) results.
NumPy only, so that the PyTorch VLM track shares it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tf_fracture.metrics._checks import _as_vector, check_binary, check_both_classes, fingerprint, to_jsonable
from tf_fracture.metrics.binary import (
    CalibrationTable,
    ConfusionCounts,
    Curve,
    _counts_at,
    _ranking,
    calibration_table,
    metrics_from_counts,
    precision_recall_curve,
    roc_curve,
    score_levels,
)
from tf_fracture.metrics.bootstrap import resampled_level_counts
from tf_fracture.metrics.thresholds import Thresholds


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its percentile-bootstrap confidence interval (None without resamples)."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return to_jsonable({"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high})


@dataclass(frozen=True)
class ThresholdResult:
    threshold: float
    confusion: ConfusionCounts
    metrics: dict[str, Estimate]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"threshold": self.threshold, "confusion": self.confusion, "metrics": self.metrics})


@dataclass(frozen=True)
class EvaluationResult:
    """Everything ``evaluate`` measured; ``to_dict()`` is what goes into ``metrics.json``.

    Attributes:
        ranking: ``auroc``, ``average_precision`` and ``brier`` (threshold-free).
        at_thresholds: by threshold name (``fixed``, ``youden``, ``target_sensitivity``): the threshold,
            the confusion matrix and accuracy, precision, recall, specificity, f1, kappa.
        thresholds: the validation thresholds applied, with their provenance.
        roc, precision_recall: curve points for plots. calibration: reliability bins.
        bootstrap: how the confidence intervals were computed.
    """

    n: int
    n_positive: int
    ranking: dict[str, Estimate]
    at_thresholds: dict[str, ThresholdResult]
    thresholds: Thresholds
    roc: Curve
    precision_recall: Curve
    calibration: CalibrationTable
    bootstrap: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "n": self.n,
                "n_positive": self.n_positive,
                "ranking": self.ranking,
                "at_thresholds": self.at_thresholds,
                "thresholds": self.thresholds,
                "bootstrap": self.bootstrap,
                "curves": {"roc": self.roc, "precision_recall": self.precision_recall},
                "calibration": self.calibration,
            }
        )


def _all_metrics(values: np.ndarray, pos: np.ndarray, neg: np.ndarray, named: dict[str, float]) -> dict[str, Any]:
    """Every metric per row of level counts: {metric: array} and {threshold name: {metric: array}}."""
    out: dict[str, Any] = dict(_ranking(values, pos, neg))
    for name, threshold in named.items():
        out[name] = metrics_from_counts(*_counts_at(values, pos, neg, threshold))
    return out


def evaluate(
    labels: Any,
    scores: Any,
    thresholds: Thresholds,
    *,
    groups: Any = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    n_bins: int = 10,
    allow_same_data: bool = False,
) -> EvaluationResult:
    """Scores test predictions at thresholds chosen on validation, with bootstrap confidence intervals.

    Args:
        labels: test labels, 1 = fracture / injury.
        scores: test probabilities in [0, 1].
        thresholds: from ``choose_thresholds`` on the *validation* split.
        groups: optional study / patient id per item: the bootstrap then resamples whole groups.
        n_resamples: bootstrap resamples (0: point estimates only).
        confidence: level of the percentile interval, e.g. 0.95.
        seed: seeds the bootstrap; the same inputs and seed give the same intervals.
        n_bins: calibration bins.
        allow_same_data: evaluate the very data the thresholds were chosen on (e.g. to report the
            validation split itself); refused by default because it inflates the threshold metrics.

    The intervals are percentile intervals over resamples stratified by class (each resample keeps
    the numbers of positives and negatives) or, with ``groups``, over whole groups stratified by their
    composition. The thresholds stay fixed, so the intervals do not include the uncertainty of
    choosing them.
    """
    if not isinstance(thresholds, Thresholds):
        raise TypeError(
            f"`thresholds` must be the Thresholds returned by choose_thresholds(val_labels, val_scores), "
            f"but got {type(thresholds).__name__}; thresholds are chosen on validation, never on test."
        )
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 0:
        raise ValueError(f"`n_resamples` must be an integer >= 0, but got {n_resamples!r}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), but got {confidence!r}.")
    y, s = check_binary(labels, scores, probabilities=True, what="evaluate")
    check_both_classes(y, "evaluate")
    if not allow_same_data and fingerprint(y, s) == thresholds.validation.get("fingerprint"):
        raise ValueError(
            "evaluate: these are the labels and scores the thresholds were chosen on. Evaluate the test split, "
            "or pass allow_same_data=True to report the validation split itself."
        )
    if groups is not None:
        groups = _as_vector(groups, "groups")
        if groups.size != y.size:
            raise ValueError(f"evaluate: got {groups.size} group ids for {y.size} labels; give one per item.")

    levels = score_levels(y, s)
    named = thresholds.named()
    point = _all_metrics(levels.values, levels.positives[None, :], levels.negatives[None, :], named)

    intervals: dict[str, Any] = {}
    if n_resamples:
        rng = np.random.default_rng(seed)
        chunks = [
            _all_metrics(levels.values, p, n, named)
            for p, n in resampled_level_counts(levels, y, n_resamples, rng, groups)
        ]
        tail = 100.0 * (1.0 - confidence) / 2.0

        def interval(get):
            values = np.concatenate([get(c) for c in chunks])
            low, high = np.percentile(values, [tail, 100.0 - tail])
            return float(low), float(high)

        intervals = {k: interval(lambda c, k=k: c[k]) for k in ("auroc", "average_precision", "brier")}
        for name in named:
            for metric in point[name]:
                intervals[(name, metric)] = interval(lambda c, n=name, m=metric: c[n][m])

    def estimate(key, value):
        return Estimate(float(value[0]), *intervals.get(key, (None, None)))

    at_thresholds = {}
    for name, threshold in named.items():
        tn, fp, fn, tp = (
            int(c[0]) for c in _counts_at(levels.values, levels.positives[None], levels.negatives[None], threshold)
        )
        at_thresholds[name] = ThresholdResult(
            threshold=float(threshold),
            confusion=ConfusionCounts(tn=tn, fp=fp, fn=fn, tp=tp),
            metrics={m: estimate((name, m), v) for m, v in point[name].items()},
        )
    bootstrap = {
        "n_resamples": int(n_resamples),
        "confidence": float(confidence),
        "seed": int(seed),
        "method": "percentile; resamples "
        + ("whole groups, stratified by group composition" if groups is not None else "items, stratified by class"),
        "n_groups": None if groups is None else int(np.unique(groups).size),
    }
    return EvaluationResult(
        n=int(y.size),
        n_positive=int(y.sum()),
        ranking={k: estimate(k, point[k]) for k in ("auroc", "average_precision", "brier")},
        at_thresholds=at_thresholds,
        thresholds=thresholds,
        roc=roc_curve(y, s),
        precision_recall=precision_recall_curve(y, s),
        calibration=calibration_table(y, s, n_bins),
        bootstrap=bootstrap,
    )


@dataclass(frozen=True)
class GroupedScores:
    """One row per group (e.g. MURA study), groups in sorted order."""

    group_ids: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    n_items: np.ndarray
    subgroups: np.ndarray | None = None


def aggregate_by_group(group_ids: Any, labels: Any, scores: Any, *, subgroups: Any = None) -> GroupedScores:
    """Per-group score = mean of the group's item scores (MURA: a study's image probabilities).

    Args:
        group_ids: one id per item (study id).
        labels: per-item labels; every item of a group must share the group's label.
        scores: per-item scores.
        subgroups: optional per-item attribute that is constant within a group (body part); it is
            returned per group, for ``evaluate_subgroups`` at study level.

    Raises:
        ValueError: when a group mixes labels (or subgroups), naming the first such groups.
    """
    y, s = check_binary(labels, scores, what="aggregate_by_group")
    ids = _as_vector(group_ids, "group_ids")
    if ids.size != y.size:
        raise ValueError(f"aggregate_by_group: got {ids.size} group ids for {y.size} labels; give one per item.")
    unique, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_items = np.bincount(inverse, minlength=unique.size)
    n_pos = np.bincount(inverse, weights=y, minlength=unique.size)
    mixed = (n_pos > 0) & (n_pos < n_items)
    if mixed.any():
        shown = ", ".join(
            f"{unique[g].item()!r} ({int(n_pos[g])} of {n_items[g]} positive)" for g in np.flatnonzero(mixed)[:5]
        )
        raise ValueError(
            f"aggregate_by_group: {int(mixed.sum())} groups mix labels, e.g. {shown}; every image of a study "
            "must carry the study's label. Check how labels were joined to images."
        )
    per_group_subgroup = None
    if subgroups is not None:
        sub = _as_vector(subgroups, "subgroups")
        if sub.size != y.size:
            raise ValueError(f"aggregate_by_group: got {sub.size} subgroups for {y.size} labels; give one per item.")
        first = np.zeros(unique.size, dtype=np.int64)
        first[inverse[::-1]] = np.arange(y.size)[::-1]  # index of each group's first item
        per_group_subgroup = sub[first]
        differs = per_group_subgroup[inverse] != sub
        if differs.any():
            bad = unique[np.unique(inverse[differs])][:5].tolist()
            raise ValueError(
                f"aggregate_by_group: subgroups vary within groups {bad}; they must be constant per group."
            )
    scores_mean = np.bincount(inverse, weights=s, minlength=unique.size) / n_items
    return GroupedScores(unique, (n_pos > 0).astype(np.int64), scores_mean, n_items, per_group_subgroup)


@dataclass(frozen=True)
class SubgroupResult:
    """One subgroup's evaluation, or why it was skipped (``result`` None)."""

    n: int
    n_positive: int
    result: EvaluationResult | None
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"n": self.n, "n_positive": self.n_positive, "skipped": self.skipped, "result": self.result})


def evaluate_subgroups(
    subgroups: Any, labels: Any, scores: Any, thresholds: Thresholds, *, groups: Any = None, **kwargs: Any
) -> dict[str, SubgroupResult]:
    """``evaluate`` within each subgroup (e.g. body part), at the same validation thresholds.

    A subgroup holding one class only is kept with ``result=None`` and the reason in ``skipped``
    (its AUROC is undefined), so that a report lists every subgroup. ``kwargs`` go to ``evaluate``.
    """
    y, s = check_binary(labels, scores, probabilities=True, what="evaluate_subgroups")
    sub = _as_vector(subgroups, "subgroups")
    if sub.size != y.size:
        raise ValueError(f"evaluate_subgroups: got {sub.size} subgroups for {y.size} labels; give one per item.")
    group_vector = None if groups is None else _as_vector(groups, "groups")
    results = {}
    for name in np.unique(sub).tolist():
        mask = sub == name
        y_sub = y[mask]
        n, n_positive = int(mask.sum()), int(y_sub.sum())
        try:
            check_both_classes(y_sub, f"subgroup {name!r}")
        except ValueError as error:
            results[str(name)] = SubgroupResult(n, n_positive, None, str(error))
            continue
        sub_groups = None if group_vector is None else group_vector[mask]
        results[str(name)] = SubgroupResult(
            n, n_positive, evaluate(y_sub, s[mask], thresholds, groups=sub_groups, **kwargs)
        )
    return results
