"""Each exported variant checked against the Keras model on the run's validation split.

The Keras model scores the split with its own preprocessing (`tf_fracture.evaluate.predict`). The TFLite
model is fed what a device would feed it: the same raw images preprocessed with the METADATA's
``preprocessing`` (OpenCV, `tf_fracture.data.preprocess.preprocess`), run through the LiteRT interpreter
(`tf_fracture_export.litert`). A metadata file that describes other preprocessing than the model was
trained with is refused before anything runs (`PreprocessingMismatchError`); were it let through, the
probabilities would differ from Keras' and the report would fail (the test suite shows both).

Per variant (``verification_<q>.json``, and one ``report.md`` table for all): AUROC and its drop from
Keras, accuracy at the operating threshold, largest and mean |p_tflite - p_keras| and their correlation;
for a model with a class activation map the largest and mean difference of its heatmap,
|sigmoid(CAM_tflite) - sigmoid(CAM_keras)| per cell, and the largest |sigmoid(mean(CAM_tflite)) - p_tflite|;
file size, median latency per image at batch 1 with 1, 2 and 4 threads, the number of XNNPACK delegate
partitions, the ops left off the delegate and whether LiteRT runs the model whole on XNNPACK
(``CompiledModel.is_fully_accelerated``).

A variant fails (`require_passed` raises `VerificationError`) when
* its largest or mean probability difference exceeds `PROBABILITY_TOLERANCES` / `MEAN_PROBABILITY_TOLERANCES`,
  or (int8) its probabilities correlate with Keras' below `INT8_MIN_CORRELATION`;
* its heatmap differs from Keras' beyond `HEATMAP_TOLERANCES` / `MEAN_HEATMAP_TOLERANCES`, or the CAM's mean
  is not its own logit (`CAM_MEAN_TOLERANCES`: the two outputs out of step), or its outputs are not the
  ones its metadata lists;
* its AUROC falls more than ``auroc_tolerance`` below Keras', judged only on a split with at least
  `MIN_AUROC_IMAGES_PER_CLASS` images of each class. On fewer, one reordered (fracture, normal) pair moves
  the AUROC by ``1 / (n_fracture * n_normal)`` (1/64 on 8 + 8 images, most of the 0.02 tolerance), so the
  verdict turns on which near-tied pairs a CPU's rounding happens to swap: the test fixture's int8 model
  lost 0.094 AUROC on its 16 validation images on a CPU with AVX-512 VNNI and passed on AVX2 ones, and
  four calibration samples of the same model moved its AUROC by up to 0.16 on 8 images. The probability
  and heatmap differences and the correlation, means and maxima over images that a rounding step moves by
  about a step, decide there; the AUROC is still reported (``auroc_judged`` false, ``*`` in the table).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from tf_fracture import metrics
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture_export.convert import cam_size
from tf_fracture_export.metadata import ModelMetadata

# Largest |p_tflite - p_keras| allowed on the verification split, per variant.
PROBABILITY_TOLERANCES = MappingProxyType(
    {
        "float32": 1e-4,  # the same graph in float32: only operation order differs
        "float16": 1e-2,  # weights rounded to fp16 (11-bit mantissa), computed in float32
        "dynamic": 5e-2,  # weights int8 per channel, activations quantised on the fly
        # Every activation int8. Measured on MobileNetV3-Small + CBAM trained on FracAtlas (224 px, 394
        # validation images): max 0.145, mean 0.050, AUROC 0.8307 vs 0.8321; on a guided-CAM MobileNetV3-Small
        # (synthetic_xray, 256 px, 200 images): max 0.181, mean 0.057; on the test fixture (64 px, 8 images,
        # four calibration samples standing in for other CPUs' rounding): max 0.057-0.076, mean 0.014-0.019 on AVX2;
        # with its spread set to 0.037 on an AVX-512 VNNI CPU: max 0.046, mean 0.039.
        "int8": 0.2,
    }
)
# Mean |p_tflite - p_keras| allowed. A mean over images moves little when a CPU's rounding moves each
# probability by an output step (1/256 for int8), unlike the AUROC of a small split, whose steps are whole
# reordered pairs; it fails a model that is off for most images, where the max allows one outlier.
MEAN_PROBABILITY_TOLERANCES = MappingProxyType(
    {
        "float32": 1e-4,  # the float variants: as their max (the max bounds them already)
        "float16": 1e-2,
        "dynamic": 5e-2,
        "int8": 0.1,  # about twice the measured means above (0.050, 0.057)
    }
)
# int8 only: the Pearson correlation of the TFLite probabilities with Keras' over the split must reach this,
# judged where Keras' probabilities spread (standard deviation) by at least `CORRELATION_MIN_SPREAD`. On a
# model whose answers differ little between images (the test fixture's spread 0.05), an int8 model that
# lost the input (calibrated on 0..1 instead of 0..255 images, or on blank ones: a near-constant answer)
# stays within the absolute tolerances; its correlation is <= 0 (or undefined, counted 0). Good conversions
# measured 0.877-0.947 on the fixture (four calibration samples) and 0.970 on the guided 256 px model; the
# correlation is a smooth function of the probabilities, so a CPU's rounding moves it by little.
INT8_MIN_CORRELATION = 0.5
CORRELATION_MIN_SPREAD = 0.01  # 2.5 int8 output steps: below it, int8 cannot resolve the differences at all
# The class activation map, compared where a heatmap shows it: |sigmoid(CAM_tflite) - sigmoid(CAM_keras)| per
# cell, on the probability's 0-1 scale (raw CAM values are logits of any size; a relative error is ill-defined
# where they are near 0). A cell is not averaged like the logit (the mean over the cells) is, so the largest
# cell's tolerances are looser than the probability's; the mean over cells and images is held about as tight.
HEATMAP_TOLERANCES = MappingProxyType(
    {
        "float32": 1e-4,  # the same graph
        # Measured on the guided 256 px model (8 x 8 map, 200 images), max / mean: float16 6.5e-3 / 1.5e-4,
        # dynamic 0.061 / 1.4e-3, int8 0.52 / 0.076 (its map spans -2..204 logits: an int8 step of 0.8
        # logit, so a cell near logit 0 moves its sigmoid by up to a few tenths on rounding alone).
        "float16": 2e-2,
        "dynamic": 0.15,
        "int8": 0.75,
    }
)
MEAN_HEATMAP_TOLERANCES = MappingProxyType({"float32": 1e-4, "float16": 1e-2, "dynamic": 5e-2, "int8": 0.15})
# Largest |sigmoid(mean(CAM_tflite)) - p_tflite|: the two outputs of one graph agree but for rounding. In
# int8 the mean is requantised before the sigmoid (measured up to 0.050 on the guided model); a CAM read
# from the wrong output or dequantised with the wrong scale breaks the agreement.
CAM_MEAN_TOLERANCES = MappingProxyType({"float32": 1e-5, "float16": 1e-5, "dynamic": 1e-5, "int8": 0.1})
DEFAULT_AUROC_TOLERANCE = 0.02
# The AUROC drop decides pass/fail on at least this many images of each class (see the module docstring):
# then one reordered pair moves the AUROC by at most 1/900 and the 0.02 tolerance takes 18 of them.
MIN_AUROC_IMAGES_PER_CLASS = 30
LATENCY_THREADS = (1, 2, 4)
DEFAULT_LATENCY_RUNS = 50
REPORT_FILE = "report.md"


class VerificationError(RuntimeError):
    """One or more exported variants disagree with the Keras model beyond the tolerances."""

    def __init__(self, message: str, reports: Sequence[Mapping[str, Any]] = ()):
        super().__init__(message)
        self.reports = list(reports)


class PreprocessingMismatchError(ValueError):
    """The metadata's preprocessing is not the preprocessing the Keras model was trained with."""


