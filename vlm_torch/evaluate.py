"""``python -m vlm_torch.evaluate``: a VLM's greedy answers and A/B scores on an exported split, with the CNN
side's metrics.

    python -m vlm_torch.evaluate runs/medgemma --data exports/fracatlas --split test
    python -m vlm_torch.evaluate google/medgemma-4b-it --model medgemma --data exports/fracatlas --out zero-shot
    python -m vlm_torch.evaluate /models/medgemma --model medgemma --adapter runs/medgemma/adapter --data ...

Two readings of every image:

- the answer: greedy generation parsed to "A", "B", "both" or "neither" (``vlm_torch.answers``). Accuracy,
  precision, recall, specificity, F1 and Cohen's kappa count "both" and "neither" as wrong (a positive image
  so answered is a false negative, a negative one a false positive), and their numbers are reported.
- the score: log P(B) - log P(A) of the answer's first token (``vlm_torch.scoring.ab_scores``, one forward
  pass), mapped to P(B | A or B) = sigmoid(score) for the metrics, which take probabilities: AUROC and
  average precision with bootstrap CIs, and the threshold metrics at 0.5 (P(B) >= P(A)), at the Youden
  threshold and at the target-sensitivity threshold chosen on the ``--threshold-split`` (validation).

Writes ``predictions.csv`` (id, label, answer, parsed, score, p_b), ``metrics.json`` and ``report.md`` into
``--out`` (default RUN/evaluation/<split> for a training run).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from tf_fracture.run_folder import write_json
from vlm_torch import data as vlm_data
from vlm_torch.config import QUANTIZATIONS
from vlm_torch.families import FAMILIES
from vlm_torch.inference import predict_split
from vlm_torch.metrics import DEFAULT_TARGET_SENSITIVITY, answer_metrics, score_metrics
from vlm_torch.model_source import ModelSource, load_model, resolve_source
from vlm_torch.report import format_value, render_report, write_predictions


def evaluate_vlm(
    source: ModelSource,
    data_dir: str,
    split: str = "test",
    *,
    out_dir: str,
    threshold_split: str | None = "validation",
    limit: int | None = None,
    batch_size: int = 8,
    generate: bool = True,
    max_new_tokens: int = 16,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    n_resamples: int = 2000,
    seed: int = 0,
    allow_same_split: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores ``split`` of an export (thresholds from ``threshold_split``) and writes the report; returns metrics."""
    if threshold_split == split and not allow_same_split:
        raise ValueError(
            f"--threshold-split {split!r} is the split scored: thresholds chosen on it inflate its metrics. Use "
            "the validation split, --threshold-split none, or --allow-same-split (and say so when you report it)."
        )
    test_records = vlm_data.take(vlm_data.read_split(data_dir, split), limit)
    val_records = vlm_data.take(vlm_data.read_split(data_dir, threshold_split), limit) if threshold_split else None
    for name, records in ((split, test_records), (threshold_split, val_records or [])):
        classes = {r.label for r in records}
        if len(classes) == 1:  # before the model is loaded: AUROC and thresholds need both classes
            raise ValueError(
                f"all {len(records)} images of {name!r} have label {classes.pop()}: AUROC and the thresholds need "
                "both classes. Raise --limit or use another split."
            )
    family, model, processor = load_model(source)
    common = {
        "batch_size": batch_size,
        "preprocess": source.preprocess,
        "image_size": source.image_size,
        "progress": progress,
    }
    test = predict_split(
        family, model, processor, test_records, generate=generate, max_new_tokens=max_new_tokens, **common
    )
    validation = predict_split(family, model, processor, val_records, generate=False, **common) if val_records else None
    result = {
        "model": source.to_dict(),
        "data": {
            "dir": os.path.abspath(data_dir),
            "dataset": _dataset_info(data_dir),
            "split": split,
            "threshold_split": threshold_split,
            "limit": limit,
            "preprocess": source.preprocess,
        },
        "n": len(test.ids),
        "skipped": {split: test.skipped, **({threshold_split: validation.skipped} if validation else {})},
        "answers": answer_metrics(test.labels, test.parsed) if generate else None,
        "scores": score_metrics(
            test,
            validation,
            target_sensitivity=target_sensitivity,
            n_resamples=n_resamples,
            seed=seed,
            allow_same_data=allow_same_split,
        ),
    }
    os.makedirs(out_dir, exist_ok=True)
    write_predictions(os.path.join(out_dir, "predictions.csv"), test)
    write_json(os.path.join(out_dir, "metrics.json"), result)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(render_report(result))
    return result


