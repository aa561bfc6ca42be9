"""Several runs side by side: the method's ablation (with/without CBAM, with/without pretraining) in one table.

Each run is named by its folder and described by its ``config.json`` (backbone, CBAM on/off, how it
was initialised); every figure is the run's primary level (per study where the dataset has studies)
with its 95% bootstrap interval.

Two runs' intervals may overlap while one run is better on nearly every resample: scored on the same
images, their AUROCs are correlated. So every pair of runs scored on the same test set (the same
dataset and split, the same images in the same order, the same level) also gets the difference of
their AUROCs with a *paired* bootstrap interval (`tf_fracture.metrics.paired_auroc_difference`: each
resample draws the same images, or patients / studies, for both runs). A pair scored on different
data is listed as not comparable pairwise, with the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tf_fracture import metrics
from tf_fracture.evaluate.evaluation import RunEvaluation, bootstrap_units
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


def not_pairable(a: RunEvaluation, b: RunEvaluation) -> str | None:
    """Why two evaluations were not scored on the same test set (None when they were)."""
    pa, pb = a.predictions, b.predictions
    if (a.dataset, pa.dataset) != (b.dataset, pb.dataset):
        return f"different data ({pa.dataset or a.dataset} and {pb.dataset or b.dataset})"
    if a.split != b.split:
        return f"different splits ({a.split!r} and {b.split!r})"
    if a.primary != b.primary:
        return f"different levels ({a.primary} and {b.primary})"
    if pa.filenames is None or pb.filenames is None:
        return "the predictions carry no file names, so the images cannot be matched"
    if len(pa) != len(pb) or not np.array_equal(np.asarray(pa.filenames), np.asarray(pb.filenames)):
        return "different images, or the same in another order"
    if not np.array_equal(np.asarray(pa.labels), np.asarray(pb.labels)):
        return "the same images with different labels"
    return None


def paired_differences(
    evaluations: Sequence[RunEvaluation], *, n_resamples: int | None = None, seed: int | None = None
) -> list[dict[str, Any]]:
    """``AUROC(a) - AUROC(b)`` with a paired bootstrap 95% interval for every pair of runs (a before b).

    Args:
        evaluations: the compared runs.
        n_resamples, seed: the bootstrap (default: the first run's evaluation settings).

    Returns:
        One JSON-ready dict per pair: ``a``, ``b``, ``comparable``, and either the difference, both
        AUROCs (intervals from the same resamples) and ``n``, or ``reason``.
    """
    settings = evaluations[0].settings if evaluations else {}
    n_resamples = settings.get("n_resamples", 2000) if n_resamples is None else n_resamples
    seed = settings.get("seed", 0) if seed is None else seed
    out = []
    for i, a in enumerate(evaluations):
        for b in evaluations[i + 1 :]:
            row: dict[str, Any] = {"a": a.name, "b": b.name}
            reason = not_pairable(a, b)
            if reason:
                out.append({**row, "comparable": False, "reason": reason})
                continue
            level_a, level_b = a.levels[a.primary], b.levels[b.primary]
            # Images of one patient are not independent: resample whole patients (studies are the items
            # of the study level already).
            groups = bootstrap_units(a.predictions) if a.primary == "image" else None
            difference = metrics.paired_auroc_difference(
                level_a.labels, level_a.scores, level_b.scores, n_resamples=n_resamples, seed=seed, groups=groups
            )
            out.append({**row, "comparable": True, "level": a.primary, **difference.to_dict()})
    return out


def comparison_markdown(evaluations: Sequence[RunEvaluation], pairs: list[dict[str, Any]] | None = None) -> str:
    """The side-by-side table as Markdown (value [95% CI]), then the paired AUROC differences (``pairs``:
    `paired_differences`' rows, computed when None); a note where runs were scored on different data."""
    lines = ["# Comparison", ""]
    resamples = {e.settings.get("n_resamples") for e in evaluations}
    intervals = (
        "values with 95% bootstrap CIs"
        if 0 not in resamples and None not in resamples
        else "no intervals (computed with --resamples 0)"
        if resamples == {0}
        else "intervals only where a run's evaluation computed them"
    )
    differences = [
        f"`{e.name}`: {reason}" for e in evaluations[1:] if (reason := not_pairable(evaluations[0], e)) is not None
    ]
    if differences:
        lines += [
            f"**Warning: the runs were not all scored on the same images as `{evaluations[0].name}` "
            f"({'; '.join(differences)}): compare their figures with care.** Each run's data, split and n "
            f"are in the table; {intervals}.",
            "",
        ]
    else:
        e = evaluations[0]
        lines += [
            f"All runs scored on the same {e.primary}s ({e.dataset} `{e.split}`, n = {e.levels[e.primary].result.n}); "
            f"thresholds chosen on each run's validation split; {intervals}.",
            "",
        ]
    header = ["run", "data", "backbone", "CBAM", "init", "n (pos)"] + [label for _, _, label in COMPARED]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e, row in zip(evaluations, comparison_rows(evaluations), strict=True):
        attention = {True: "on", False: "off"}.get(row["attention"], "?")
        backbone = str(row["backbone"]) + (f" {row['variant']}" if row["variant"] else "")
        data = f"{row['dataset']} `{row['split']}`"
        cells = [f"`{row['run']}`", data, backbone, attention, row["init"], f"{row['n']} ({row['n_positive']})"]
        cells += [fmt(_estimate(e, metric, threshold)) for metric, threshold, _ in COMPARED]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![ROC curves of the runs](comparison_roc.png)", ""]
    lines += _paired_lines(paired_differences(evaluations) if pairs is None else pairs)
    return "\n".join(lines)


def _paired_lines(pairs: list[dict[str, Any]]) -> list[str]:
    if not pairs:
        return []
    lines = [
        "## Paired AUROC differences",
        "",
        "AUROC(A) - AUROC(B) with a paired bootstrap 95% CI: each resample draws the same images (whole patients "
        "where they repeat) for both runs, so it measures the difference itself. An interval that excludes 0 "
        "says one run ranks better on this test set.",
        "",
        "| A | B | AUROC A | AUROC B | AUROC A - B [95% paired CI] |",
        "|---|---|---|---|---|",
    ]
    for pair in pairs:
        if not pair["comparable"]:
            lines.append(f"| `{pair['a']}` | `{pair['b']}` | | | not comparable pairwise: {pair['reason']} |")
            continue
        cells = [_from_dict(pair[k]) for k in ("auroc_a", "auroc_b", "difference")]
        lines.append(f"| `{pair['a']}` | `{pair['b']}` | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _from_dict(value: dict[str, Any]) -> str:
    return fmt(metrics.Estimate(value["value"], value.get("ci_low"), value.get("ci_high")))


def write_comparison(evaluations: Sequence[RunEvaluation], out_dir: str | os.PathLike) -> Path:
    """Writes ``comparison.md``, ``comparison.json`` and ``comparison_roc.png`` into ``out_dir``."""
    if not evaluations:
        raise ValueError("Nothing to compare: give at least one evaluated run.")
    names = [e.name for e in evaluations]
    if len(set(names)) != len(names):
        raise ValueError(f"Runs must have distinct folder names to be told apart, but got {names}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = paired_differences(evaluations)
    (out / "comparison.md").write_text(comparison_markdown(evaluations, pairs))
    with open(out / "comparison.json", "w") as f:
        rows = {"runs": comparison_rows(evaluations), "paired_auroc_differences": pairs}
        json.dump(rows, f, indent=2, allow_nan=False)
        f.write("\n")
    series = []
    for e in evaluations:
        result = e.levels[e.primary].result
        series.append(CurveSeries(e.name, result.roc, result.ranking["auroc"], {}))
    save_figure(roc_figure(series, title="ROC curves of the compared runs"), out / "comparison_roc.png")
    return out
