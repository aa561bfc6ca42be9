"""A VLM evaluation's files: predictions.csv and the Markdown report."""

from __future__ import annotations

import csv
import math
from typing import Any

from vlm_torch.inference import SplitOutput


def write_predictions(path: str, output: SplitOutput) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "label", "answer", "parsed", "score", "p_b"])
        answers = output.answers if output.answers is not None else [""] * len(output.ids)
        parsed = output.parsed if output.parsed is not None else [""] * len(output.ids)
        for row in zip(output.ids, output.labels, answers, parsed, output.scores, output.p_b(), strict=True):
            image_id, label, answer, outcome, score, p_b = row
            writer.writerow([image_id, label, answer, outcome, repr(float(score)), repr(float(p_b))])


def render_report(result: dict[str, Any]) -> str:
    """The Markdown report of :func:`evaluate_vlm`'s result."""
    source, data = result["model"], result["data"]
    dataset = data.get("dataset") or {}
    lines = [
        f"# {source['model']} on {dataset.get('dataset', data['dir'])} / {data['split']}",
        "",
        f"- model: `{source['model_path']}`" + (f", adapter `{source['adapter']}`" if source["adapter"] else ""),
        f"- quantisation requested: {source['quantization']}; preprocessing (CLAHE + unsharp): "
        f"{'yes' if data['preprocess'] else 'no'}",
        f"- images: {result['n']}" + (f" (first {data['limit']} only)" if data["limit"] else ""),
    ]
    skipped = {k: v for k, v in result["skipped"].items() if v}
    for split, entries in skipped.items():
        lines.append(f"- unreadable images skipped in {split}: {len(entries)} ({', '.join(sorted(entries)[:5])})")
    answers = result["answers"]
    if answers:
        outcomes = answers["outcomes"]
        lines += [
            "",
            "## Parsed answers",
            "",
            f"A: {outcomes['A']}, B: {outcomes['B']}, both: {outcomes['both']}, neither: {outcomes['neither']} "
            f"(both / neither scored as wrong).",
            "",
            "| accuracy | precision | recall | specificity | F1 | kappa |",
            "|---|---|---|---|---|---|",
            "| " + " | ".join(format_value(answers["metrics"][k]) for k in _THRESHOLD_METRICS) + " |",
            "",
            "Confusion: " + ", ".join(f"{k} {v}" for k, v in answers["confusion"].items()),
        ]
    scores = result["scores"]
    ranking = scores["ranking"]
    lines += [
        "",
        "## A/B score: log P(B) - log P(A), as P(B | A or B)",
        "",
        f"AUROC {_estimate(ranking['auroc'])}, average precision {_estimate(ranking['average_precision'])} "
        f"({scores['bootstrap']['n_resamples']} bootstrap resamples, 95% CI).",
        "",
        f"| threshold ({data['threshold_split'] or 'none'}) | value | accuracy | precision | recall | specificity "
        "| F1 | kappa |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, at in scores["at_thresholds"].items():
        cells = [_estimate(at["metrics"][k]) for k in _THRESHOLD_METRICS]
        lines.append(f"| {name} | {format_value(at['threshold'])} | " + " | ".join(cells) + " |")
    if scores["scores_tied_by_sigmoid"]:
        lines += ["", f"AUROC of the raw scores (exact ranking): {format_value(scores['auroc_of_raw_scores'])}."]
    return "\n".join(lines) + "\n"


_THRESHOLD_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "kappa")


def format_value(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"


def _estimate(estimate: dict[str, Any]) -> str:
    text = format_value(estimate["value"])
    if estimate.get("ci_low") is not None:
        text += f" [{format_value(estimate['ci_low'])}, {format_value(estimate['ci_high'])}]"
    return text
