"""One run's evaluation: thresholds from the validation split, metrics with CIs on the scored split.

``evaluate_predictions`` works on NumPy predictions (no TensorFlow); ``evaluate_run`` loads a run
folder's model, predicts both splits and calls it.

Thresholds (0.5, Youden, a target sensitivity) are chosen on the VALIDATION split only and applied
unchanged to the scored split; scoring the split they were chosen on is refused unless
``allow_same_split=True``. Where the dataset has studies (MURA), every item is also aggregated per
study (the mean of the study's image probabilities, as MURA's authors did): study-level thresholds are
then chosen on the validation split's study scores, and the image-level intervals resample whole
studies (images of one study are not independent).

``evaluate_run`` then runs the shortcut tests the data allow (`tf_fracture.evaluate.shortcuts`: AUROC
within strata, a metadata-only baseline, the box hit rate of the CAM and of Grad-CAM, occlusion of the
fracture box, counterfactual pairs on synthetic_xray); each appears in ``metrics.json`` and the report,
or says why it was skipped.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tf_fracture import metrics
from tf_fracture.evaluate.predict import SplitPredictions
from tf_fracture.metrics._checks import to_jsonable
from tf_fracture.run_folder import RunFolder, model_file
from tf_fracture.validation import check_int, check_rate

DEFAULT_TARGET_SENSITIVITY = 0.9  # TrainConfig.target_sensitivity's default
DEFAULT_CLASS_NAMES = ("no fracture", "fracture")


@dataclass(frozen=True)
class LevelEvaluation:
    """The evaluation at one level (``"image"`` or ``"study"``) of the scored split.

    Attributes:
        thresholds: chosen on the validation split at this level.
        result: every metric with its CI on the scored split.
        body_parts: the same per body part (None where the dataset has none).
        labels, scores: the scored items at this level (images, or studies with their mean score).
    """

    level: str
    thresholds: metrics.Thresholds
    result: metrics.EvaluationResult
    body_parts: dict[str, metrics.SubgroupResult] | None
    labels: np.ndarray
    scores: np.ndarray
    n_validation: int

    def to_dict(self) -> dict[str, Any]:
        out = self.result.to_dict()
        out["level"] = self.level
        out["per_body_part"] = None if self.body_parts is None else to_jsonable(self.body_parts)
        return out


@dataclass(frozen=True)
class RunEvaluation:
    """Everything measured for one run on one split; ``to_dict()`` is ``metrics.json``.

    ``levels`` holds ``"image"`` and, where the dataset has studies, ``"study"``; ``primary`` is the
    level a comparison reports (study where there are studies, as MURA is scored). ``shortcuts`` holds
    the shortcut tests (`tf_fracture.evaluate.shortcuts.ShortcutTests`), None where they were not run.
    """

    run: dict[str, Any]
    dataset: str
    builder_config: str | None
    split: str
    validation_split: str
    levels: dict[str, LevelEvaluation]
    counts: dict[str, Any]
    predictions: SplitPredictions
    class_names: tuple[str, str] = DEFAULT_CLASS_NAMES
    settings: dict[str, Any] = field(default_factory=dict)
    shortcuts: Any = None

    @property
    def primary(self) -> str:
        return "study" if "study" in self.levels else "image"

    @property
    def name(self) -> str:
        return str(self.run.get("name", ""))

    def to_dict(self) -> dict[str, Any]:
        image = self.levels["image"].to_dict()
        out = {
            "run": self.run,
            "dataset": {"name": self.dataset, "builder_config": self.builder_config},
            "split": self.split,
            "validation_split": self.validation_split,
            "counts": self.counts,
            "class_names": list(self.class_names),
            "primary_level": self.primary,
            "settings": self.settings,
            **image,
        }
        out["per_study"] = self.levels["study"].to_dict() if "study" in self.levels else None
        out["shortcut_tests"] = None if self.shortcuts is None else self.shortcuts.to_dict()
        return to_jsonable(out)


def _counts(predictions: SplitPredictions) -> dict[str, Any]:
    labels = np.asarray(predictions.labels)
    out = {"images": int(labels.size), "positive": int(labels.sum()), "negative": int(labels.size - labels.sum())}
    if predictions.groups is not None:
        grouped = metrics.aggregate_by_group(predictions.groups, labels, predictions.scores)
        out["studies"] = int(grouped.labels.size)
        out["positive_studies"] = int(grouped.labels.sum())
    if predictions.body_parts is not None:
        names, counts = np.unique(np.asarray(predictions.body_parts).astype(str), return_counts=True)
        out["body_parts"] = {str(n): int(c) for n, c in zip(names, counts, strict=True)}
    return out


def bootstrap_units(predictions: SplitPredictions) -> np.ndarray | None:
    """What the bootstrap resamples whole: studies, else patients with several images (None: images)."""
    if predictions.groups is not None:
        return np.asarray(predictions.groups)
    if predictions.patients is not None:
        patients = np.asarray(predictions.patients)
        if np.unique(patients).size < patients.size:
            return patients
    return None


def evaluate_predictions(
    validation: SplitPredictions,
    test: SplitPredictions,
    *,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    n_resamples: int = 2000,
    seed: int = 0,
    allow_same_split: bool = False,
    run: dict[str, Any] | None = None,
    dataset: str = "",
    builder_config: str | None = None,
    class_names: tuple[str, str] = DEFAULT_CLASS_NAMES,
) -> RunEvaluation:
    """Thresholds chosen on ``validation``, metrics with bootstrap CIs on ``test``, per image/study/body part.

    Args:
        validation: predictions on the validation split (only its thresholds are used).
        test: predictions on the split to score.
        target_sensitivity: the screening threshold is the highest validation score reaching it.
        n_resamples: bootstrap resamples for the 95% intervals (0: point estimates only).
        seed: seeds the bootstrap.
        allow_same_split: score the very split the thresholds come from (reports an optimistic figure).
        run, dataset, builder_config, class_names: recorded in the report.

    Raises:
        ValueError: ``validation`` and ``test`` are the same split (or the same predictions) and
            ``allow_same_split`` is False; a split with one class only.
    """
    check_rate("target_sensitivity", target_sensitivity, high_inclusive=True)
    check_int("n_resamples", n_resamples, minimum=0)
    if not allow_same_split and validation.split and validation.split == test.split:
        raise ValueError(
            f"The thresholds would be chosen on split {test.split!r}, the split being scored: that inflates every "
            "threshold metric. Choose them on another split (--validation-split) or allow it explicitly "
            "(allow_same_split=True, --allow-same-split)."
        )
    options = {"n_resamples": n_resamples, "seed": seed, "allow_same_data": allow_same_split}
    levels = {}
    thresholds = metrics.choose_thresholds(validation.labels, validation.scores, target_sensitivity=target_sensitivity)
    groups = bootstrap_units(test)
    body_parts = None if test.body_parts is None else np.asarray(test.body_parts).astype(str)
    result = metrics.evaluate(test.labels, test.scores, thresholds, groups=groups, **options)
    per_part = (
        None
        if body_parts is None
        else metrics.evaluate_subgroups(body_parts, test.labels, test.scores, thresholds, groups=groups, **options)
    )
    levels["image"] = LevelEvaluation(
        "image", thresholds, result, per_part, np.asarray(test.labels), np.asarray(test.scores), len(validation)
    )

    if test.groups is not None:
        if validation.groups is None:
            raise ValueError("The scored split has study ids but the validation split has none; load both alike.")
        val_studies = metrics.aggregate_by_group(validation.groups, validation.labels, validation.scores)
        studies = metrics.aggregate_by_group(test.groups, test.labels, test.scores, subgroups=body_parts)
        study_thresholds = metrics.choose_thresholds(
            val_studies.labels, val_studies.scores, target_sensitivity=target_sensitivity
        )
        study_result = metrics.evaluate(studies.labels, studies.scores, study_thresholds, **options)
        study_parts = (
            None
            if studies.subgroups is None
            else metrics.evaluate_subgroups(
                studies.subgroups, studies.labels, studies.scores, study_thresholds, **options
            )
        )
        levels["study"] = LevelEvaluation(
            "study",
            study_thresholds,
            study_result,
            study_parts,
            studies.labels,
            studies.scores,
            len(val_studies.labels),
        )

    counts = {test.split or "scored": _counts(test), validation.split or "validation": _counts(validation)}
    settings = {
        "target_sensitivity": float(target_sensitivity),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "allow_same_split": bool(allow_same_split),
        "thresholds_from": validation.split or "validation",
        "study_score": "mean of the study's image probabilities" if "study" in levels else None,
        "bootstrap_unit": "study" if test.groups is not None else "image" if groups is None else "patient",
    }
    return RunEvaluation(
        run=dict(run or {}),
        dataset=dataset or test.dataset,
        builder_config=builder_config,
        split=test.split,
        validation_split=validation.split,
        levels=levels,
        counts=counts,
        predictions=test,
        class_names=tuple(class_names),
        settings=settings,
    )


# --- run folders -----------------------------------------------------------------------------------


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's resolved ``config.json`` as a nested dict ({} for a bare ``.keras`` file or a run without one)."""
    run = RunFolder(run_dir)
    return run.read_config() if run.config.is_file() else {}


