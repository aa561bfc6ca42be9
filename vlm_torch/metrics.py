"""The CNN side's metrics on a VLM's answers (counted) and A/B scores (ranked, with thresholds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tf_fracture import metrics
from vlm_torch import answers as answer_parsing
from vlm_torch.inference import SplitOutput

DEFAULT_TARGET_SENSITIVITY = 0.9  # the CNN side's default (tf_fracture.evaluate)


def answer_metrics(labels: Sequence[int], parsed: Sequence[str]) -> dict[str, Any]:
    """Metrics of the parsed answers; "both" / "neither" count as wrong (false negative / false positive)."""
    y = np.asarray(labels, dtype=np.int64)
    predicted = np.asarray([answer_parsing.predicted_label(p) for p in parsed], dtype=object)
    valid = np.asarray([p is not None for p in predicted])
    # An invalid answer is scored as the wrong class: a missed fracture or a false alarm.
    as_class = np.where(valid, predicted, 1 - y).astype(np.int64)
    tp = int(np.sum((as_class == 1) & (y == 1)))
    fp = int(np.sum((as_class == 1) & (y == 0)))
    fn = int(np.sum((as_class == 0) & (y == 1)))
    tn = int(np.sum((as_class == 0) & (y == 0)))
    counts = {outcome: int(sum(p == outcome for p in parsed)) for outcome in answer_parsing.OUTCOMES}
    values = {k: float(v) for k, v in metrics.metrics_from_counts(tn, fp, fn, tp).items()}
    return {
        "n": int(y.size),
        "outcomes": counts,
        "invalid": counts["both"] + counts["neither"],
        "invalid_scored_as": "wrong (a positive image: false negative; a negative image: false positive)",
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "metrics": values,
    }


def score_metrics(
    test: SplitOutput,
    validation: SplitOutput | None,
    *,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    n_resamples: int = 2000,
    seed: int = 0,
    allow_same_data: bool = False,
) -> dict[str, Any]:
    """Metrics of the A/B score (as P(B | A or B)): ranking with bootstrap CIs, threshold metrics at 0.5 and at
    the validation split's Youden and target-sensitivity thresholds (0.5 only without a validation split)."""
    labels, p_b = np.asarray(test.labels, dtype=np.int64), test.p_b()
    if validation is not None:
        thresholds = metrics.choose_thresholds(
            validation.labels, validation.p_b(), target_sensitivity=target_sensitivity
        )
        named = None
    else:
        # No validation split: only the fixed threshold, which needs no choosing (P(B) >= P(A)).
        thresholds = metrics.Thresholds(
            youden=0.5,
            target_sensitivity=0.5,
            sensitivity_target=float(target_sensitivity),
            validation={"note": "no threshold split: only the fixed threshold 0.5 (P(B) >= P(A)) is reported"},
        )
        named = ("fixed",)
    groups = np.asarray(test.groups, dtype=object)
    repeated = len(set(test.groups)) < len(test.groups)
    result = metrics.evaluate(
        labels,
        p_b,
        thresholds,
        groups=groups if repeated else None,
        n_resamples=n_resamples,
        seed=seed,
        allow_same_data=allow_same_data,
    ).to_dict()
    if named is not None:
        result["at_thresholds"] = {k: v for k, v in result["at_thresholds"].items() if k in named}
        result["thresholds"] = {"fixed": 0.5, "validation": thresholds.validation}
    scores = np.asarray(test.scores, dtype=np.float64)
    # Far from 0, sigmoid rounds distinct scores to equal probabilities: the exact AUROC ranks the raw scores.
    result["auroc_of_raw_scores"] = metrics.roc_auc(labels, scores)
    result["scores_tied_by_sigmoid"] = int(np.unique(scores).size - np.unique(p_b).size)
    return result
