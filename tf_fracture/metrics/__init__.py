"""Binary classification metrics for fracture detection, shared by the CNN and the VLM tracks.

Imports NumPy only: no TensorFlow, PyTorch or scikit-learn (scikit-learn checks it in the tests).

The fracture / injury class (label 1) is positive; an item is predicted positive when
``score >= threshold``; equal scores are never split by a threshold and count half in AUROC (as
scikit-learn). Thresholds are chosen on the validation split and applied to the test split:

    from tf_fracture import metrics
    thresholds = metrics.choose_thresholds(val_labels, val_probs, target_sensitivity=0.95)
    result = metrics.evaluate(test_labels, test_probs, thresholds, n_resamples=2000, seed=0)
    json.dump(result.to_dict(), f)

Every metric comes with a percentile-bootstrap interval; resamples are stratified by class (or draw
whole studies / patients when ``groups`` is given), seeded, and vectorised (2000 resamples of 400
items take about 0.1 s). MURA: ``aggregate_by_group`` scores each study by the mean of its image
probabilities; ``evaluate_subgroups`` reports each body part.

Shortcut tests: ``stratified_auroc`` gives the AUROC within strata (one body region, images without
hardware); ``paired_auroc_difference`` compares two scorings of the same items with a paired bootstrap
(two runs, or a model and a metadata-only baseline); ``paired_change`` summarises the change of each
item's score under an intervention (occluding the fracture box, rendering the scene without its
fracture); ``mean_estimate`` is a mean with its bootstrap interval (a box hit rate).

Degenerate inputs: empty input, lengths that differ, labels other than 0/1 and NaN / infinite scores
raise ``ValueError`` (saying how many and where). AUROC, average precision, the curves,
``choose_thresholds`` and ``evaluate`` need both classes and raise ``ValueError`` otherwise
(``evaluate_subgroups`` skips such a subgroup and says why). Constant scores give AUROC 0.5. Ratios
with a zero denominator (precision without predicted positives, ...) are 0, as scikit-learn's
``zero_division=0``; Cohen's kappa is NaN where undefined. In JSON, NaN and infinity become null.
"""

from tf_fracture.metrics.binary import (
    CalibrationTable,
    ConfusionCounts,
    Curve,
    average_precision,
    brier_score,
    calibration_table,
    confusion_counts,
    metrics_from_counts,
    precision_recall_curve,
    roc_auc,
    roc_curve,
    threshold_metrics,
)
from tf_fracture.metrics.evaluation import (
    Estimate,
    EvaluationResult,
    GroupedScores,
    SubgroupResult,
    ThresholdResult,
    aggregate_by_group,
    evaluate,
    evaluate_subgroups,
)
from tf_fracture.metrics.paired import (
    AurocDifference,
    PairedChange,
    mean_estimate,
    paired_auroc_difference,
    paired_change,
)
from tf_fracture.metrics.strata import StratumAuroc, auroc_estimate, stratified_auroc
from tf_fracture.metrics.thresholds import Thresholds, choose_thresholds

__all__ = [
    "AurocDifference",
    "CalibrationTable",
    "ConfusionCounts",
    "Curve",
    "Estimate",
    "EvaluationResult",
    "GroupedScores",
    "PairedChange",
    "StratumAuroc",
    "SubgroupResult",
    "ThresholdResult",
    "Thresholds",
    "aggregate_by_group",
    "auroc_estimate",
    "average_precision",
    "brier_score",
    "calibration_table",
    "choose_thresholds",
    "confusion_counts",
    "evaluate",
    "evaluate_subgroups",
    "mean_estimate",
    "metrics_from_counts",
    "paired_auroc_difference",
    "paired_change",
    "precision_recall_curve",
    "roc_auc",
    "roc_curve",
    "stratified_auroc",
    "threshold_metrics",
]
