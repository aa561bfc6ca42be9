"""Evaluation of trained runs: metrics with confidence intervals, a report folder, comparisons.

    python -m tf_fracture.evaluate runs/demo                       # its dataset's test split
    python -m tf_fracture.evaluate runs/cbam runs/no-cbam --out runs/ablation

    from tf_fracture.evaluate import evaluate_run
    evaluation = evaluate_run("runs/demo")    # -> runs/demo/evaluation/synthetic_xray-test/

Thresholds come from the validation split only; MURA is scored per study (mean of the study's image
probabilities) as well as per image; every figure is also given per body part. Import-light: TensorFlow
loads when a model is run, not on import.
"""

from tf_fracture.evaluate.compare import comparison_markdown, comparison_rows, write_comparison
from tf_fracture.evaluate.evaluation import (
    DEFAULT_TARGET_SENSITIVITY,
    LevelEvaluation,
    RunEvaluation,
    default_out_dir,
    describe_run,
    evaluate_predictions,
    evaluate_run,
    load_predictions,
    read_run_config,
)
from tf_fracture.evaluate.predict import SplitPredictions, model_preprocessing, predict, predict_with_labels, sigmoid
from tf_fracture.evaluate.report import REPORT_FILES, markdown_report, write_report

__all__ = [
    "DEFAULT_TARGET_SENSITIVITY",
    "REPORT_FILES",
    "LevelEvaluation",
    "RunEvaluation",
    "SplitPredictions",
    "comparison_markdown",
    "comparison_rows",
    "default_out_dir",
    "describe_run",
    "evaluate_predictions",
    "evaluate_run",
    "load_predictions",
    "markdown_report",
    "model_preprocessing",
    "predict",
    "predict_with_labels",
    "read_run_config",
    "sigmoid",
    "write_comparison",
    "write_report",
]
