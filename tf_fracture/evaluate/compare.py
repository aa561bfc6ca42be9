"""Several runs side by side: the method's ablation (with/without CBAM, with/without pretraining) in one table.

Each run is named by its folder and described by its ``config.json`` (backbone, CBAM on/off, how it
was initialised); every figure is the run's primary level (per study where the dataset has studies)
with its 95% bootstrap interval.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tf_fracture.evaluate.evaluation import RunEvaluation
from tf_fracture.evaluate.plots import CurveSeries, roc_figure, save_figure
from tf_fracture.evaluate.report import fmt

COMPARED = (
    ("auroc", None, "AUROC"),
    ("average_precision", None, "AP"),
    ("recall", "youden", "Sensitivity (Youden)"),
    ("specificity", "youden", "Specificity (Youden)"),
    ("f1", "youden", "F1 (Youden)"),
    ("kappa", "youden", "Kappa (Youden)"),
    ("recall", "target_sensitivity", "Sensitivity (target)"),
    ("specificity", "target_sensitivity", "Specificity (target)"),
)


def _estimate(evaluation: RunEvaluation, metric: str, threshold: str | None):
    result = evaluation.levels[evaluation.primary].result
    if threshold is None:
        return result.ranking[metric]
    return result.at_thresholds[threshold].metrics[metric]


def _init(model: dict[str, Any]) -> str:
    if model.get("init_from"):
        return f"from {Path(str(model['init_from'])).name}"
    return str(model.get("weights") or "random")


def comparison_rows(evaluations: Sequence[RunEvaluation]) -> list[dict[str, Any]]:
    """One JSON-ready row per run: its name, model, data and every compared metric with its CI."""
    rows = []
    for e in evaluations:
        model = e.run.get("model") or {}
        result = e.levels[e.primary].result
        rows.append(
            {
                "run": e.name,
                "path": e.run.get("path"),
                "backbone": model.get("backbone"),
                "variant": model.get("variant"),
                "attention": model.get("attention"),
                "init": _init(model),
                "dataset": e.dataset,
                "split": e.split,
                "level": e.primary,
                "n": result.n,
                "n_positive": result.n_positive,
                "metrics": {label: _estimate(e, metric, threshold).to_dict() for metric, threshold, label in COMPARED},
                "thresholds": {name: at.threshold for name, at in result.at_thresholds.items()},
            }
        )
    return rows


def comparison_markdown(evaluations: Sequence[RunEvaluation]) -> str:
    """The side-by-side table as Markdown (value [95% CI]); a note where runs were scored on different data."""
    lines = ["# Comparison", ""]
    data = {(e.dataset, e.split, e.primary) for e in evaluations}
    if len(data) > 1:
        lines += ["**Warning: the runs were scored on different data; their figures are not comparable.**", ""]
    else:
        dataset, split, level = next(iter(data))
        lines += [
            f"All runs scored on {dataset} `{split}`, per {level}; thresholds chosen on each run's validation "
            "split; values with 95% bootstrap CIs.",
            "",
        ]
    header = ["run", "backbone", "CBAM", "init", "n (pos)"] + [label for _, _, label in COMPARED]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e, row in zip(evaluations, comparison_rows(evaluations), strict=True):
        attention = {True: "on", False: "off"}.get(row["attention"], "?")
        backbone = str(row["backbone"]) + (f" {row['variant']}" if row["variant"] else "")
        cells = [f"`{row['run']}`", backbone, attention, row["init"], f"{row['n']} ({row['n_positive']})"]
        cells += [fmt(_estimate(e, metric, threshold)) for metric, threshold, _ in COMPARED]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![ROC curves of the runs](comparison_roc.png)", ""]
    return "\n".join(lines)


def write_comparison(evaluations: Sequence[RunEvaluation], out_dir: str | os.PathLike) -> Path:
    """Writes ``comparison.md``, ``comparison.json`` and ``comparison_roc.png`` into ``out_dir``."""
    if not evaluations:
        raise ValueError("Nothing to compare: give at least one evaluated run.")
    names = [e.name for e in evaluations]
    if len(set(names)) != len(names):
        raise ValueError(f"Runs must have distinct folder names to be told apart, but got {names}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(comparison_markdown(evaluations))
    with open(out / "comparison.json", "w") as f:
        json.dump({"runs": comparison_rows(evaluations)}, f, indent=2, allow_nan=False)
        f.write("\n")
    series = []
    for e in evaluations:
        result = e.levels[e.primary].result
        series.append(CurveSeries(e.name, result.roc, result.ranking["auroc"], {}))
    save_figure(roc_figure(series, title="ROC curves of the compared runs"), out / "comparison_roc.png")
    return out
