"""Evaluation of trained runs: metrics with confidence intervals, a report folder, comparisons.

    tf-fracture evaluate runs/demo                       # its dataset's test split
    tf-fracture evaluate runs/cbam runs/no-cbam --out runs/ablation

    from tf_fracture.evaluate import evaluate_run
    evaluation = evaluate_run("runs/demo")    # -> runs/demo/evaluation/synthetic_xray-test/

Thresholds come from the validation split only; MURA is scored per study (mean of the study's image
probabilities) as well as per image; every figure is also given per body part. The shortcut tests
(`tf_fracture.evaluate.shortcuts`) run where the data allow them; a comparison of runs scored on the
same images adds paired bootstrap AUROC differences. Import-light: TensorFlow loads when a model is
run, not on import.
"""

from tf_fracture.evaluate.compare import (
    comparison_markdown,
    comparison_rows,
    not_pairable,
    paired_differences,
    write_comparison,
)
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
    run_shortcut_tests,
)
from tf_fracture.evaluate.predict import (
    SplitPredictions,
    model_preprocessing,
    predict,
    predict_logits,
    predict_with_labels,
    sigmoid,
)
from tf_fracture.evaluate.report import REPORT_FILES, markdown_report, write_report
from tf_fracture.evaluate.shortcuts import ShortcutTests, Skipped

__all__ = [
    "DEFAULT_TARGET_SENSITIVITY",
    "REPORT_FILES",
    "LevelEvaluation",
    "RunEvaluation",
    "ShortcutTests",
    "Skipped",
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
    "not_pairable",
    "paired_differences",
    "predict",
    "predict_logits",
    "predict_with_labels",
    "read_run_config",
    "run_shortcut_tests",
    "sigmoid",
    "write_comparison",
    "write_report",
]
