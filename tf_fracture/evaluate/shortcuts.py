"""Shortcut tests: is the model's score about the fracture, or about something that travels with it?

Run by `tf_fracture.evaluate.evaluate_run` on the scored split wherever the data allow each test, and
written into ``metrics.json`` (``shortcut_tests``) and the report; a test the data do not allow is
kept with the reason (``{"skipped": "..."}``).

- ``strata``: the AUROC within each body region / body part, and (FracAtlas) within the images
  without hardware, where those shortcuts are constant; the metadata baseline's beside it.
- ``metadata_baseline``: a logistic regression on the dataset's metadata flags alone, fitted on the
  train split (`tf_fracture.evaluate.metadata_baseline`), scored on the same images as the model,
  with the paired bootstrap difference of the two AUROCs.
- ``localisation``: the box hit rate of the model's own CAM and of Grad-CAM on the fractured images
  with a box, beside chance (the boxes' area share) (`tf_fracture.explain`).
- ``occlusion``: the score of each fractured image with its box masked out and with all but its
  box masked out (`tf_fracture.evaluate.occlusion`).
- ``counterfactual``: synthetic_xray only: each scene rendered with and without its fracture
  (`tf_fracture.evaluate.counterfactual`).

Cost: the metadata tests are NumPy on the split's metadata (the train split's read without decoding
images); localisation and occlusion take, per fractured image with a box, the heatmaps (the own CAM's
forward pass, Grad-CAM's forward and backward) and three forward passes (the original and its two
occluded copies, all through the same call so that an unchanged input gives the same logit); the
counterfactual pairs take two renders and two forward passes per pair. Import-light: TensorFlow
loads when a model is run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tf_fracture import metrics
from tf_fracture.evaluate.counterfactual import MAX_PAIRS
from tf_fracture.evaluate.metadata_baseline import MetadataBaseline, fit_metadata_baseline, metadata_features
from tf_fracture.evaluate.occlusion import OcclusionTest
from tf_fracture.evaluate.predict import SplitPredictions
from tf_fracture.metrics._checks import to_jsonable

TESTS = ("strata", "metadata_baseline", "localisation", "occlusion", "counterfactual")
NO_HARDWARE = "without hardware"


@dataclass(frozen=True)
class Skipped:
    """A shortcut test the data do not allow, and why."""

    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"skipped": self.reason}


@dataclass(frozen=True)
class StrataTest:
    """The model's AUROC within each stratum, and the metadata baseline's (None without a baseline).

    Attributes:
        model: ``{stratum: StratumAuroc}`` of the model's probabilities.
        baseline: the same of the metadata baseline's, or None.
        definition: how the strata are drawn.
    """

    model: dict[str, metrics.StratumAuroc]
    baseline: dict[str, metrics.StratumAuroc] | None
    definition: str

    def to_dict(self) -> dict[str, Any]:
        rows = {}
        for name, stratum in self.model.items():
            baseline = None if self.baseline is None else self.baseline[name].auroc
            rows[name] = {**stratum.to_dict(), "baseline_auroc": to_jsonable(baseline)}
        return {"skipped": None, "definition": self.definition, "strata": rows}


@dataclass(frozen=True)
class BaselineTest:
    """The metadata baseline fitted on the train split, against the model on the same test images.

    Attributes:
        baseline: the fit (features, C, coefficients).
        comparison: ``AUROC(model) - AUROC(baseline)`` with a paired bootstrap interval (``auroc_a`` is
            the model's, ``auroc_b`` the baseline's).
        train_split, validation_split: where it was fitted and where its C was chosen.
        scores: its probability per test image (not in the JSON).
    """

    baseline: MetadataBaseline
    comparison: metrics.AurocDifference
    train_split: str
    validation_split: str
    scores: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "skipped": None,
                "model": "logistic regression (L2, class_weight='balanced'), C chosen by validation AUROC",
                "features": list(self.baseline.feature_names),
                "train_split": self.train_split,
                "n_train": self.baseline.n_train,
                "validation_split": self.validation_split,
                "C": self.baseline.C,
                "validation_auroc_by_C": self.baseline.validation_auroc_by_C,
                "coefficients": self.baseline.coefficients,
                "intercept": self.baseline.model.intercept,
                "auroc": self.comparison.auroc_b,
                "model_auroc": self.comparison.auroc_a,
                "model_minus_baseline": self.comparison.difference,
                "n": self.comparison.n,
                "n_positive": self.comparison.n_positive,
                "bootstrap": self.comparison.bootstrap,
            }
        )


@dataclass(frozen=True)
class LocalisationTest:
    """The box hit rate of each heatmap on the fractured images with a box.

    Attributes:
        rates: ``{heatmap: BoxHitRate}``: ``"cam"`` (the model's own CAM) and Grad-CAM per backbone.
        hit_rate: ``{heatmap: Estimate}``: the hit rate with a bootstrap interval over images.
        above_chance: ``{heatmap: Estimate}``: mean of (hit - the image's box-area share), with its interval.
        without_boxes: fractured images without a box (left out).
        cam_skipped: why there is no own CAM (a fusion model), or None.
    """

    rates: dict[str, Any]
    hit_rate: dict[str, metrics.Estimate]
    above_chance: dict[str, metrics.Estimate]
    without_boxes: int
    cam_skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        maps = {}
        for name, rate in self.rates.items():
            maps[name] = {
                **rate.to_dict(),
                "hit_rate": self.hit_rate[name],
                "above_chance": self.above_chance[name],
            }
        return to_jsonable(
            {
                "skipped": None,
                "maps": maps,
                "without_boxes": self.without_boxes,
                "cam_skipped": self.cam_skipped,
                "definition": (
                    "hit: the heatmap's argmax (upsampled to the model input) lies in one of the image's fracture "
                    "boxes (moved as the image is resized); chance_rate: mean share of the input inside a box; "
                    "above_chance: mean of hit - the image's box share; median_peak_distance_px: the median "
                    "distance from the peak to the nearest box in the input's pixels (0 inside); 'cam' is the "
                    "model's own class activation map, the other keys Grad-CAM of that backbone"
                ),
            }
        )


@dataclass(frozen=True)
class ShortcutTests:
    """Every shortcut test of one evaluation, each a result or `Skipped`; ``to_dict()`` goes into metrics.json."""

    strata: Any
    metadata_baseline: Any
    localisation: Any
    occlusion: Any
    counterfactual: Any

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).to_dict() for name in TESTS}


# --- metadata: strata and the baseline (NumPy) --------------------------------------------------------


def strata_of(dataset: str, test: SplitPredictions) -> dict[str, np.ndarray] | str:
    """``{stratum: mask}`` of the scored split, or why it has none.

    Body parts (MURA's body part, FracAtlas' first listed region, as in the per-body-part table) and,
    for FracAtlas, the images without hardware.
    """
    strata = {}
    if test.body_parts is not None:
        parts = np.asarray(test.body_parts).astype(str)
        what = "region" if dataset == "fracatlas" else "body part"
        for name in np.unique(parts).tolist():
            strata[f"{what} {name}"] = parts == name
    if test.metadata is not None and "hardware" in test.metadata:
        strata[NO_HARDWARE] = ~np.asarray(test.metadata["hardware"], bool)
    if not strata:
        return f"{dataset} has no body parts or hardware flags to stratify by"
    return strata


def _definition(dataset: str) -> str:
    regions = (
        "region: the image's first listed region (as the per-body-part table)"
        if dataset == "fracatlas"
        else "body part: the image's"
    )
    text = f"the AUROC of the images in each stratum; {regions}"
    if dataset == "fracatlas":
        text += f"; {NO_HARDWARE!r}: hardware flag false"
    return text


def metadata_tests(
    dataset: str,
    validation: SplitPredictions,
    test: SplitPredictions,
    train_metadata: Mapping[str, Any] | str | None,
    *,
    train_split: str = "train",
    n_resamples: int = 2000,
    seed: int = 0,
    groups=None,
) -> tuple[StrataTest | Skipped, BaselineTest | Skipped]:
    """The strata and the metadata baseline of one scored split (NumPy).

    Args:
        dataset: the dataset's name (which metadata it has).
        validation, test: predictions with their ``metadata`` (`load_predictions` reads it).
        train_metadata: `split_metadata` of the train split (``labels`` and the flags), or the reason
            there is none (the baseline is then skipped with it).
        train_split: its name, for the report.
        n_resamples, seed: the bootstrap.
        groups: the bootstrap's units on the test split (patients, studies), or None.
    """
    options = {"n_resamples": n_resamples, "seed": seed, "groups": groups}
    baseline: BaselineTest | Skipped
    features = metadata_features(dataset, test.metadata or {}) if test.metadata is not None else None
    if features is None:
        baseline = Skipped("the scored split's metadata was not read")
    elif isinstance(features, str):
        baseline = Skipped(features)
    elif isinstance(train_metadata, str):
        baseline = Skipped(train_metadata)
    elif train_metadata is None or validation.metadata is None:
        baseline = Skipped(f"no {train_split!r} or validation split metadata to fit the baseline on")
    else:
        train_features = metadata_features(dataset, train_metadata)
        fitted = fit_metadata_baseline(
            train_features,
            np.asarray(train_metadata["labels"]),
            metadata_features(dataset, validation.metadata),
            validation.labels,
        )
        scores = fitted.scores(features)
        comparison = metrics.paired_auroc_difference(test.labels, test.scores, scores, **options)
        baseline = BaselineTest(fitted, comparison, train_split, validation.split or "validation", scores)

    strata = strata_of(dataset, test)
    if isinstance(strata, str):
        return Skipped(strata), baseline
    model = metrics.stratified_auroc(test.labels, test.scores, strata, **options)
    base = None
    if isinstance(baseline, BaselineTest):
        base = metrics.stratified_auroc(test.labels, baseline.scores, strata, **options)
    return StrataTest(model, base, _definition(dataset)), baseline


# --- localisation and occlusion (the model on the fractured images with a box) --------------------------


def box_tests(
    model,
    examples,
    config,
    *,
    boxes_feature: str,
    batch_size: int = 16,
    n_resamples: int = 2000,
    seed: int = 0,
    units: np.ndarray | None = None,
) -> tuple[LocalisationTest | Skipped, OcclusionTest | Skipped]:
    """Box hit rates (own CAM, Grad-CAM) and occlusion over the fractured examples with a box.

    Args:
        model: the evaluated model.
        examples: the scored split's examples, in its order (dicts of NumPy values: ``image``, ``label``
            and ``boxes_feature``).
        config: the model's preprocessing.
        boxes_feature: the examples' box feature.
        batch_size: images per pass.
        n_resamples, seed: the bootstrap.
        units: the bootstrap's unit (patient) per example of the split, or None (images).
    """
    from tf_fracture.evaluate.occlusion import occlusion_inputs, occlusion_test
    from tf_fracture.evaluate.predict import predict_logits
    from tf_fracture.explain.boxes import box_hit_rate, boxes_after_resize
    from tf_fracture.explain.gradcam import cam_model as grad_cam_model
    from tf_fracture.explain.report import Explainer, heatmaps_of

    explainer = Explainer(model, grad_cam_model(model), config, getattr(model, "name", "model"))
    maps = {name: [] for name in explainer.heatmap_names}
    boxes_at_input, logits, group_of = [], {"original": [], "box_removed": [], "box_only": []}, []
    area, without_boxes = [], 0

    def run(batch):
        inputs = [item[1] for item in batch]
        heatmaps, _ = heatmaps_of(explainer, np.stack([i.original for i in inputs]), batch_size=batch_size)
        for name, batch_maps in heatmaps.items():
            maps[name].extend(batch_maps)
        for key in logits:
            logits[key].append(predict_logits(model, np.stack([getattr(i, key) for i in inputs]), batch_size))
        for index, item, boxes, shape in batch:
            boxes_at_input.append(boxes_after_resize(boxes, shape, config.resize_mode))
            if units is not None:
                group_of.append(units[index])
            area.append(item.box[item.content].mean())

    batch = []
    for index, example in enumerate(examples):
        if int(example["label"]) != 1:
            continue
        boxes = np.asarray(example[boxes_feature], np.float64).reshape(-1, 4)
        if not len(boxes):
            without_boxes += 1
            continue
        image = np.asarray(example["image"])
        image = image[..., 0] if image.ndim == 3 else image
        batch.append((index, occlusion_inputs(image, boxes, config), boxes, image.shape))
        if len(batch) == batch_size:
            run(batch)
            batch = []
    if batch:
        run(batch)
    if not boxes_at_input:
        reason = f"no fractured image with a fracture box in the scored split ({without_boxes} without a box)"
        return Skipped(reason), Skipped(reason)

    groups = None if units is None else np.asarray(group_of)
    options = {"n_resamples": n_resamples, "seed": seed, "groups": groups}
    rates = {name: box_hit_rate(m, boxes_at_input) for name, m in maps.items()}
    hit_rate, above = {}, {}
    for name, rate in rates.items():
        hits = np.asarray(rate.hits, np.float64)
        hit_rate[name] = metrics.mean_estimate(hits, **options)
        above[name] = metrics.mean_estimate(hits - np.asarray(rate.chances), **options)
    localisation = LocalisationTest(rates, hit_rate, above, without_boxes, explainer.own_cam_skipped)
    occlusion = occlusion_test(
        *(np.concatenate(logits[k]) for k in ("original", "box_removed", "box_only")),
        box_area=float(np.mean(area)),
        **options,
    )
    return localisation, occlusion


# --- counterfactual pairs (synthetic_xray) ------------------------------------------------------------


def counterfactual_pairs_test(
    logits_of: Callable[[np.ndarray], np.ndarray],
    dataset: str,
    test: SplitPredictions,
    builder_config,
    config,
    *,
    max_pairs: int = MAX_PAIRS,
    batch_size: int = 16,
    n_resamples: int = 2000,
    seed: int = 0,
):
    """The counterfactual pairs of the scored split's scenes, or `Skipped` where the dataset cannot render them.

    Args:
        logits_of: model inputs -> logits.
        dataset: only ``synthetic_xray`` renders a scene without its fracture.
        test: the scored split's predictions (its ``patients`` are the scenes' patient ids).
        builder_config: the TFDS builder config (its ``image_size`` and ``seed``).
        config: the model's preprocessing.
        max_pairs: at most this many pairs (the split's first scenes); 0 skips the test.
    """
    from tf_fracture.data.synthetic import label_for_index
    from tf_fracture.evaluate.counterfactual import counterfactual_test, split_indices

    if dataset != "synthetic_xray":
        return Skipped(f"only synthetic_xray can render a scene without its fracture; {dataset} is real data")
    if not max_pairs:
        return Skipped("turned off (--counterfactual-pairs 0)")
    patients = test.patients if test.patients is not None else (test.metadata or {}).get("patient_id")
    if patients is None:
        return Skipped("the scored split's patient ids (which name each scene) were not read")
    image_size, render_seed = int(builder_config.image_size), int(builder_config.seed)
    indices = split_indices(patients, render_seed)
    if isinstance(indices, str):
        return Skipped(indices)
    labels = [label_for_index(i, render_seed) for i in indices]
    if labels != np.asarray(test.labels).tolist():
        return Skipped("the split's labels are not those of the scenes its patient ids name: not the same renderer")
    return counterfactual_test(
        logits_of,
        indices[:max_pairs],
        image_size=image_size,
        seed=render_seed,
        config=config,
        batch_size=batch_size,
        n_resamples=n_resamples,
        bootstrap_seed=seed,
    )
