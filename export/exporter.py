"""A run folder to verified TFLite models: what ``tf-fracture export`` does, as an importable function.

    import tf_fracture.datasets  # registers the TFDS builders (an entry point's job)
    from tf_fracture_export.exporter import export_run
    results = export_run("runs/demo", ["float32", "int8"])   # -> runs/demo/export/

Writes, per variant, ``model_<q>.tflite``, its metadata ``model_<q>.json`` (labels, preprocessing,
its outputs: the probability and, for a classifier with a CAM head, the class activation map; the
run's operating thresholds, source run and config; after verification its ``verification``)
and ``verification_<q>.json``; and ``report.md`` for all the variants of the call. Verification
failing raises `VerificationError` AFTER everything is written (the reports say what failed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tf_fracture_export import litert
from tf_fracture_export.convert import (
    DEFAULT_CALIBRATION_IMAGES,
    check_int8_io,
    check_quantization,
    convert,
    read_experiment,
    representative_images,
)
from tf_fracture_export.metadata import ModelMetadata, write_metadata
from tf_fracture_export.verify import (
    DEFAULT_AUROC_TOLERANCE,
    DEFAULT_LATENCY_RUNS,
    require_passed,
    validation_set,
    verify_variant,
    write_report,
)

EXPORT_DIR = "export"
DEFAULT_THRESHOLD = "youden"
FALLBACK_THRESHOLDS = {"fixed": 0.5}
THRESHOLD_NAMES = ("fixed", "youden", "target_sensitivity")


@dataclasses.dataclass(frozen=True)
class ExportedVariant:
    quantization: str
    model_path: Path
    metadata_path: Path
    verification: dict[str, Any] | None = None


def model_path(out_dir: str | os.PathLike, quantization: str) -> Path:
    return Path(out_dir) / f"model_{quantization}.tflite"


def run_thresholds(run_dir: str | os.PathLike, experiment) -> tuple[dict[str, float], str, Path | None]:
    """The run's operating thresholds ``({name: probability}, default name, metrics.json used)``.

    From ``RUN/evaluation/*/metrics.json`` of the run's own dataset (its test-split report first,
    ``tf-fracture evaluate RUN``): thresholds chosen on the validation split. The default
    is ``youden`` when present. A run never evaluated gets ``{"fixed": 0.5}`` (and None as the source).
    """
    from tf_fracture.evaluate.evaluation import default_out_dir

    data = experiment.data
    preferred = default_out_dir(run_dir, data.dataset, data.test_split) / "metrics.json"
    candidates = [preferred, *sorted(Path(run_dir).glob("evaluation/*/metrics.json"))]
    for path in dict.fromkeys(candidates):
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        if report.get("dataset", {}).get("name") != data.dataset:
            continue  # thresholds chosen on another dataset's validation split
        found = report.get("thresholds") or {}
        thresholds = {name: float(found[name]) for name in THRESHOLD_NAMES if found.get(name) is not None}
        if thresholds:
            default = DEFAULT_THRESHOLD if DEFAULT_THRESHOLD in thresholds else next(iter(thresholds))
            return thresholds, default, path
    return dict(FALLBACK_THRESHOLDS), "fixed", None


def export_run(
    run_dir: str | os.PathLike,
    quantizations: Sequence[str],
    *,
    out_dir: str | os.PathLike | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    verify: bool = True,
    limit: int | None = None,
    auroc_tolerance: float = DEFAULT_AUROC_TOLERANCE,
    latency_runs: int = DEFAULT_LATENCY_RUNS,
    seed: int = 0,
    command: str = "",
    int8_io: str = "int8",
) -> list[ExportedVariant]:
    """Exports, and with ``verify`` checks, each of ``quantizations`` of the run's ``model.keras``.

    Args:
        run_dir: a training run folder (``config.json`` + ``model.keras``).
        quantizations: some of ``float32``, ``float16``, ``dynamic``, ``int8``.
        out_dir: where the files go (default ``RUN/export/``).
        calibration_images: int8 calibration sample size, from the run's training split.
        verify: score each variant on the validation split against Keras (and write the reports).
        limit: verify on the first ``limit`` validation images only (faster).
        auroc_tolerance: the largest AUROC drop below Keras a variant may show.
        latency_runs: timed runs per thread count.
        seed: the calibration sample's seed.
        command: the command line, quoted in report.md.
        int8_io: the int8 variant's input/output type, ``"int8"`` or ``"float32"`` (`convert.convert`).

    Raises:
        FileNotFoundError: no ``config.json`` or ``model.keras`` in ``run_dir``.
        ValueError: unknown quantization, a model that cannot be exported (fusion, RGB stem), a model
            without preprocessing.
        VerificationError: a variant failed verification (after every file is written).
    """
    from tf_fracture.evaluate.evaluation import class_names_of
    from tf_fracture.evaluate.predict import model_preprocessing
    from tf_fracture.models import load_model
    from tf_fracture.run_folder import model_file

    if not quantizations:
        raise ValueError("Nothing to export: give at least one quantization.")
    for quantization in quantizations:
        check_quantization(quantization)
    check_int8_io("int8", int8_io)
    quantizations = list(dict.fromkeys(quantizations))
    experiment = read_experiment(run_dir)
    keras_file = model_file(run_dir)
    model = load_model(keras_file, compile=False)
    preprocessing = model_preprocessing(model)
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / EXPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    thresholds, default_threshold, _ = run_thresholds(run_dir, experiment)
    data = experiment.data
    labels = class_names_of(data.dataset, data.builder_config, data.data_dir)

    exported = []
    for quantization in quantizations:
        calibration = None
        if quantization == "int8":
            calibration = representative_images(experiment, calibration_images, seed)
        path = model_path(out_dir, quantization)
        path.write_bytes(
            convert(
                model,
                quantization,
                calibration_images=calibration,
                int8_io=int8_io if calibration is not None else "int8",
            )
        )
        metadata = ModelMetadata(
            model_file=path.name,
            quantization=quantization,
            labels=labels,
            preprocessing=preprocessing,
            thresholds=thresholds,
            default_threshold=default_threshold,
            source_run=str(Path(run_dir).resolve()),
            config=experiment.to_dict(),
            # What the written file gives (read back, not assumed): a model without a CAM head has none.
            cam_size=litert.cam_size(litert.load_interpreter(path)),
            int8_io=int8_io,
        )
        exported.append((quantization, path, metadata, write_metadata(metadata, path.with_suffix(".json"))))
    if not verify:
        return [ExportedVariant(q, p, m) for q, p, _, m in exported]

    validation = validation_set(model, experiment, limit=limit)
    results, reports = [], []
    for quantization, path, metadata, json_path in exported:
        report = verify_variant(path, metadata, validation, auroc_tolerance=auroc_tolerance, latency_runs=latency_runs)
        write_metadata(metadata.replace(verification=report), json_path)
        reports.append(report)
        results.append(ExportedVariant(quantization, path, json_path, report))
    write_report(reports, out_dir, run=Path(run_dir).resolve().name, command=command)
    require_passed(reports)
    return results
