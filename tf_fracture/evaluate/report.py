"""The report folder of one evaluation: ``metrics.json``, ``report.md``, PNG figures, ``predictions.csv``.

RUN/evaluation/<dataset>-<split>/
  metrics.json           every number (EvaluationResult.to_dict + run, dataset, split, counts, and the
                         shortcut tests under ``shortcut_tests``)
  report.md              the same, readable, with the figures embedded and a "Shortcut tests" section
  confusion_matrix.png   at the Youden threshold chosen on validation
  roc.png, pr.png        curves with their 95% CIs and the operating points
  calibration.png        reliability diagram and histogram of the probabilities
  predictions.csv        one row per scored image: filename, study, body part, label, probability
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from tf_fracture import metrics
from tf_fracture.evaluate import plots
from tf_fracture.evaluate.evaluation import LevelEvaluation, RunEvaluation

FIGURES = ("confusion_matrix.png", "roc.png", "pr.png", "calibration.png")
REPORT_FILES = ("metrics.json", "report.md", "predictions.csv", *FIGURES)
METRIC_NAMES = {
    "accuracy": "Accuracy",
    "precision": "Precision (PPV)",
    "recall": "Recall (sensitivity)",
    "specificity": "Specificity",
    "f1": "F1",
    "kappa": "Cohen's kappa",
}
RANKING_NAMES = {"auroc": "AUROC", "average_precision": "Average precision", "brier": "Brier score (lower is better)"}
THRESHOLD_TITLES = {"fixed": "0.5", "youden": "Youden (val)", "target_sensitivity": "Target sensitivity (val)"}


def write_report(evaluation: RunEvaluation, out_dir: str | os.PathLike) -> Path:
    """Writes the report folder (see the module docstring) and returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.json", "w") as f:
        json.dump(evaluation.to_dict(), f, indent=2, allow_nan=False)
        f.write("\n")
    _write_predictions(evaluation, out / "predictions.csv")
    write_figures(evaluation, out)
    (out / "report.md").write_text(markdown_report(evaluation))
    return out


def write_figures(evaluation: RunEvaluation, out: Path) -> None:
    primary = evaluation.levels[evaluation.primary]
    names = evaluation.class_names
    youden = primary.result.at_thresholds["youden"]
    plots.save_figure(
        plots.confusion_matrix_figure(
            youden.confusion,
            youden.threshold,
            names,
            title=f"{_title(evaluation)}\nper {primary.level}, Youden threshold {youden.threshold:.3f} (validation)",
        ),
        out / "confusion_matrix.png",
    )
    levels = list(evaluation.levels.values())
    roc = [_series(level, "roc", len(levels) > 1) for level in levels]
    pr = [_series(level, "pr", len(levels) > 1) for level in levels]
    plots.save_figure(plots.roc_figure(roc, title=f"ROC: {_title(evaluation)}"), out / "roc.png")
    prevalence = primary.result.n_positive / primary.result.n
    plots.save_figure(
        plots.precision_recall_figure(pr, prevalence, title=f"Precision-recall: {_title(evaluation)}"), out / "pr.png"
    )
    plots.save_figure(
        plots.calibration_figure(
            primary.labels,
            primary.scores,
            primary.result.calibration,
            names,
            title=f"Calibration per {primary.level}: {_title(evaluation)}",
        ),
        out / "calibration.png",
    )


def _title(evaluation: RunEvaluation) -> str:
    return f"{evaluation.name} on {evaluation.dataset} {evaluation.split}"


def _series(level: LevelEvaluation, kind: str, name_level: bool) -> plots.CurveSeries:
    result = level.result
    points = {}
    for name, at in result.at_thresholds.items():
        m = at.metrics
        if kind == "roc":
            points[name] = (1.0 - m["specificity"].value, m["recall"].value, at.threshold)
        else:
            points[name] = (m["recall"].value, m["precision"].value, at.threshold)
    curve = result.roc if kind == "roc" else result.precision_recall
    summary = result.ranking["auroc" if kind == "roc" else "average_precision"]
    return plots.CurveSeries(f"per {level.level}" if name_level else "model", curve, summary, points)


def _write_predictions(evaluation: RunEvaluation, path: Path) -> None:
    p = evaluation.predictions
    n = len(p)
    columns = {
        "filename": p.filenames,
        "study": p.groups,
        "body_part": p.body_parts,
        "label": p.labels,
        "probability": p.scores,
    }
    columns = {k: np.asarray(v) for k, v in columns.items() if v is not None}
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(columns))
        for i in range(n):
            writer.writerow([f"{v[i]:.6f}" if k == "probability" else _text(v[i]) for k, v in columns.items()])


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