@dataclasses.dataclass(frozen=True)
class ValidationSet:
    """The verification images: raw (as read from the dataset), their labels and the Keras probabilities.

    Attributes:
        images: the raw greyscale images, 2-D uint8 arrays (before preprocessing), in the split's order.
        labels: 0/1 per image.
        keras_scores: the Keras model's probabilities (its own preprocessing), float64.
        keras_preprocessing: the preprocessing the Keras model was trained with.
        source: e.g. ``"synthetic_xray/tiny validation"``.
        keras_cams: the Keras model's class activation maps ``(N, h, w)`` float64, or None for a model
            without one.
    """

    images: tuple[np.ndarray, ...]
    labels: np.ndarray
    keras_scores: np.ndarray
    keras_preprocessing: PreprocessConfig
    source: str = ""
    keras_cams: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)


def validation_set(model, experiment, *, limit: int | None = None, batch_size: int | None = None) -> ValidationSet:
    """The run's validation split (its first ``limit`` images), scored by the Keras model (and its CAMs).

    The registry of datasets must be imported first (``import tf_fracture.datasets``).

    Raises:
        ValueError: ``limit`` leaves no images or only one class (AUROC needs both).
    """
    from tf_fracture.data.sources import load_split
    from tf_fracture.evaluate.predict import model_preprocessing, predict
    from tf_fracture.validation import check_int

    check_int("limit", limit, allow_none=True)
    data = experiment.data
    split = load_split(data, data.validation_split)
    if limit is not None:
        split = split.take(limit)
    images, labels = [], []
    for example in split.as_numpy_iterator():
        image = np.asarray(example["image"])
        images.append(image[..., 0] if image.ndim == 3 else image)
        labels.append(int(example["label"]))
    labels = np.asarray(labels, np.int64)
    where = f"{data.dataset}/{data.resolved_builder_config()} {data.validation_split}"
    if len(np.unique(labels)) < 2:
        raise ValueError(
            f"The {len(labels)} verification images of {where} hold {'no' if not len(labels) else 'one'} class: "
            "AUROC needs both. Raise --limit (or leave it out)."
        )
    batch_size = batch_size or data.batch_size
    scores = predict(model, split, None, batch_size=batch_size)
    preprocessing = model_preprocessing(model)
    cams = keras_cams(model, split, preprocessing, batch_size) if cam_size(model) is not None else None
    return ValidationSet(tuple(images), labels, scores, preprocessing, where, cams)


