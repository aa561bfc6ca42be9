"""AUROC within strata: does the ranking hold where a shortcut is held constant? NumPy only.

A classifier that scores well overall may do it by telling body regions (or hardware, or views)
apart when their fracture prevalences differ. Within one region (or among images without hardware)
that shortcut is constant, so the AUROC there measures what is left. Strata may overlap (an image
showing two regions is in both; "without hardware" cuts across regions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tf_fracture.metrics._checks import _as_vector, check_binary, check_both_classes, to_jsonable
from tf_fracture.metrics.binary import _ranking, score_levels
from tf_fracture.metrics.bootstrap import resampled_level_counts
from tf_fracture.metrics.evaluation import Estimate


def auroc_estimate(
    labels: Any, scores: Any, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0, groups: Any = None
) -> Estimate:
    """AUROC with the percentile-bootstrap interval `evaluate` gives it (same resamples for the same seed).

    Raises:
        ValueError: labels of one class, NaN or infinite scores, lengths that differ.
    """
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 0:
        raise ValueError(f"`n_resamples` must be an integer >= 0, but got {n_resamples!r}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), but got {confidence!r}.")
    y, s = check_binary(labels, scores, what="auroc_estimate")
    check_both_classes(y, "auroc_estimate")
    if groups is not None:
        groups = _as_vector(groups, "groups")
        if groups.size != y.size:
            raise ValueError(f"auroc_estimate: got {groups.size} group ids for {y.size} labels; give one per item.")
    levels = score_levels(y, s)
    point = float(_ranking(levels.values, levels.positives[None], levels.negatives[None])["auroc"][0])
    if not n_resamples:
        return Estimate(point)
    rng = np.random.default_rng(seed)
    drawn = np.concatenate(
        [_ranking(levels.values, p, n)["auroc"] for p, n in resampled_level_counts(levels, y, n_resamples, rng, groups)]
    )
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(drawn, [tail, 100.0 - tail])
    return Estimate(point, float(low), float(high))


@dataclass(frozen=True)
class StratumAuroc:
    """One stratum's AUROC, or why there is none (``auroc`` None, the reason in ``skipped``)."""

    n: int
    n_positive: int
    auroc: Estimate | None
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"n": self.n, "n_positive": self.n_positive, "auroc": self.auroc, "skipped": self.skipped})


def stratified_auroc(
    labels: Any,
    scores: Any,
    strata: Mapping[str, Any],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: Any = None,
) -> dict[str, StratumAuroc]:
    """The AUROC (with its bootstrap interval) of the items in each stratum.

    Args:
        labels: 0/1 per item, 1 = fracture.
        scores: per item (probabilities or logits: AUROC only ranks).
        strata: ``{name: boolean mask over the items}``; masks may overlap.
        n_resamples, confidence, seed: the bootstrap (as `evaluate`'s).
        groups: optional patient / study per item: whole groups are resampled.

    Returns:
        ``{name: StratumAuroc}`` in the order of ``strata``; an empty stratum or one holding a single
        class keeps its counts, with ``auroc`` None and the reason in ``skipped``.

    Example:
        >>> labels = np.array([0, 1, 0, 1, 0, 1])
        >>> probabilities = np.array([0.1, 0.9, 0.4, 0.3, 0.2, 0.8])
        >>> regions = np.array(["hand", "hand", "hand", "hand", "leg", "leg"])
        >>> stratified_auroc(labels, probabilities, {"hand": regions == "hand"})["hand"].auroc.value
        0.75
    """
    y, s = check_binary(labels, scores, what="stratified_auroc")
    group_vector = None if groups is None else _as_vector(groups, "groups")
    if group_vector is not None and group_vector.size != y.size:
        raise ValueError(f"stratified_auroc: got {group_vector.size} group ids for {y.size} labels; give one per item.")
    out = {}
    for name, mask in strata.items():
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != y.shape:
            raise ValueError(
                f"stratified_auroc: stratum {name!r} must be a boolean mask of shape {y.shape} (one flag per item), "
                f"but got dtype {mask.dtype} and shape {mask.shape}."
            )
        y_in = y[mask]
        n, n_positive = int(mask.sum()), int(y_in.sum())
        if n == 0:
            out[str(name)] = StratumAuroc(0, 0, None, "no item in this stratum")
            continue
        if n_positive in (0, n):
            reason = f"one class only ({n_positive} of {n} positive): the AUROC is undefined"
            out[str(name)] = StratumAuroc(n, n_positive, None, reason)
            continue
        out[str(name)] = StratumAuroc(
            n,
            n_positive,
            auroc_estimate(
                y_in,
                s[mask],
                n_resamples=n_resamples,
                confidence=confidence,
                seed=seed,
                groups=None if group_vector is None else group_vector[mask],
            ),
        )
    return out