def _dataset_info(data_dir: str) -> dict | None:
    try:
        return vlm_data.read_dataset_info(data_dir)
    except FileNotFoundError:
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-fracture vlm-evaluate",
        description="Evaluate a VLM (a training run, or a base model) on an exported split: greedy answers parsed "
        "to A / B / both / neither, and the A/B score log P(B) - log P(A) with AUROC and threshold metrics.",
    )
    parser.add_argument("target", metavar="RUN_OR_MODEL", help="a vlm_torch.train run folder, or a base model")
    parser.add_argument("--data", help="the export (tf-fracture export-split); default: the run's")
    parser.add_argument("--split", default="test", help="the split scored (default test)")
    parser.add_argument(
        "--threshold-split",
        default="validation",
        help="the split the thresholds are chosen on (default validation, if exported; 'none': 0.5 only)",
    )
    parser.add_argument("--model", choices=sorted(FAMILIES), help="the family (needed for a base model)")
    parser.add_argument("--model-path", help="the base model (default: the run's)")
    parser.add_argument("--adapter", help="a LoRA adapter folder (default: RUN/adapter)")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, help="default: the run's, else auto")
    parser.add_argument(
        "--preprocess", action=argparse.BooleanOptionalAction, help="CLAHE + unsharp (default: the run's)"
    )
    parser.add_argument("--out", help="the report folder (default RUN/evaluation/<split>)")
    parser.add_argument("--limit", type=int, help="score only the first N images of each split (a quick check)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="greedy answer length (default 16)")
    parser.add_argument("--no-answers", action="store_true", help="scores only: skip generating the answers")
    parser.add_argument("--target-sensitivity", type=float, default=DEFAULT_TARGET_SENSITIVITY)
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000; 0: no CIs)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--allow-same-split", action="store_true", help="allow --threshold-split == --split")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be a positive number of images, got {args.limit}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be positive, got {args.batch_size}")
    try:
        source = resolve_source(
            args.target,
            model=args.model,
            model_path=args.model_path,
            adapter=args.adapter,
            quantization=args.quantization,
            preprocess=args.preprocess,
        )
        data_dir = args.data or source.data_dir
        if not data_dir:
            raise ValueError("Name the data: --data EXPORT_DIR (tf-fracture export-split writes one).")
        out = args.out or (os.path.join(source.run_dir, "evaluation", args.split) if source.run_dir else None)
        if out is None:
            raise ValueError("A base model has no run folder to write into: pass --out DIR.")
        threshold_split = None if args.threshold_split.lower() == "none" else args.threshold_split
        if threshold_split and threshold_split not in vlm_data.available_splits(data_dir):
            print(f"note: no {threshold_split!r} split in {data_dir}: only the 0.5 threshold is reported", flush=True)
            threshold_split = None
        result = evaluate_vlm(
            source,
            data_dir,
            args.split,
            out_dir=out,
            threshold_split=threshold_split,
            limit=args.limit,
            batch_size=args.batch_size,
            generate=not args.no_answers,
            max_new_tokens=args.max_new_tokens,
            target_sensitivity=args.target_sensitivity,
            n_resamples=args.resamples,
            seed=args.seed,
            allow_same_split=args.allow_same_split,
            progress=not args.no_progress,
        )
    except (ValueError, OSError) as error:  # what the user can fix (a path, the data, no hub): no traceback
        parser.error(str(error))
    auroc = result["scores"]["ranking"]["auroc"]
    summary = f"AUROC {format_value(auroc['value'])}"
    if result["answers"]:
        answers = result["answers"]
        summary += (
            f", answer accuracy {format_value(answers['metrics']['accuracy'])} ({answers['invalid']} both/neither)"
        )
    print(f"{result['n']} images: {summary}; report: {os.path.join(out, 'report.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