def keras_cams(model, split, preprocessing: PreprocessConfig, batch_size: int) -> np.ndarray:
    """The Keras model's class activation maps ``(N, h, w)`` float64 on the split, preprocessed as for `predict`."""
    from tf_fracture.data.pipeline import evaluation_pipeline
    from tf_fracture.models import cam_model

    maps = cam_model(model)
    batches = evaluation_pipeline(split, preprocessing, batch_size=batch_size, cache=None)
    cams = [np.asarray(maps.predict_on_batch(images)[0])[..., 0] for images, _ in batches]
    return np.concatenate(cams).astype(np.float64)


def device_inputs(images: Sequence[np.ndarray], preprocessing: PreprocessConfig) -> np.ndarray:
    """What an app feeds the model: each raw image preprocessed with ``preprocessing``, ``(N, S, S, 1)`` uint8."""
    return np.stack([preprocess(image, preprocessing)[..., None] for image in images])


def check_preprocessing(metadata: ModelMetadata, keras_preprocessing: PreprocessConfig) -> None:
    """Raises `PreprocessingMismatchError` unless the metadata's preprocessing is the model's own."""
    if metadata.preprocessing != keras_preprocessing:
        differ = {
            f.name: (getattr(metadata.preprocessing, f.name), getattr(keras_preprocessing, f.name))
            for f in dataclasses.fields(PreprocessConfig)
            if getattr(metadata.preprocessing, f.name) != getattr(keras_preprocessing, f.name)
        }
        detail = ", ".join(f"{name}: metadata {a!r} vs model {b!r}" for name, (a, b) in differ.items())
        raise PreprocessingMismatchError(
            f"The metadata of {metadata.model_file} describes other preprocessing than the Keras model was trained "
            f"with ({detail}). An app following it would feed the model other images than training did; "
            "export again (the metadata takes the model's own preprocessing)."
        )


