"""Paired statistics: the same items scored twice, by two models or by one model on two versions of each
image. NumPy only.

- `paired_auroc_difference`: ``AUROC(a) - AUROC(b)`` of two score vectors of the same labelled items,
  with a *paired* bootstrap interval: each resample draws the same items for both, so the interval is
  that of the difference, much narrower than either AUROC's when the two scores are correlated (two
  runs of one architecture on one test set). Two intervals that overlap say nothing about it.
- `paired_change`: per item ``changed - reference`` (a score with the fracture box masked out minus
  the original score; a scene's score with its fracture minus without): its mean with a bootstrap
  interval, and the share of items whose score went up or down (ties count half to each, so 0.5 is
  what a model that ignores the change gets).
- `mean_estimate`: the mean of per-item values (hits, changes) with a bootstrap interval.

Intervals are percentile intervals over ``n_resamples`` seeded resamples of the items (or of whole
``groups``: patients, studies). A share of exactly 0 or 1 has a degenerate interval ([0, 0] or
[1, 1]): read it with its ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tf_fracture.metrics._checks import _as_vector, check_binary, check_both_classes, to_jsonable
from tf_fracture.metrics.binary import _ranking, score_levels
from tf_fracture.metrics.bootstrap import resampled_item_weights
from tf_fracture.metrics.evaluation import Estimate


def _check_options(n_resamples: Any, confidence: Any) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or isinstance(n_resamples, bool) or n_resamples < 0:
        raise ValueError(f"`n_resamples` must be an integer >= 0, but got {n_resamples!r}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), but got {confidence!r}.")


def _check_groups(groups: Any, size: int, what: str) -> np.ndarray | None:
    if groups is None:
        return None
    groups = _as_vector(groups, "groups")
    if groups.size != size:
        raise ValueError(f"{what}: got {groups.size} group ids for {size} items; give one per item.")
    return groups


def _finite_vector(values: Any, name: str, what: str) -> np.ndarray:
    vector = _as_vector(values, name)
    if vector.size == 0:
        raise ValueError(f"{what}: `{name}` is empty; there is nothing to compare.")
    if not np.issubdtype(vector.dtype, np.number) and vector.dtype != bool:
        raise ValueError(f"{what}: `{name}` must be numbers, but got dtype {vector.dtype}.")
    vector = vector.astype(np.float64)
    bad = ~np.isfinite(vector)
    if bad.any():
        raise ValueError(
            f"{what}: {int(bad.sum())} of {vector.size} values of `{name}` are NaN or infinite (first at index "
            f"{int(np.flatnonzero(bad)[0])}); check the model's outputs."
        )
    return vector


def _bootstrap(size: int, statistic, n_resamples: int, confidence: float, seed: int, **draw) -> tuple:
    """The percentile interval of ``statistic(weights)`` over resamples (``(None, None)`` without any)."""
    if not n_resamples:
        return None, None
    rng = np.random.default_rng(seed)
    resampled = np.concatenate([statistic(w) for w in resampled_item_weights(size, n_resamples, rng, **draw)])
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(resampled, [tail, 100.0 - tail])
    return float(low), float(high)


def _method(groups: np.ndarray | None, stratified: bool) -> str:
    unit = "whole groups" if groups is not None else "items"
    if not stratified:
        return f"percentile; resamples {unit}"
    return f"percentile; resamples {unit}, stratified by " + ("group composition" if groups is not None else "class")


def mean_estimate(
    values: Any, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0, groups: Any = None
) -> Estimate:
    """The mean of ``values`` with a percentile-bootstrap interval (items, or whole ``groups``, resampled).

    Example:
        >>> mean_estimate([1, 0, 1, 1], n_resamples=0).value
        0.75
    """
    _check_options(n_resamples, confidence)
    x = _finite_vector(values, "values", "mean_estimate")
    groups = _check_groups(groups, x.size, "mean_estimate")
    interval = _bootstrap(x.size, lambda w: (w @ x) / w.sum(axis=1), n_resamples, confidence, seed, groups=groups)
    return Estimate(float(x.mean()), *interval)


@dataclass(frozen=True)
class PairedChange:
    """How ``changed`` differs from ``reference``, item by item (see `paired_change`).

    Attributes:
        n: items (pairs).
        mean_reference, mean_changed: the two means.
        mean_change: mean of ``changed - reference``, with its bootstrap interval.
        share_higher: share of items with ``changed > reference`` (ties count half), with its interval.
        share_lower: share with ``changed < reference`` (ties half): ``1 - share_higher``.
        n_higher, n_lower, n_tied: the counts behind the shares.
        bootstrap: how the intervals were computed.
    """

    n: int
    mean_reference: float
    mean_changed: float
    mean_change: Estimate
    share_higher: Estimate
    share_lower: Estimate
    n_higher: int
    n_lower: int
    n_tied: int
    bootstrap: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "n": self.n,
                "mean_reference": self.mean_reference,
                "mean_changed": self.mean_changed,
                "mean_change": self.mean_change,
                "share_higher": self.share_higher,
                "share_lower": self.share_lower,
                "n_higher": self.n_higher,
                "n_lower": self.n_lower,
                "n_tied": self.n_tied,
                "bootstrap": self.bootstrap,
            }
        )


def paired_change(
    reference: Any,
    changed: Any,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: Any = None,
) -> PairedChange:
    """The change from ``reference`` to ``changed`` of the same items: mean change and share up / down.

    Args:
        reference: per item, the score before the change (e.g. the original image's logit).
        changed: per item, the score after it (e.g. with the fracture box masked out), same order.
        n_resamples: bootstrap resamples (0: point estimates only).
        confidence: level of the percentile intervals.
        seed: seeds the bootstrap.
        groups: optional patient / study per item: whole groups are resampled.

    Returns:
        A `PairedChange`; ``share_higher`` counts ``changed > reference`` as 1, a tie as 1/2.

    Example:
        >>> paired_change([0.0, 1.0, 2.0], [-1.0, 1.0, 3.0], n_resamples=0).share_lower.value
        0.5
    """
    _check_options(n_resamples, confidence)
    before = _finite_vector(reference, "reference", "paired_change")
    after = _finite_vector(changed, "changed", "paired_change")
    if before.size != after.size:
        raise ValueError(
            f"paired_change: got {before.size} reference and {after.size} changed scores; give one pair per item, "
            "in the same order."
        )
    groups = _check_groups(groups, before.size, "paired_change")
    change = after - before
    higher = (change > 0) + 0.5 * (change == 0)

    def draw(statistic_of):
        return _bootstrap(change.size, statistic_of, n_resamples, confidence, seed, groups=groups)

    # The same seed for both statistics: they are computed on the very same resamples.
    change_interval = draw(lambda w: (w @ change) / w.sum(axis=1))
    higher_interval = draw(lambda w: (w @ higher) / w.sum(axis=1))
    share_higher = float(higher.mean())
    lower_interval = (None, None)
    if higher_interval[0] is not None:
        lower_interval = (1.0 - higher_interval[1], 1.0 - higher_interval[0])
    return PairedChange(
        n=int(change.size),
        mean_reference=float(before.mean()),
        mean_changed=float(after.mean()),
        mean_change=Estimate(float(change.mean()), *change_interval),
        share_higher=Estimate(share_higher, *higher_interval),
        share_lower=Estimate(1.0 - share_higher, *lower_interval),
        n_higher=int((change > 0).sum()),
        n_lower=int((change < 0).sum()),
        n_tied=int((change == 0).sum()),
        bootstrap=_bootstrap_record(n_resamples, confidence, seed, groups, stratified=False),
    )


def _bootstrap_record(n_resamples, confidence, seed, groups, *, stratified: bool) -> dict[str, Any]:
    return {
        "n_resamples": int(n_resamples),
        "confidence": float(confidence),
        "seed": int(seed),
        "method": _method(groups, stratified),
        "n_groups": None if groups is None else int(np.unique(groups).size),
    }


@dataclass(frozen=True)
class AurocDifference:
    """``AUROC(a) - AUROC(b)`` on the same items, with a paired bootstrap interval.

    Attributes:
        n, n_positive: the items scored by both.
        auroc_a, auroc_b: each AUROC, its interval from the same resamples.
        difference: ``auroc_a - auroc_b`` and its paired interval.
        bootstrap: how the intervals were computed.
    """

    n: int
    n_positive: int
    auroc_a: Estimate
    auroc_b: Estimate
    difference: Estimate
    bootstrap: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "n": self.n,
                "n_positive": self.n_positive,
                "auroc_a": self.auroc_a,
                "auroc_b": self.auroc_b,
                "difference": self.difference,
                "bootstrap": self.bootstrap,
            }
        )


def _weighted_auroc(labels: np.ndarray, scores: np.ndarray):
    """A function of item weights ``(rows, n)`` giving the weighted AUROC per row (ties count half)."""
    levels = score_levels(labels, scores)
    order = np.argsort(levels.level_of_item, kind="stable")
    starts = np.flatnonzero(np.diff(levels.level_of_item[order], prepend=-1))
    y = labels[order].astype(np.float64)

    def auroc(weights: np.ndarray) -> np.ndarray:
        w = weights[:, order]
        pos = np.add.reduceat(w * y, starts, axis=1)
        neg = np.add.reduceat(w * (1.0 - y), starts, axis=1)
        return _ranking(levels.values, pos, neg)["auroc"]

    return auroc


def paired_auroc_difference(
    labels: Any,
    scores_a: Any,
    scores_b: Any,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: Any = None,
) -> AurocDifference:
    """``AUROC(a) - AUROC(b)`` of two scorings of the same items, with a paired bootstrap interval.

    Args:
        labels: 0/1 per item, 1 = fracture.
        scores_a, scores_b: two scores per item, in the same order (probabilities, logits: any
            monotone score; AUROC only ranks).
        n_resamples: bootstrap resamples (0: point estimates only).
        confidence: level of the percentile interval.
        seed: seeds the bootstrap.
        groups: optional patient / study per item: whole groups are resampled.

    Each resample draws items stratified by class (as `evaluate`'s intervals; with ``groups``, whole
    groups stratified by their composition) and scores both vectors on the same draw.

    Raises:
        ValueError: labels of one class, vectors of different lengths, NaN or infinite scores.

    Example:
        >>> labels, a, b = [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], [0.2, 0.9, 0.1, 0.8]
        >>> paired_auroc_difference(labels, a, b, n_resamples=0).difference.value
        0.75
    """
    _check_options(n_resamples, confidence)
    y, a = check_binary(labels, scores_a, what="paired_auroc_difference")
    _, b = check_binary(labels, scores_b, what="paired_auroc_difference")
    check_both_classes(y, "paired_auroc_difference")
    groups = _check_groups(groups, y.size, "paired_auroc_difference")
    auroc_a, auroc_b = _weighted_auroc(y, a), _weighted_auroc(y, b)
    ones = np.ones((1, y.size))
    point_a, point_b = float(auroc_a(ones)[0]), float(auroc_b(ones)[0])
    intervals = {"a": (None, None), "b": (None, None), "difference": (None, None)}
    if n_resamples:
        rng = np.random.default_rng(seed)
        values = {"a": [], "b": []}
        for weights in resampled_item_weights(y.size, n_resamples, rng, labels=y, groups=groups):
            values["a"].append(auroc_a(weights))
            values["b"].append(auroc_b(weights))
        drawn = {k: np.concatenate(v) for k, v in values.items()}
        drawn["difference"] = drawn["a"] - drawn["b"]
        tail = 100.0 * (1.0 - confidence) / 2.0
        for key, samples in drawn.items():
            low, high = np.percentile(samples, [tail, 100.0 - tail])
            intervals[key] = (float(low), float(high))
    return AurocDifference(
        n=int(y.size),
        n_positive=int(y.sum()),
        auroc_a=Estimate(point_a, *intervals["a"]),
        auroc_b=Estimate(point_b, *intervals["b"]),
        difference=Estimate(point_a - point_b, *intervals["difference"]),
        bootstrap=_bootstrap_record(n_resamples, confidence, seed, groups, stratified=True),
    )