# --- Markdown ---------------------------------------------------------------------------------------


def fmt(estimate: metrics.Estimate | None, digits: int = 3) -> str:
    return "n/a" if estimate is None else plots.format_estimate(estimate, digits)


def _model_line(run: dict) -> str:
    model = run.get("model") or {}
    if not model or model.get("backbone") is None:
        return "unknown (the run has no config.json)"
    parts = [str(model["backbone"]) + (f" ({model['variant']})" if model.get("variant") else "")]
    if model.get("backbone") != "fusion":
        parts.append("CBAM on" if model.get("attention") else "CBAM off")
    parts.append(f"weights {model['weights']}" if model.get("weights") else "random initialisation")
    if model.get("init_from"):
        parts.append(f"initialised from {model['init_from']}")
    if model.get("members"):
        parts.append("members " + ", ".join(str(m) for m in model["members"]))
    return ", ".join(parts)


def markdown_report(evaluation: RunEvaluation) -> str:
    """The report as Markdown (figures referenced by their file names in the same folder)."""
    e = evaluation
    lines = [f"# Evaluation of `{e.name}` on {e.dataset} `{e.split}`", ""]
    data = e.dataset + (f" (config `{e.builder_config}`)" if e.builder_config else "")
    same = " (the SAME split: threshold metrics are optimistic)" if e.split == e.validation_split else ""
    lines += [
        f"- Run: `{e.run.get('path', '')}`",
        f"- Model: {_model_line(e.run)}",
        f"- Data: {data}; scored split `{e.split}`; thresholds chosen on `{e.validation_split}`" + same,
        f"- Positive class: `{e.class_names[1]}` (label 1); predicted positive when probability >= threshold",
        f"- 95% confidence intervals: percentile bootstrap, {e.settings.get('n_resamples')} resamples "
        f"(seed {e.settings.get('seed')}), "
        + {"study": "whole studies resampled", "patient": "whole patients resampled"}.get(
            e.settings.get("bootstrap_unit"), "images resampled, stratified by class"
        )
        + "; thresholds held fixed",
        "",
        "## Counts",
        "",
    ]
    has_studies = any("studies" in c for c in e.counts.values())
    header = "| split | images | positive | negative |" + (" studies | positive studies |" if has_studies else "")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for split, c in e.counts.items():
        row = f"| `{split}` | {c['images']} | {c['positive']} | {c['negative']} |"
        if has_studies:
            row += f" {c.get('studies', '')} | {c.get('positive_studies', '')} |"
        lines.append(row)
    lines.append("")
    for level in e.levels.values():
        lines += _level_section(level, len(e.levels) > 1)
    lines += shortcut_section(e)
    lines += ["## Figures", ""]
    primary = e.levels[e.primary].level
    captions = {
        "confusion_matrix.png": f"Confusion matrix per {primary} at the Youden threshold chosen on validation",
        "roc.png": "ROC curve",
        "pr.png": "Precision-recall curve",
        "calibration.png": f"Calibration per {primary}",
    }
    for name, caption in captions.items():
        lines += [f"![{caption}]({name})", ""]
    return "\n".join(lines)


def _level_section(level: LevelEvaluation, name_level: bool) -> list[str]:
    r = level.result
    heading = f"## Per {level.level}" if name_level else "## Metrics"
    lines = [heading, ""]
    if level.level == "study":
        lines += [
            "Each study scored by the mean of its images' probabilities; thresholds chosen on the validation "
            "split's study scores.",
            "",
        ]
    plural = {"study": "studies"}.get(level.level, f"{level.level}s")
    lines += [f"{r.n} {plural}, {r.n_positive} positive.", "", "| metric | value [95% CI] |", "|---|---|"]
    lines += [f"| {label} | {fmt(r.ranking[key])} |" for key, label in RANKING_NAMES.items()]
    lines += [f"| Expected calibration error | {r.calibration.ece:.3f} |", ""]
    names = list(r.at_thresholds)
    lines += [
        "| at threshold | " + " | ".join(THRESHOLD_TITLES.get(n, n) for n in names) + " |",
        "|---|" + "---|" * len(names),
        "| threshold | " + " | ".join(f"{r.at_thresholds[n].threshold:.4f}" for n in names) + " |",
    ]
    val = level.thresholds.validation
    sens = ["" if n == "fixed" else f"{val[n]['sensitivity']:.3f} / {val[n]['specificity']:.3f}" for n in names]
    lines.append("| on validation: sensitivity / specificity | " + " | ".join(s or "-" for s in sens) + " |")
    for key, label in METRIC_NAMES.items():
        lines.append(f"| {label} | " + " | ".join(fmt(r.at_thresholds[n].metrics[key]) for n in names) + " |")
    lines.append(
        "| TP / FP / FN / TN | "
        + " | ".join("{tp} / {fp} / {fn} / {tn}".format(**r.at_thresholds[n].confusion.to_dict()) for n in names)
        + " |"
    )
    lines.append("")
    if level.thresholds.sensitivity_target:
        lines += [f"Target sensitivity {level.thresholds.sensitivity_target:.2f} (reached on validation).", ""]
    if level.body_parts is not None:
        lines += _body_part_table(level)
    return lines


