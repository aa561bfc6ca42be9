"""Decision thresholds chosen on the validation split, to be applied unchanged to the test split.

Choosing a threshold on the data it is then scored on inflates every threshold metric, so the only
way to get thresholds is :func:`choose_thresholds` on validation data, and :func:`evaluate` takes the
resulting :class:`Thresholds` (not numbers) and refuses, unless told otherwise, the very data they were
chosen on.

Candidate thresholds are the distinct validation scores; an item is positive when ``score >= t``, so
items with equal scores are never split. Where several candidates are equally good the highest one
wins (fewest predicted positives): this is ``thresholds[np.argmax(tpr - fpr)]`` on scikit-learn's
``roc_curve(..., drop_intermediate=False)`` without its +inf point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tf_fracture.metrics._checks import check_binary, check_both_classes, fingerprint, to_jsonable
from tf_fracture.metrics.binary import score_levels


@dataclass(frozen=True)
class Thresholds:
    """Named decision thresholds and where they come from.

    Attributes:
        youden: the validation threshold with the largest Youden index J = sensitivity + specificity - 1.
        target_sensitivity: the highest validation threshold whose sensitivity is >= ``sensitivity_target``.
        sensitivity_target: the screening target, e.g. 0.95.
        fixed: the conventional 0.5.
        validation: what was measured on the validation split (size, sensitivity and specificity
            reached at each threshold) and its fingerprint, checked by ``evaluate``.
    """

    youden: float
    target_sensitivity: float
    sensitivity_target: float
    validation: dict[str, Any]
    fixed: float = 0.5

    def named(self) -> dict[str, float]:
        """The thresholds that ``evaluate`` applies, by name: ``fixed``, ``youden``, ``target_sensitivity``."""
        return {"fixed": self.fixed, "youden": self.youden, "target_sensitivity": self.target_sensitivity}

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {**self.named(), "sensitivity_target": self.sensitivity_target, "validation": self.validation}
        )


def choose_thresholds(val_labels: Any, val_scores: Any, *, target_sensitivity: float = 0.95) -> Thresholds:
    """Chooses the Youden and target-sensitivity thresholds on the validation split.

    Args:
        val_labels: validation labels, 1 = fracture / injury.
        val_scores: validation probabilities in [0, 1].
        target_sensitivity: in (0, 1]; the screening threshold is the highest validation score at which
            sensitivity (recall) reaches it. The lowest score always reaches 1.0, so one exists.

    Returns:
        :class:`Thresholds`, to pass to ``evaluate`` together with the *test* labels and scores.

    Example:
        thresholds = choose_thresholds(val_y, val_p, target_sensitivity=0.95)
        result = evaluate(test_y, test_p, thresholds)
    """
    if not 0.0 < float(target_sensitivity) <= 1.0:
        raise ValueError(f"`target_sensitivity` must be in (0, 1], but got {target_sensitivity!r}.")
    y, s = check_binary(val_labels, val_scores, probabilities=True, what="choose_thresholds")
    check_both_classes(y, "choose_thresholds")
    levels = score_levels(y, s)
    sensitivity = np.cumsum(levels.positives) / levels.positives.sum()
    specificity = 1.0 - np.cumsum(levels.negatives) / levels.negatives.sum()
    # J * n_pos * n_neg = tp * n_neg - fp * n_pos, in integers: equal J must compare equal, which
    # sensitivity + specificity - 1 in floating point does not guarantee (2/3 + 2/3 - 1 > 1/3).
    j_scaled = (
        np.cumsum(levels.positives) * levels.negatives.sum() - np.cumsum(levels.negatives) * levels.positives.sum()
    )
    youden = int(np.argmax(j_scaled))  # the first maximum: the highest threshold
    target = int(np.argmax(sensitivity >= target_sensitivity))  # sensitivity never falls as t falls
    validation = {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "fingerprint": fingerprint(y, s),
        "youden": {"sensitivity": sensitivity[youden], "specificity": specificity[youden]},
        "target_sensitivity": {"sensitivity": sensitivity[target], "specificity": specificity[target]},
    }
    return Thresholds(
        youden=float(levels.values[youden]),
        target_sensitivity=float(levels.values[target]),
        sensitivity_target=float(target_sensitivity),
        validation=to_jsonable(validation),
    )
