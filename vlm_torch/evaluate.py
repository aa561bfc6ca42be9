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
import csv
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tf_fracture import metrics
from vlm_torch import answers as answer_parsing
from vlm_torch import data as vlm_data
from vlm_torch.config import QUANTIZATIONS, VLMConfig, get_preset
from vlm_torch.families import FAMILIES, get_family

DEFAULT_TARGET_SENSITIVITY = 0.9  # the CNN side's default (tf_fracture.evaluate)
RUN_CONFIG = "config.json"
ADAPTER = "adapter"


@dataclass(frozen=True)
class ModelSource:
    """What to load: a family's base model, optionally with a LoRA adapter, and how the images are prepared."""

    model: str  # the family (registry key)
    model_path: str
    adapter: str | None = None
    quantization: str = "auto"
    image_size: int | None = None
    preprocess: bool = False
    run_dir: str | None = None
    data_dir: str | None = None  # the run's training data (the default --data)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SplitOutput:
    """One split's predictions, in the manifest's order (unreadable images left out and listed)."""

    ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    answers: list[str] | None = None
    parsed: list[str] | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def p_b(self) -> np.ndarray:
        return probability_of_b(np.asarray(self.scores, dtype=np.float64))


def probability_of_b(scores: np.ndarray) -> np.ndarray:
    """P(B | A or B) = sigmoid(log P(B) - log P(A)), computed without overflow; >= 0.5 exactly when P(B) >= P(A)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -scores))


def is_run_dir(path: str | os.PathLike) -> bool:
    """A ``python -m vlm_torch.train`` run folder: ``config.json`` naming the base model (``model_path``)."""
    config = os.path.join(path, RUN_CONFIG)
    if not os.path.isfile(config):
        return False
    with open(config, encoding="utf-8") as f:
        try:
            return "model_path" in json.load(f)
        except json.JSONDecodeError:
            return False


def resolve_source(
    target: str,
    *,
    model: str | None = None,
    model_path: str | None = None,
    adapter: str | None = None,
    quantization: str | None = None,
    preprocess: bool | None = None,
) -> ModelSource:
    """The model to evaluate: a training run (its config, base model and ``adapter/``) or a base model.

    ``target`` is a run folder, or a model folder / hub id (then ``model`` names the family). Flags given
    explicitly win over the run's config.
    """
    if is_run_dir(target):
        with open(os.path.join(target, RUN_CONFIG), encoding="utf-8") as f:
            saved = json.load(f)
        config = VLMConfig.from_dict(saved["config"]) if "config" in saved else None
        family = model or (config.model if config else None)
        if family is None:
            raise ValueError(f"{os.path.join(target, RUN_CONFIG)} names no model family: pass --model.")
        run_adapter = os.path.join(target, ADAPTER)
        if adapter is None:
            if not os.path.isfile(os.path.join(run_adapter, "adapter_config.json")):
                raise FileNotFoundError(
                    f"{target!r} has no {ADAPTER}/adapter_config.json: the training did not finish. Finish it "
                    "(rerun the same train command: it resumes), or pass --adapter."
                )
            adapter = run_adapter
        used = saved.get("quantization", {})
        return ModelSource(
            model=family,
            model_path=model_path or saved["model_path"],
            adapter=adapter,
            quantization=quantization or (used.get("used") if isinstance(used, dict) else None) or "auto",
            image_size=config.image_size if config else None,
            preprocess=config.preprocess if (config and preprocess is None) else bool(preprocess),
            run_dir=str(target),
            data_dir=saved.get("data"),
        )
    if model is None:
        raise ValueError(
            f"{target!r} is not a training run (no {RUN_CONFIG} with a model_path): name its family with "
            f"--model ({', '.join(sorted(FAMILIES))}), or pass a run folder."
        )
    preset = get_preset(model)
    return ModelSource(
        model=model,
        model_path=model_path or target,
        adapter=adapter,
        quantization=quantization or preset.quantization,
        image_size=preset.image_size,
        preprocess=bool(preprocess),
    )


def load_model(source: ModelSource):
    """(family, model, processor) in eval mode; the adapter (PEFT) over the base model when there is one."""
    family = get_family(source.model)
    model, processor = family.load(source.model_path, quantization=source.quantization, image_size=source.image_size)
    if source.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.adapter)
    model.eval()
    return family, model, processor


def predict_split(
    family,
    model,
    processor,
    records: Sequence[vlm_data.Record],
    *,
    batch_size: int,
    preprocess: bool,
    image_size: int | None,
    generate: bool = True,
    max_new_tokens: int = 16,
    progress: bool = True,
) -> SplitOutput:
    """A/B scores (and greedy answers with ``generate``) for ``records``, batch by batch."""
    import torch

    from vlm_torch import scoring

    id_a, id_b = scoring.option_token_ids(family.tokenizer(processor))
    out = SplitOutput(answers=[] if generate else None, parsed=[] if generate else None)
    batches = vlm_data.iter_batches(
        records, batch_size, preprocess=preprocess, image_size=image_size, skipped=out.skipped
    )
    bar = _progress(len(records), progress)
    with torch.inference_mode():
        for chosen, images in batches:
            batch = _to_model(family.prompt_batch(processor, images), model)
            out.scores.extend(float(s) for s in np.asarray(scoring.ab_scores(model, batch, id_a, id_b)).reshape(-1))
            if generate:
                texts = scoring.generate_answers(model, family, processor, batch, max_new_tokens=max_new_tokens)
                out.answers.extend(texts)
                out.parsed.extend(answer_parsing.parse_answer(t) for t in texts)
            out.ids.extend(r.id for r in chosen)
            out.labels.extend(r.label for r in chosen)
            out.groups.extend(r.extra.get("group", r.id) for r in chosen)
            bar.update(len(chosen))
    bar.close()
    if len(out.scores) != len(out.ids):
        raise RuntimeError(f"ab_scores gave {len(out.scores)} scores for {len(out.ids)} images")
    return out


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
    test_records = _first(vlm_data.read_split(data_dir, split), limit)
    val_records = _first(vlm_data.read_split(data_dir, threshold_split), limit) if threshold_split else None
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
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(_jsonable(result), f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(render_report(result))
    return result


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
            "| " + " | ".join(_fmt(answers["metrics"][k]) for k in _THRESHOLD_METRICS) + " |",
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
        lines.append(f"| {name} | {_fmt(at['threshold'])} | " + " | ".join(cells) + " |")
    if scores["scores_tied_by_sigmoid"]:
        lines += ["", f"AUROC of the raw scores (exact ranking): {_fmt(scores['auroc_of_raw_scores'])}."]
    return "\n".join(lines) + "\n"


_THRESHOLD_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "kappa")


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"


def _estimate(estimate: dict[str, Any]) -> str:
    text = _fmt(estimate["value"])
    if estimate.get("ci_low") is not None:
        text += f" [{_fmt(estimate['ci_low'])}, {_fmt(estimate['ci_high'])}]"
    return text


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dataset_info(data_dir: str) -> dict | None:
    try:
        return vlm_data.read_dataset_info(data_dir)
    except FileNotFoundError:
        return None


def _first(records: list, limit: int | None) -> list:
    return records if limit is None else records[:limit]


def _to_model(batch: dict[str, Any], model) -> dict[str, Any]:
    """Floating tensors (pixel values) in the dtype of the model's input embeddings (bf16 for a bf16 model)."""
    import torch

    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    dtype = getattr(getattr(embeddings, "weight", None), "dtype", None)
    if dtype is None:
        return batch
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in batch.items()}


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="image", dynamic_ncols=True)


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
    summary = f"AUROC {_fmt(auroc['value'])}"
    if result["answers"]:
        answers = result["answers"]
        summary += f", answer accuracy {_fmt(answers['metrics']['accuracy'])} ({answers['invalid']} both/neither)"
    print(f"{result['n']} images: {summary}; report: {os.path.join(out, 'report.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