def verify_variant(
    model_path: str | os.PathLike,
    metadata: ModelMetadata,
    validation: ValidationSet,
    *,
    auroc_tolerance: float = DEFAULT_AUROC_TOLERANCE,
    threads: Sequence[int] = LATENCY_THREADS,
    latency_runs: int = DEFAULT_LATENCY_RUNS,
    check_metadata: bool = True,
) -> dict[str, Any]:
    """The verification report of one exported model (see the module docstring); ``passed`` says the verdict.

    Args:
        model_path: the ``.tflite`` file.
        metadata: its metadata; its ``preprocessing`` prepares the TFLite model's input.
        validation: the images and the Keras probabilities (`validation_set`).
        auroc_tolerance: the largest AUROC drop below Keras allowed.
        threads: the thread counts latency is measured with.
        latency_runs: timed runs per thread count (after 5 warm-up runs).
        check_metadata: refuse metadata whose preprocessing differs from the model's (default). False
            runs anyway (to show what a wrong preprocessing does to the numbers).

    Raises:
        PreprocessingMismatchError: (with ``check_metadata``) before anything runs.
    """
    from tf_fracture_export import litert

    if check_metadata:
        check_preprocessing(metadata, validation.keras_preprocessing)
    _check_tolerance(auroc_tolerance)
    model_path = Path(model_path)
    interpreter = litert.load_interpreter(model_path)
    model_cam = litert.cam_size(interpreter)
    if metadata.has_cam and validation.keras_cams is None:
        raise ValueError(
            f"The metadata of {metadata.model_file} lists a CAM output but the validation set holds no Keras CAMs: "
            "build it with `validation_set` from the model the file was exported from."
        )
    inputs = device_inputs(validation.images, metadata.preprocessing)
    quantization = metadata.quantization
    cams = None
    if model_cam is not None and model_cam == metadata.cam_size:
        scores, cams = litert.run_model_with_cam(interpreter, inputs)
    else:
        scores = litert.run_model(interpreter, inputs)
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels, keras_scores = validation.labels, validation.keras_scores
    difference = np.abs(scores - keras_scores)
    auroc, keras_auroc = metrics.roc_auc(labels, scores), metrics.roc_auc(labels, keras_scores)
    per_class = int(min(np.sum(labels == 1), np.sum(labels == 0)))
    threshold = metadata.threshold
    diff_tolerance = PROBABILITY_TOLERANCES[quantization]
    mean_tolerance = MEAN_PROBABILITY_TOLERANCES[quantization]
    report = {
        "quantization": metadata.quantization,
        "model_file": model_path.name,
        "size_bytes": model_path.stat().st_size,
        "images": len(validation),
        "split": validation.source,
        "preprocessing": dataclasses.asdict(metadata.preprocessing),
        "auroc": auroc,
        "keras_auroc": keras_auroc,
        "auroc_drop": keras_auroc - auroc,
        "auroc_tolerance": auroc_tolerance,
        "auroc_judged": per_class >= MIN_AUROC_IMAGES_PER_CLASS,
        "threshold_name": metadata.default_threshold,
        "threshold": threshold,
        "accuracy": metrics.threshold_metrics(labels, scores, threshold)["accuracy"],
        "keras_accuracy": metrics.threshold_metrics(labels, keras_scores, threshold)["accuracy"],
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "diff_tolerance": diff_tolerance,
        "mean_diff_tolerance": mean_tolerance,
        "correlation": _correlation(scores, keras_scores),
        "keras_spread": float(keras_scores.std()),
        "correlation_judged": quantization == "int8" and float(keras_scores.std()) >= CORRELATION_MIN_SPREAD,
        "cam_size": list(model_cam) if model_cam is not None else None,
        **_cam_report(cams, validation.keras_cams, scores, quantization),
        "latency_ms": {str(n): float(litert.latency_ms(model_path, n, runs=latency_runs)) for n in threads},
        "delegate_partitions": int(litert.delegate_partitions(model_path)),
        "undelegated_ops": dict(litert.undelegated_ops(model_path)),
        "fully_accelerated": bool(litert.is_fully_accelerated(model_path)),
    }
    failures = []
    if model_cam != metadata.cam_size:
        failures.append(
            f"the model's outputs do not match its metadata: CAM {_describe(model_cam)} in the model, "
            f"{_describe(metadata.cam_size)} in the metadata"
        )
    if report["auroc_judged"] and report["auroc_drop"] > auroc_tolerance:
        failures.append(
            f"AUROC {auroc:.4f} is {report['auroc_drop']:.4f} below Keras' {keras_auroc:.4f} "
            f"(tolerance {auroc_tolerance})"
        )
    if report["max_abs_diff"] > diff_tolerance or report["mean_abs_diff"] > mean_tolerance:
        failures.append(
            f"probabilities differ from Keras' by up to {report['max_abs_diff']:.3g} (mean "
            f"{report['mean_abs_diff']:.3g}; {quantization} tolerances {diff_tolerance:g} / {mean_tolerance:g})"
        )
    if report["correlation_judged"] and report["correlation"] < INT8_MIN_CORRELATION:
        failures.append(
            f"probabilities correlate with Keras' at r = {report['correlation']:.3f} (minimum {INT8_MIN_CORRELATION}"
            f" where Keras' spread, here {report['keras_spread']:.3g}, is at least {CORRELATION_MIN_SPREAD}): the "
            "model does not follow its input as the Keras model does"
        )
    if cams is not None and (
        report["heatmap_max_diff"] > report["heatmap_tolerance"]
        or report["heatmap_mean_diff"] > report["heatmap_mean_tolerance"]
    ):
        failures.append(
            f"the CAM's heatmap (sigmoid per cell) differs from Keras' by up to {report['heatmap_max_diff']:.3g} "
            f"(mean {report['heatmap_mean_diff']:.3g}; {quantization} tolerances {report['heatmap_tolerance']:g} / "
            f"{report['heatmap_mean_tolerance']:g})"
        )
    if cams is not None and report["cam_mean_diff"] > report["cam_mean_tolerance"]:
        failures.append(
            f"sigmoid(mean(CAM)) differs from the probability by up to {report['cam_mean_diff']:.3g} "
            f"({quantization} tolerance {report['cam_mean_tolerance']:g}): the outputs are out of step"
        )
    report["failures"] = failures
    report["passed"] = not failures
    return report