# A body part with fewer images of either class than this gets its figures flagged as unreadable: with
# one fractured image an AUROC is 0 or 1 and its bootstrap interval collapses onto that value.
FEW_PER_CLASS = 5


def _body_part_table(level: LevelEvaluation) -> list[str]:
    lines = [
        f"### Per body part ({level.level} level, same thresholds)",
        "",
        "| body part | n | positive | AUROC | sensitivity (Youden) | specificity (Youden) | F1 (Youden) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, sub in level.body_parts.items():
        if sub.result is None:
            lines.append(f"| {name} | {sub.n} | {sub.n_positive} | one class only: not scored | | | |")
            continue
        at = sub.result.at_thresholds["youden"].metrics
        auroc = fmt(sub.result.ranking["auroc"])
        fewest = min(sub.n_positive, sub.n - sub.n_positive)
        if fewest < FEW_PER_CLASS:
            auroc = f"{auroc} (too few to read: {fewest} of one class)"
        lines.append(
            f"| {name} | {sub.n} | {sub.n_positive} | {auroc} | {fmt(at['recall'])} "
            f"| {fmt(at['specificity'])} | {fmt(at['f1'])} |"
        )
    lines.append("")
    return lines


# --- shortcut tests ---------------------------------------------------------------------------------


def _est(value: dict | None, digits: int = 3) -> str:
    """An estimate from its JSON form (``{"value", "ci_low", "ci_high"}``), ``n/a`` for None."""
    if value is None or value.get("value") is None:
        return "n/a"
    return fmt(metrics.Estimate(value["value"], value.get("ci_low"), value.get("ci_high")), digits)


def _skipped(title: str, test: dict) -> list[str] | None:
    if test.get("skipped"):
        return [f"### {title}", "", f"Skipped: {test['skipped']}.", ""]
    return None


def shortcut_section(evaluation: RunEvaluation) -> list[str]:
    """The report's "Shortcut tests" section, from the evaluation's ``shortcut_tests`` (its JSON form)."""
    lines = ["## Shortcut tests", ""]
    if evaluation.shortcuts is None:
        return [*lines, "Not run (`--no-shortcut-tests`).", ""]
    tests = evaluation.shortcuts.to_dict()
    lines += [
        "Is the score about the fracture, or about what travels with it (body region, hardware, the scene)? "
        "Each test runs on the scored split where the data allow it, per image; intervals are 95% bootstrap "
        "intervals with the evaluation's resamples and seed.",
        "",
    ]
    lines += _strata_lines(evaluation, tests)
    lines += _baseline_lines(tests["metadata_baseline"])
    lines += _localisation_lines(tests["localisation"])
    lines += _occlusion_lines(tests["occlusion"])
    lines += _counterfactual_lines(tests["counterfactual"])
    return lines


def _strata_lines(evaluation: RunEvaluation, tests: dict) -> list[str]:
    strata = tests["strata"]
    skipped = _skipped("AUROC within strata", strata)
    if skipped:
        return skipped
    baseline = tests["metadata_baseline"]
    has_baseline = not baseline.get("skipped")
    result = evaluation.levels["image"].result
    lines = [
        "### AUROC within strata",
        "",
        f"Where a shortcut is constant it cannot help: {strata['definition']}.",
        "",
        "| stratum | n | positive | model AUROC [95% CI] |"
        + (" metadata baseline AUROC [95% CI] |" if has_baseline else ""),
        "|---|---|---|---|" + ("---|" if has_baseline else ""),
    ]
    row = f"| all images | {result.n} | {result.n_positive} | {fmt(result.ranking['auroc'])} |"
    lines.append(row + (f" {_est(baseline['auroc'])} |" if has_baseline else ""))
    for name, stratum in strata["strata"].items():
        fewest = min(stratum["n_positive"], stratum["n"] - stratum["n_positive"])
        if stratum["skipped"]:
            model, base = f"not scored: {stratum['skipped']}", ""
        else:
            model, base = _est(stratum["auroc"]), _est(stratum["baseline_auroc"])
            if fewest < FEW_PER_CLASS:
                model += f" (too few to read: {fewest} of one class)"
        cells = f"| {name} | {stratum['n']} | {stratum['n_positive']} | {model} |"
        lines.append(cells + (f" {base} |" if has_baseline else ""))
    return [*lines, ""]


def _baseline_lines(baseline: dict) -> list[str]:
    skipped = _skipped("Metadata-only baseline", baseline)
    if skipped:
        return skipped
    features = ", ".join(f"`{f}`" for f in baseline["features"])
    return [
        "### Metadata-only baseline",
        "",
        f"A logistic regression (L2, balanced classes) on the metadata flags alone ({features}), fitted on "
        f"`{baseline['train_split']}` ({baseline['n_train']} images), C = {baseline['C']:g} chosen by AUROC on "
        f"`{baseline['validation_split']}`; scored on the same {baseline['n']} images as the model "
        f"({baseline['n_positive']} positive). The model should beat it clearly.",
        "",
        "| | AUROC [95% CI] |",
        "|---|---|",
        f"| metadata baseline | {_est(baseline['auroc'])} |",
        f"| model | {_est(baseline['model_auroc'])} |",
        f"| model - baseline (paired bootstrap) | {_est(baseline['model_minus_baseline'])} |",
        "",
    ]


def _localisation_lines(localisation: dict) -> list[str]:
    from tf_fracture.explain.cam import title

    skipped = _skipped("Box hit rate of the CAM and Grad-CAM", localisation)
    if skipped:
        return skipped
    maps = localisation["maps"]
    n = next(iter(maps.values()))["n"]
    lines = [
        "### Box hit rate of the CAM and Grad-CAM",
        "",
        f"On the {n} fractured images with a fracture box ({localisation['without_boxes']} without one left out): "
        "how often each heatmap's peak falls inside a box, beside chance (the share of the input inside the "
        "boxes: the hit rate of a random peak).",
        "",
        "| heatmap | hit rate [95% CI] | hits / n | chance | hit rate - chance [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for name, rate in maps.items():
        hits = round(rate["hit_rate"]["value"] * rate["n"]) if rate["n"] else 0
        lines.append(
            f"| {title(name)} | {_est(rate['hit_rate'])} | {hits} / {rate['n']} | {rate['chance_rate']:.3f} "
            f"| {_est(rate['above_chance'])} |"
        )
    if localisation.get("cam_skipped"):
        lines += ["", f"No CAM of the model's own: {localisation['cam_skipped']}"]
    return [*lines, ""]


def _occlusion_lines(occlusion: dict) -> list[str]:
    skipped = _skipped("Occlusion of the fracture box", occlusion)
    if skipped:
        return skipped
    lines = [
        "### Occlusion of the fracture box",
        "",
        f"Each of the {occlusion['n']} fractured images with a box scored again with its box masked out "
        f"(the score should drop) and with everything but its box masked out (it should stay); fill: "
        f"{occlusion['fill']}; the boxes cover {100 * occlusion['box_area']:.1f}% of the image on average. "
        "Changes are occluded - original.",
        "",
        "| input | mean change of the logit [95% CI] | of the probability [95% CI] "
        "| share of images whose score dropped [95% CI] | expected |",
        "|---|---|---|---|---|",
    ]
    for key, label, expected in (
        ("box_removed", "fracture box masked out", "drops"),
        ("box_only", "all but the box masked out", "stays"),
    ):
        change = occlusion[key]
        lines.append(
            f"| {label} | {_est(change['logit']['mean_change'])} | {_est(change['probability']['mean_change'])} "
            f"| {_est(change['logit']['share_lower'])} | {expected} |"
        )
    return [*lines, ""]


def _counterfactual_lines(counterfactual: dict) -> list[str]:
    skipped = _skipped("Counterfactual pairs", counterfactual)
    if skipped:
        return skipped
    rendering = counterfactual["rendering"]
    return [
        "### Counterfactual pairs",
        "",
        f"{counterfactual['n_pairs']} scenes of the scored split (their indices in metrics.json) rendered at "
        f"{rendering['image_size']} px (seed {rendering['seed']}) with and without their fracture, everything else "
        "equal, preprocessed like the model's data. A model that sees the fracture scores the fractured copy "
        "higher in nearly every pair; 0.5 is chance.",
        "",
        "| | value [95% CI] |",
        "|---|---|",
        f"| share of pairs whose fractured copy scores higher | {_est(counterfactual['share_fractured_higher'])} |",
        f"| mean logit difference (fractured - clean) | {_est(counterfactual['logit']['mean_change'])} |",
        f"| mean probability difference | {_est(counterfactual['probability']['mean_change'])} |",
        "",
    ]