def describe_run(run_dir: str | os.PathLike, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Name (the folder's name), path and model (backbone, variant, attention, initialisation) of a run."""
    config = read_run_config(run_dir) if config is None else config
    run_dir = Path(run_dir)
    if run_dir.is_file():  # a bare .keras file: named by its folder
        run_dir = run_dir.parent
    model = config.get("model", {})
    described = {key: model.get(key) for key in ("backbone", "variant", "attention", "weights", "init_from", "members")}
    if described.get("members") is not None:
        described["members"] = list(described["members"])
    return {
        "name": run_dir.resolve().name,
        "path": str(run_dir),
        "experiment": config.get("name"),
        "stage": config.get("train", {}).get("stage"),
        "model": described,
    }


def default_out_dir(run_dir: str | os.PathLike, dataset: str, split: str) -> Path:
    """``RUN/evaluation/<dataset>-<split>/``."""
    return Path(run_dir) / "evaluation" / f"{dataset}-{split}"


def evaluate_run(
    run_dir: str | os.PathLike,
    dataset: str | None = None,
    split: str | None = None,
    validation_split: str | None = None,
    target_sensitivity: float | None = None,
    out_dir: str | os.PathLike | None = None,
    n_resamples: int = 2000,
    *,
    builder_config: str | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    allow_same_split: bool = False,
    write: bool = True,
    shortcut_tests: bool = True,
    counterfactual_pairs: int = 300,
) -> RunEvaluation:
    """Evaluates a run folder's model on a split and writes its report.

    Args:
        run_dir: a run folder (``config.json`` + ``model.keras``).
        dataset, builder_config, data_dir, manual_dir: the data (default: the run's ``config.json``;
            a different dataset than the run's uses its own default builder config).
        split: the split scored (default: the config's ``test_split``, else ``"test"``).
        validation_split: where the thresholds are chosen (default: the config's ``validation_split``).
        target_sensitivity: screening target (default: the config's ``train.target_sensitivity``, else 0.9).
        out_dir: the report folder (default ``RUN/evaluation/<dataset>-<split>/``).
        n_resamples: bootstrap resamples of the 95% intervals.
        batch_size: images per forward pass (default: the config's batch size, else 32).
        allow_same_split: allow ``split == validation_split`` (optimistic; say so when you report it).
        write: write the report folder (metrics.json, report.md, PNGs, predictions.csv).
        shortcut_tests: run the shortcut tests the data allow (`tf_fracture.evaluate.shortcuts`).
        counterfactual_pairs: at most this many synthetic_xray scenes rendered with and without
            their fracture (0: none).

    Returns:
        The `RunEvaluation`; with ``write`` its folder is ``out_dir``.

    Example:
        evaluate_run("runs/demo", split="test")  # -> runs/demo/evaluation/synthetic_xray-test/report.md
    """
    from tf_fracture.evaluate.predict import predict_with_labels
    from tf_fracture.models import load_model

    model_file(run_dir)  # a missing run or model is named before anything else is asked for
    config = read_run_config(run_dir)
    data = config.get("data", {})
    same_dataset = dataset is None or dataset == data.get("dataset")
    dataset = dataset or data.get("dataset")
    if not dataset:
        raise ValueError(f"{str(run_dir)!r} has no config.json naming its dataset: pass `dataset` (--dataset).")
    if builder_config is None and same_dataset:
        builder_config = data.get("builder_config")
    split = split or (data.get("test_split") if same_dataset else None) or "test"
    validation_split = validation_split or (data.get("validation_split") if same_dataset else None) or "validation"
    if target_sensitivity is None:
        target_sensitivity = config.get("train", {}).get("target_sensitivity", DEFAULT_TARGET_SENSITIVITY)
    data_dir = data_dir if data_dir is not None else data.get("data_dir")
    manual_dir = manual_dir if manual_dir is not None else data.get("manual_dir")
    batch_size = batch_size or data.get("batch_size") or 32

    model = load_model(model_file(run_dir), compile=False)
    loaded = {}
    for name in dict.fromkeys((validation_split, split)):
        loaded[name] = load_predictions(
            model,
            dataset,
            name,
            builder_config=builder_config,
            data_dir=data_dir,
            manual_dir=manual_dir,
            batch_size=batch_size,
            predict_fn=predict_with_labels,
        )
    evaluation = evaluate_predictions(
        loaded[validation_split],
        loaded[split],
        target_sensitivity=target_sensitivity,
        n_resamples=n_resamples,
        seed=seed,
        allow_same_split=allow_same_split,
        run=describe_run(run_dir, config),
        dataset=dataset,
        builder_config=builder_config,
        class_names=class_names_of(dataset, builder_config, data_dir),
    )
    evaluation.settings["shortcut_tests"] = bool(shortcut_tests)
    if shortcut_tests:
        train_split = (data.get("train_split") if same_dataset else None) or "train"
        shortcuts = run_shortcut_tests(
            model,
            evaluation,
            loaded[validation_split],
            builder_config=builder_config,
            data_dir=data_dir,
            manual_dir=manual_dir,
            train_split=train_split,
            batch_size=batch_size,
            counterfactual_pairs=counterfactual_pairs,
        )
        evaluation = dataclasses.replace(evaluation, shortcuts=shortcuts)
    if write:
        from tf_fracture.evaluate.report import write_report

        write_report(evaluation, out_dir or default_out_dir(run_dir, dataset, split))
    return evaluation


def run_shortcut_tests(
    model,
    evaluation: RunEvaluation,
    validation: SplitPredictions,
    *,
    builder_config: str | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    train_split: str = "train",
    batch_size: int = 32,
    counterfactual_pairs: int = 300,
):
    """Every shortcut test the scored split allows (`tf_fracture.evaluate.shortcuts`), with the evaluation's bootstrap.

    Returns:
        A `ShortcutTests`; a test the data do not allow is a `Skipped` with its reason.
    """
    from tf_fracture.configs.datasets import get_dataset_spec
    from tf_fracture.data.sources import load_split, split_metadata, tfds_builder
    from tf_fracture.evaluate import shortcuts
    from tf_fracture.evaluate.metadata_baseline import has_metadata_flags
    from tf_fracture.evaluate.predict import model_preprocessing, predict_logits

    dataset, test = evaluation.dataset, evaluation.predictions
    spec = get_dataset_spec(dataset)
    where = {"builder_config": builder_config, "data_dir": data_dir, "manual_dir": manual_dir}
    options = {"n_resamples": evaluation.settings.get("n_resamples", 2000), "seed": evaluation.settings.get("seed", 0)}
    units = bootstrap_units(test)
    config = model_preprocessing(model)

    train_metadata = None
    if has_metadata_flags(dataset):
        if train_split in (test.split, validation.split):
            train_metadata = f"the train split {train_split!r} is the scored or the validation split"
        else:
            try:
                train_metadata = split_metadata(dataset, load_split(dataset, train_split, **where, decode_images=False))
            except ValueError as error:  # no such split: the baseline says so
                train_metadata = f"cannot read the train split {train_split!r}: {error}"
    strata, baseline = shortcuts.metadata_tests(
        dataset, validation, test, train_metadata, train_split=train_split, groups=units, **options
    )

    if spec.boxes_feature:
        examples = load_split(dataset, test.split, **where).as_numpy_iterator()
        localisation, occlusion = shortcuts.box_tests(
            model, examples, config, boxes_feature=spec.boxes_feature, batch_size=batch_size, units=units, **options
        )
    else:
        reason = f"{dataset} has no fracture boxes"
        localisation, occlusion = shortcuts.Skipped(reason), shortcuts.Skipped(reason)

    builder = None
    if dataset == "synthetic_xray":  # its builder config says how the scenes were rendered
        builder = tfds_builder(dataset, builder_config=builder_config, data_dir=data_dir).builder_config
    counterfactual = shortcuts.counterfactual_pairs_test(
        lambda images: predict_logits(model, images, batch_size),
        dataset,
        test,
        builder,
        config,
        max_pairs=counterfactual_pairs,
        batch_size=batch_size,
        **options,
    )
    return shortcuts.ShortcutTests(strata, baseline, localisation, occlusion, counterfactual)


def load_predictions(
    model,
    dataset: str,
    split: str,
    *,
    builder_config: str | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    batch_size: int = 32,
    predict_fn=None,
) -> SplitPredictions:
    """A model's predictions on a TFDS split with the split's metadata (studies, body parts, filenames).

    The images are preprocessed with the model's own ``preprocessing``. Studies (``groups``) are set
    only for a dataset whose spec names a ``group_feature`` (MURA); the bootstrap then resamples
    whole studies, elsewhere whole patients (``patients``).
    """
    from tf_fracture.configs.datasets import get_dataset_spec
    from tf_fracture.data.sources import load_split, split_metadata
    from tf_fracture.evaluate.predict import predict_with_labels

    spec = get_dataset_spec(dataset)
    where = {"builder_config": builder_config, "data_dir": data_dir, "manual_dir": manual_dir}
    scores, labels = (predict_fn or predict_with_labels)(model, load_split(dataset, split, **where), None, batch_size)
    meta = split_metadata(dataset, load_split(dataset, split, **where, decode_images=False))
    if not np.array_equal(np.asarray(meta["labels"]).astype(np.int64), labels):
        raise RuntimeError(
            f"{dataset}/{split}: the metadata's labels are not in the order of the predictions; "
            "the split must be read in a fixed order (load_split reads with shuffle_files=False)."
        )
    body_parts = None
    if "body_parts" in meta:
        names = spec.body_part_names
        body_parts = np.asarray([names[i] if 0 <= i < len(names) else "none" for i in meta["body_parts"]], dtype=object)
    groups = np.asarray(meta["groups"], dtype=object)
    metadata = {key: value for key, value in meta.items() if key not in ("labels", "filenames", "groups")}
    return SplitPredictions(
        scores=scores,
        labels=labels,
        filenames=np.asarray(meta["filenames"], dtype=object),
        groups=groups if spec.group_feature else None,
        patients=None if spec.group_feature else groups,
        body_parts=body_parts,
        dataset=f"{dataset}/{builder_config or spec.default_builder_config}",
        split=split,
        metadata=metadata,
    )


def class_names_of(dataset: str, builder_config: str | None, data_dir: str | None) -> tuple[str, str]:
    """The dataset's label names (TFDS ``label`` ClassLabel), e.g. ("non_fractured", "fractured")."""
    try:
        from tf_fracture.data.sources import tfds_builder

        names = tfds_builder(dataset, builder_config=builder_config, data_dir=data_dir).info.features["label"].names
        if len(names) == 2:
            return (str(names[0]), str(names[1]))
    except Exception:  # (names are cosmetic: fall back to the generic ones)
        pass
    return DEFAULT_CLASS_NAMES


__all__ = [
    "DEFAULT_TARGET_SENSITIVITY",
    "LevelEvaluation",
    "RunEvaluation",
    "default_out_dir",
    "describe_run",
    "evaluate_predictions",
    "evaluate_run",
    "load_predictions",
    "read_run_config",
    "run_shortcut_tests",
]