def _cam_report(cams, keras_cams, scores, quantization: str) -> dict[str, Any]:
    """The CAM's part of the report; None everywhere for a model without a CAM output."""
    keys = (
        "cam_max_abs_diff",
        "heatmap_max_diff",
        "heatmap_mean_diff",
        "heatmap_tolerance",
        "heatmap_mean_tolerance",
        "cam_mean_diff",
        "cam_mean_tolerance",
    )
    if cams is None:
        return dict.fromkeys(keys)
    cams = np.asarray(cams, np.float64)
    if cams.shape != keras_cams.shape:
        raise ValueError(f"The TFLite CAMs {cams.shape} and Keras' {keras_cams.shape} differ in shape.")
    heat = np.abs(_sigmoid(cams) - _sigmoid(keras_cams))
    return {
        "cam_max_abs_diff": float(np.abs(cams - keras_cams).max()),  # in logits, for the record
        "heatmap_max_diff": float(heat.max()),
        "heatmap_mean_diff": float(heat.mean()),
        "heatmap_tolerance": HEATMAP_TOLERANCES[quantization],
        "heatmap_mean_tolerance": MEAN_HEATMAP_TOLERANCES[quantization],
        "cam_mean_diff": float(np.abs(_sigmoid(cams.mean(axis=(1, 2))) - scores).max()),
        "cam_mean_tolerance": CAM_MEAN_TOLERANCES[quantization],
    }


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r; 0 where either side is constant (an answer that does not vary follows nothing)."""
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # = 1 / (1 + exp(-x)), without overflow


def _describe(size) -> str:
    return "none" if size is None else f"{size[0]}x{size[1]}"


def require_passed(reports: Sequence[Mapping[str, Any]]) -> None:
    """Raises `VerificationError` naming each failed variant and why."""
    failed = [r for r in reports if not r["passed"]]
    if failed:
        lines = [f"{r['quantization']} ({r['model_file']}): {'; '.join(r['failures'])}" for r in failed]
        raise VerificationError(
            "Exported model(s) disagree with the Keras model:\n  " + "\n  ".join(lines) + "\n"
            "Do not ship them. See the verification JSON beside each model.",
            reports,
        )


def _check_tolerance(value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"Expected `auroc_tolerance` to be a number in [0, 1], but got {value!r}.")


def verification_path(out_dir: str | os.PathLike, quantization: str) -> Path:
    return Path(out_dir) / f"verification_{quantization}.json"


def markdown_table(reports: Sequence[Mapping[str, Any]]) -> str:
    """One row per variant: size, AUROC (Keras'), accuracy, differences, latency, partitions, verdict.

    An AUROC that did not decide (too few images of a class, see `MIN_AUROC_IMAGES_PER_CLASS`) is marked ``*``;
    a model without a CAM output shows ``-`` for the CAM's difference.
    """
    if not reports:
        return ""
    threads = list(reports[0]["latency_ms"])
    header = [
        "variant",
        "size (KiB)",
        "AUROC (Keras)",
        f"acc @{reports[0]['threshold_name']}",
        "max \\|Δp\\|",
        "mean \\|Δp\\|",
        "max \\|Δheatmap\\|",
        *[f"ms/img {n} thr" for n in threads],
        "partitions",
        "whole on XNNPACK",
        "verdict",
    ]
    rows = [header, ["---"] * len(header)]
    for r in reports:
        rows.append(
            [
                r["quantization"],
                f"{r['size_bytes'] / 1024:.1f}",
                f"{r['auroc']:.4f} ({r['keras_auroc']:.4f}){'' if r.get('auroc_judged', True) else '*'}",
                f"{r['accuracy']:.3f}",
                f"{r['max_abs_diff']:.2e}",
                f"{r['mean_abs_diff']:.2e}",
                "-" if r.get("heatmap_max_diff") is None else f"{r['heatmap_max_diff']:.2e}",
                *[f"{r['latency_ms'][n]:.2f}" for n in threads],
                str(r["delegate_partitions"]),
                "yes" if r["fully_accelerated"] else "no",
                "pass" if r["passed"] else "FAIL",
            ]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def markdown_report(reports: Sequence[Mapping[str, Any]], *, run: str = "", command: str = "") -> str:
    first = reports[0] if reports else {}
    lines = [f"# Edge export of `{run}`" if run else "# Edge export", ""]
    if first:
        lines += [
            f"Verified on {first['images']} images of {first['split']} against the Keras model; threshold "
            f"`{first['threshold_name']}` = {first['threshold']:.4f}. A variant fails when its max or mean |Δp| "
            f"exceeds its tolerance ({_tolerances(PROBABILITY_TOLERANCES)}; mean "
            f"{_tolerances(MEAN_PROBABILITY_TOLERANCES)}); int8 also when its probabilities correlate with "
            f"Keras' below r = {INT8_MIN_CORRELATION}; when its class activation map's heatmap (sigmoid per "
            f"cell) differs from Keras' beyond its tolerance ({_tolerances(HEATMAP_TOLERANCES)}; mean "
            f"{_tolerances(MEAN_HEATMAP_TOLERANCES)}) or the map's mean is not its logit; or when its AUROC drops "
            f"more than {first['auroc_tolerance']} below Keras' on at least {MIN_AUROC_IMAGES_PER_CLASS} images "
            "of each class (`*`: fewer here, so the AUROC is reported, not judged). Latency: median per image at "
            "batch 1 with the LiteRT interpreter (XNNPACK) on this machine.",
            "",
        ]
    if command:
        lines += ["```", command, "```", ""]
    lines.append(markdown_table(reports))
    failed = [r for r in reports if not r["passed"]]
    for r in failed:
        lines += ["", f"**{r['quantization']} FAILED**: {'; '.join(r['failures'])}."]
    return "\n".join(lines) + "\n"


def _tolerances(tolerances: Mapping[str, float]) -> str:
    return ", ".join(f"{q} {t:g}" for q, t in tolerances.items())


def write_report(
    reports: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, *, run: str = "", command: str = ""
) -> Path:
    """``verification_<q>.json`` per variant and ``report.md`` for all, in ``out_dir``; returns report.md's path."""
    from tf_fracture.run_folder import write_json

    out_dir = Path(out_dir)
    for report in reports:
        write_json(verification_path(out_dir, report["quantization"]), dict(report))
    path = out_dir / REPORT_FILE
    path.write_text(markdown_report(reports, run=run, command=command))
    return path
