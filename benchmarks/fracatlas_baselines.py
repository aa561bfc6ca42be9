"""How far do shortcuts get on FracAtlas? Baselines without a CNN, on the CNN's own split.

FracAtlas' fractured and non-fractured radiographs differ in body region, view and hardware, so
a classifier can score well without seeing a fracture. On exactly the split the CNN is trained
and tested on (the TFDS builder ``fracatlas``), this script fits:

1. ``metadata``: a logistic regression on the builder's metadata flags alone (body regions and
   views as multi-hot indicators, mixed, hardware, multiscan). ``fracture_count`` and
   ``fracture_boxes`` are left out on purpose: a non-zero count or a box *is* the label.
2. ``hog_svm``: the method's preprocessing (``tf_fracture.data.preprocess``: resize, CLAHE clip
   2.5 on a 4x4 grid, unsharp mask) at a small size, HOG features, PCA, an RBF SVM.
3. ``hog_svm+metadata``: the same SVM on the HOG components and the metadata flags together.

Each is fitted on ``train``; its hyper-parameter (C) is chosen by AUROC on ``validation``, and so
is the Youden threshold (``tf_fracture.metrics.choose_thresholds``). Everything is reported on
``test`` by ``tf_fracture.metrics``: AUROC and average precision with 95% bootstrap intervals,
sensitivity and specificity at the validation Youden threshold, and the AUROC within each body
region (the image's first region, as the dataset registry's body part; a region whose test images
are of one class only is skipped and said so).

Run (builds the TFDS dataset on first use, about a minute; then 1-2 minutes on a 2-core CPU):
    TF_FRACTURE_FRACATLAS=../shared/fracatlas/FracAtlas \\
        .venv/bin/python benchmarks/fracatlas_baselines.py --json fracatlas_baselines.json
``--data-dir DIR`` reads (or builds) the TFDS data elsewhere than TFDS' default ``~/tensorflow_datasets``.

A CNN's scores join the same table with ``--scores NAME=FILE.csv`` (columns ``split, filename,
score``; both the validation and the test split; repeatable) or ``--scores NAME=RUN`` (a run folder
evaluated on both splits). Each such row is also compared with the HOG + SVM row, image by image:
the AUROC difference with a paired bootstrap interval, on all test images and within each region
(a second table, and ``paired_against`` in the JSON). Or from Python:
``study_rows(name, split_data["validation"], val_scores, split_data["test"], test_scores)`` then
``markdown_table(rows)``.

HOG: OpenCV 5 moved ``cv2.HOGDescriptor`` to opencv_contrib (``xobjdetect``, opencv/opencv#25198),
so :func:`hog_features` computes Dalal and Triggs' descriptor in NumPy with OpenCV's default
geometry (8 px cells, 2x2-cell blocks, 8 px stride, 9 unsigned orientation bins, L2-Hys).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tf_fracture import metrics
from tf_fracture.data.preprocess import PreprocessConfig, preprocess

REGIONS = ("hand", "leg", "hip", "shoulder")
VIEWS = ("frontal", "lateral", "oblique")
FLAGS = ("mixed", "hardware", "multiscan")
# The builder's features that encode the label itself: a fractured image has a count > 0 and boxes.
LEAKY_FEATURES = ("fracture_count", "fracture_boxes")
METADATA_FEATURE_NAMES = (*(f"region_{r}" for r in REGIONS), *(f"view_{v}" for v in VIEWS), *FLAGS)
NO_REGION = "none"
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
SVM_C_GRID = (0.3, 1.0, 3.0, 10.0)
FEW = 10  # a region with fewer test images of either class gets a warning under the table


@dataclass(frozen=True)
class SplitData:
    """One split of FracAtlas reduced to what the baselines need, in the split's order.

    Attributes:
        filenames: ``images/<folder>/<id>.jpg`` per image (the join key for other models' scores).
        labels: 1 = fractured.
        regions, views: the builder's ``regions`` / ``views`` class indices per image (lists).
        flags: ``(N, 3)`` bool, the builder's mixed, hardware, multiscan.
        images: ``(N, S, S)`` uint8 preprocessed images, or None where not loaded.
    """

    filenames: np.ndarray
    labels: np.ndarray
    regions: tuple[tuple[int, ...], ...]
    views: tuple[tuple[int, ...], ...]
    flags: np.ndarray
    images: np.ndarray | None = None

    def body_region(self) -> np.ndarray:
        """The first listed region per image (the dataset registry's body part), ``"none"`` if none."""
        return np.array([REGIONS[r[0]] if len(r) else NO_REGION for r in self.regions], dtype=object)


def split_from_examples(examples: Iterable[Mapping[str, Any]], image_config: PreprocessConfig | None) -> SplitData:
    """Reads TFDS ``fracatlas`` examples (NumPy dicts); preprocesses each image at once, keeping only that."""
    filenames, labels, regions, views, flags, images = [], [], [], [], [], []
    for example in examples:
        name = example["filename"]
        filenames.append(name.decode() if isinstance(name, bytes) else str(name))
        labels.append(int(example["label"]))
        regions.append(tuple(int(r) for r in np.asarray(example["regions"]).reshape(-1)))
        views.append(tuple(int(v) for v in np.asarray(example["views"]).reshape(-1)))
        flags.append([bool(example[f]) for f in FLAGS])
        if image_config is not None:
            images.append(preprocess(np.asarray(example["image"])[:, :, 0], image_config))
    return SplitData(
        filenames=np.array(filenames, dtype=object),
        labels=np.array(labels, dtype=np.int64),
        regions=tuple(regions),
        views=tuple(views),
        flags=np.array(flags, dtype=bool).reshape(-1, len(FLAGS)),
        images=np.stack(images) if images else None,
    )


def metadata_features(split: SplitData) -> np.ndarray:
    """``(N, 10)`` float32: regions and views as multi-hot indicators, then mixed, hardware, multiscan.

    Column names are :data:`METADATA_FEATURE_NAMES`. ``fracture_count`` and ``fracture_boxes`` are
    never used: they are only non-zero on fractured images, so they would give the label away.
    """
    features = np.zeros((len(split.labels), len(METADATA_FEATURE_NAMES)), dtype=np.float32)
    for i, (regions, views) in enumerate(zip(split.regions, split.views, strict=True)):
        features[i, list(regions)] = 1.0
        features[i, [len(REGIONS) + v for v in views]] = 1.0
    features[:, len(REGIONS) + len(VIEWS) :] = split.flags
    return features


@dataclass(frozen=True)
class HogConfig:
    """Dalal-Triggs HOG geometry (OpenCV's defaults): square cells and blocks, stride in pixels."""

    cell: int = 8
    block_cells: int = 2
    stride_cells: int = 1
    bins: int = 9
    clip: float = 0.2

    def length(self, size: int) -> int:
        """Descriptor length for a ``size`` x ``size`` image: blocks per side^2 * cells per block * bins."""
        cells = size // self.cell
        blocks = (cells - self.block_cells) // self.stride_cells + 1
        return blocks * blocks * self.block_cells**2 * self.bins


def hog_features(images: np.ndarray, config: HogConfig = HogConfig(), *, chunk: int = 256) -> np.ndarray:
    """HOG descriptors of ``(N, S, S)`` uint8 images, ``(N, config.length(S))`` float32.

    Gradients by centred differences (``[-1, 0, 1]``, one-sided at the border), unsigned orientation
    in [0, 180) split linearly between the two nearest of ``bins`` bin centres and weighted by the
    magnitude, summed per cell; each block of ``block_cells`` x ``block_cells`` cells is L2-normalised,
    clipped at ``clip`` and normalised again (L2-Hys). Unlike OpenCV there is no Gaussian window over
    a block and no spatial interpolation between cells. Blocks in row-major order, then cells, then bins.
    ``chunk`` images at a time keep memory flat.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
        raise ValueError(f"hog_features expects (N, S, S) uint8 images, but got {images.dtype} {images.shape}.")
    if images.shape[1] // config.cell < config.block_cells:
        raise ValueError(
            f"hog_features: {images.shape[1]} px images hold fewer than {config.block_cells} cells of {config.cell} px "
            "per side; use larger images or smaller cells."
        )
    parts = [_hog(images[i : i + chunk], config) for i in range(0, len(images), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, config.length(images.shape[1])), np.float32)


def _hog(images: np.ndarray, config: HogConfig) -> np.ndarray:
    n, size = images.shape[0], images.shape[1]
    cells = size // config.cell
    crop = cells * config.cell
    gy, gx = np.gradient(images.astype(np.float32), axis=(1, 2))  # (next - previous) / 2 inside
    magnitude = 2.0 * np.hypot(gx, gy)[:, :crop, :crop]  # [-1, 0, 1] as OpenCV: twice np.gradient
    angle = np.rad2deg(np.arctan2(gy, gx))[:, :crop, :crop] % 180.0
    position = angle / (180.0 / config.bins) - 0.5  # bin k is centred at (k + 0.5) * 180 / bins
    low = np.floor(position)
    upper_weight = position - low
    low_bin = low.astype(np.int64) % config.bins
    cell_of = np.arange(crop) // config.cell
    cell_index = (cell_of[:, None] * cells + cell_of[None, :]) * config.bins
    length = cells * cells * config.bins
    histograms = np.zeros((n, length), dtype=np.float64)
    for bins, weight in ((low_bin, 1.0 - upper_weight), ((low_bin + 1) % config.bins, upper_weight)):
        index = (cell_index[None] + bins).reshape(n, -1) + (np.arange(n) * length)[:, None]
        histograms += np.bincount(index.ravel(), (magnitude * weight).ravel(), minlength=n * length).reshape(n, length)
    histograms = histograms.reshape(n, cells, cells, config.bins)
    span, step = config.block_cells, config.stride_cells
    starts = range(0, cells - span + 1, step)
    blocks = np.stack([histograms[:, y : y + span, x : x + span].reshape(n, -1) for y in starts for x in starts], 1)
    blocks = blocks / np.sqrt((blocks**2).sum(-1, keepdims=True) + 1e-12)
    blocks = np.minimum(blocks, config.clip)
    blocks = blocks / np.sqrt((blocks**2).sum(-1, keepdims=True) + 1e-12)
    return blocks.reshape(n, -1).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50.0, 50.0)))


@dataclass(frozen=True)
class FittedBaseline:
    """A fitted classifier, its feature transform (or None) and how its C was chosen.

    ``scores`` is the sigmoid of the decision value: the logistic regression's probability, and for
    the SVM a monotone map into [0, 1] that keeps its ranking (0.5 is its own boundary), as
    ``tf_fracture.metrics`` takes probabilities.
    """

    model: Any
    transform: Any
    selection: dict[str, Any]

    def scores(self, features: np.ndarray) -> np.ndarray:
        if self.transform is not None:
            features = self.transform.transform(features)
        return _sigmoid(self.model.decision_function(features))


def fit_logistic(train_x, train_y, val_x, val_y, *, seed: int = 0) -> FittedBaseline:
    """Logistic regression (balanced classes), C chosen by validation AUROC."""
    from sklearn.linear_model import LogisticRegression

    def make(c):
        return LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)

    return _choose_c(make, C_GRID, None, train_x, train_y, val_x, val_y)


def fit_svm(train_x, train_y, val_x, val_y, *, components: int = 128, seed: int = 0, passthrough: int = 0):
    """Standardise, PCA to ``components`` (whitened), RBF SVM (balanced); C chosen by validation AUROC.

    The last ``passthrough`` columns (metadata flags) skip the PCA and are only standardised.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    width = train_x.shape[1]
    reduce = make_pipeline(StandardScaler(), PCA(components, whiten=True, random_state=seed))
    transform = ColumnTransformer(
        [("hog", reduce, list(range(width - passthrough)))]
        + ([("metadata", StandardScaler(), list(range(width - passthrough, width)))] if passthrough else [])
    ).fit(train_x)  # fitted once: only the SVM changes with C

    def make(c):
        return SVC(C=c, kernel="rbf", gamma="scale", class_weight="balanced", random_state=seed)

    return _choose_c(make, SVM_C_GRID, transform, train_x, train_y, val_x, val_y)


def _choose_c(make, grid, transform, train_x, train_y, val_x, val_y) -> FittedBaseline:
    train_z = train_x if transform is None else transform.transform(train_x)
    aurocs, fitted = {}, {}
    for c in grid:
        fitted[c] = FittedBaseline(make(c).fit(train_z, train_y), transform, {})
        aurocs[c] = metrics.roc_auc(val_y, fitted[c].scores(val_x))
    best = max(grid, key=lambda c: (aurocs[c], -c))  # ties: the smaller C (more regularised)
    return FittedBaseline(
        fitted[best].model, transform, {"C": best, "validation_auroc_by_C": {str(c): a for c, a in aurocs.items()}}
    )


def study_rows(
    name: str,
    validation: SplitData,
    val_scores: Sequence[float],
    test: SplitData,
    test_scores: Sequence[float],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One table row: test AUROC / AP with CIs, Youden sens/spec (threshold from validation), AUROC per region.

    Any model's probabilities on the two splits (in each split's order) make a row: the baselines'
    and the CNN's. Returns a JSON-able dict (``markdown_table`` prints a list of them).
    """
    thresholds = metrics.choose_thresholds(validation.labels, np.asarray(val_scores, dtype=np.float64))
    test_scores = np.asarray(test_scores, dtype=np.float64)
    result = metrics.evaluate(test.labels, test_scores, thresholds, n_resamples=n_resamples, seed=seed)
    subgroups = metrics.evaluate_subgroups(
        test.body_region(), test.labels, test_scores, thresholds, n_resamples=n_resamples, seed=seed
    )
    youden = result.at_thresholds["youden"]
    return {
        "name": name,
        "n": result.n,
        "n_positive": result.n_positive,
        "auroc": result.ranking["auroc"].to_dict(),
        "average_precision": result.ranking["average_precision"].to_dict(),
        "youden_threshold": youden.threshold,
        "sensitivity": youden.metrics["recall"].to_dict(),
        "specificity": youden.metrics["specificity"].to_dict(),
        "regions": {
            region: {
                "n": sub.n,
                "n_positive": sub.n_positive,
                "auroc": None if sub.result is None else sub.result.ranking["auroc"].to_dict(),
                "skipped": sub.skipped,
            }
            for region, sub in subgroups.items()
        },
        **(dict(extra) if extra else {}),
    }


def paired_against(
    test: SplitData,
    scores: Sequence[float],
    reference: Sequence[float],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """``AUROC(scores) - AUROC(reference)`` on the same test images, overall and within each region.

    Each difference has a paired bootstrap interval (`metrics.paired_auroc_difference`: both scorings
    on the same resampled images), so a model's lead over a baseline within a small region is read
    from its own interval, not from two overlapping ones. Keys: ``"all"`` and each region; a region
    with one class only maps to None.
    """
    scores, reference = np.asarray(scores, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    regions = test.body_region()
    selections = {"all": np.ones(len(test.labels), bool)}
    selections.update({region: regions == region for region in sorted(set(regions), key=_region_order)})
    out: dict[str, Any] = {}
    for name, mask in selections.items():
        labels = test.labels[mask]
        if labels.min() == labels.max():
            out[name] = None
            continue
        difference = metrics.paired_auroc_difference(
            labels, scores[mask], reference[mask], n_resamples=n_resamples, seed=seed
        )
        out[name] = difference.to_dict()
    return out


def _region_order(region: str) -> tuple[bool, str]:
    return (region not in REGIONS, region)


def _few(counts: Mapping[str, Any]) -> bool:
    """Whether a subgroup (``n``, ``n_positive``) has fewer than ``FEW`` images of either class."""
    return min(counts["n_positive"], counts["n"] - counts["n_positive"]) < FEW


def _ci(estimate: Mapping[str, Any]) -> str:
    if estimate.get("ci_low") is None:
        return f"{estimate['value']:.3f}"
    return f"{estimate['value']:.3f} [{estimate['ci_low']:.3f}, {estimate['ci_high']:.3f}]"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of :func:`study_rows` as a Markdown table (per-region AUROC in the last columns)."""
    regions = sorted({r for row in rows for r in row["regions"]}, key=_region_order)
    first = rows[0]["regions"]
    region_heads = [f"AUROC {r} (n={first[r]['n']}, {first[r]['n_positive']} fx)" for r in regions]
    head = ["Model", "AUROC [95% CI]", "AP [95% CI]", "Sens @Youden", "Spec @Youden", *region_heads]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [
            row["name"],
            _ci(row["auroc"]),
            _ci(row["average_precision"]),
            _ci(row["sensitivity"]),
            _ci(row["specificity"]),
        ]
        for r in regions:
            sub = row["regions"].get(r)
            cells.append("n/a" if sub is None or sub["auroc"] is None else f"{sub['auroc']['value']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    n, n_positive = rows[0]["n"], rows[0]["n_positive"]
    notes = [
        f"- test split: {n} images, {n_positive} fractured: a random score has AUROC 0.5 and AP about "
        f"{n_positive / n:.3f}; sensitivity and specificity at the Youden threshold chosen on validation."
    ]
    for r in regions:
        sub = first[r]
        if sub["skipped"]:
            notes.append(f"- {r}: skipped, {sub['skipped']}")
        elif _few(sub):
            notes.append(
                f"- {r}: {sub['n_positive']} fractured and {sub['n'] - sub['n_positive']} intact test images: "
                "its AUROC is too noisy to read."
            )
    return "\n".join([*lines, "", *notes, *_paired_table(rows)])


def _paired_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The rows' ``paired_against`` differences as a second table (nothing when no row has one)."""
    paired = [row for row in rows if row.get("paired_against")]
    if not paired:
        return []
    reference = paired[0]["paired_against"]["reference"]
    first = paired[0]["paired_against"]["auroc_difference"]
    # A region with few images of a class is left out here: its difference is noise (the note under the
    # first table says which).
    columns = [c for c in first if first[c] is not None and not _few(first[c])]
    head = ["Model", *("all images" if c == "all" else c for c in columns)]
    lines = [
        "",
        f"Paired against {reference} on the same test images: AUROC difference [95% paired bootstrap CI]; "
        "an interval above 0 says the model ranks better there.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for row in paired:
        differences = row["paired_against"]["auroc_difference"]
        cells = [row["name"]]
        for c in columns:
            cells.append("n/a" if differences.get(c) is None else _ci(differences[c]["difference"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def read_scores(path: str, splits: Mapping[str, SplitData]) -> dict[str, np.ndarray]:
    """A model's scores aligned with each split's order, from a CSV or from an evaluated run folder.

    ``path`` is either a CSV of ``split, filename, score`` rows, or a run folder that
    ``tf-fracture evaluate RUN --dataset fracatlas --split S`` has scored on the validation
    and the test split (its ``evaluation/fracatlas-<split>/predictions.csv``: ``filename, label,
    probability``).
    """
    by_split: dict[str, dict[str, float]] = {}
    if os.path.isdir(path):
        for split in ("validation", "test"):
            csv_path = os.path.join(path, "evaluation", f"fracatlas-{split}", "predictions.csv")
            if not os.path.isfile(csv_path):
                raise ValueError(
                    f"{path}: no {csv_path}; score the run on that split first: tf-fracture evaluate "
                    f"{path} --dataset fracatlas --split {split}"
                    + (" --allow-same-split" if split == "validation" else "")
                )
            with open(csv_path, newline="") as f:
                by_split[split] = {row["filename"]: float(row["probability"]) for row in csv.DictReader(f)}
    else:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                by_split.setdefault(row["split"], {})[row["filename"]] = float(row["score"])
    out = {}
    for split in ("validation", "test"):
        given = by_split.get(split, {})
        missing = [f for f in splits[split].filenames if f not in given]
        if missing:
            raise ValueError(
                f"{path}: no score for {len(missing)} of the {len(splits[split].filenames)} {split} images "
                f"(e.g. {missing[0]!r}); give a row `{split},<filename>,<score>` for every image of the split."
            )
        out[split] = np.array([given[f] for f in splits[split].filenames], dtype=np.float64)
    return out


def load_splits(data_dir: str | None, manual_dir: str | None, image_size: int) -> dict[str, SplitData]:
    """The ``fracatlas`` TFDS splits (built on first use from ``manual_dir``), images preprocessed."""
    import tensorflow_datasets as tfds

    import tf_fracture.datasets  # noqa: F401 - registers the builders

    kwargs = {}
    if manual_dir:
        kwargs["download_and_prepare_kwargs"] = {"download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)}
    config = PreprocessConfig(image_size, unsharp_kernel=5)  # the CNN's (DataConfig's) defaults at this size
    out = {}
    for split in ("train", "validation", "test"):
        start = time.perf_counter()
        ds = tfds.load("fracatlas", split=split, data_dir=data_dir, **kwargs)
        out[split] = split_from_examples(tfds.as_numpy(ds), config)
        print(f"{split}: {len(out[split].labels)} images in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return out


def run(
    splits: Mapping[str, SplitData],
    *,
    hog: HogConfig = HogConfig(),
    components: int = 128,
    n_resamples: int = 2000,
    seed: int = 0,
    scores: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> list[dict[str, Any]]:
    """Fits the baselines on train (C on validation) and returns one ``study_rows`` row each, then ``scores``'.

    A row of ``scores`` also carries ``paired_against``: :func:`paired_against` the HOG + SVM row.
    """
    train, val, test = splits["train"], splits["validation"], splits["test"]
    meta = {k: metadata_features(s) for k, s in splits.items()}
    rows = []

    test_scores_of = {}

    def add(name, fitted, features, **selection):
        val_scores, test_scores = fitted.scores(features["validation"]), fitted.scores(features["test"])
        test_scores_of[name] = test_scores
        extra = {"selection": {**fitted.selection, **selection}}
        rows.append(
            study_rows(name, val, val_scores, test, test_scores, n_resamples=n_resamples, seed=seed, extra=extra)
        )

    start = time.perf_counter()
    fitted = fit_logistic(meta["train"], train.labels, meta["validation"], val.labels, seed=seed)
    coefficients = dict(zip(METADATA_FEATURE_NAMES, (round(float(c), 3) for c in fitted.model.coef_[0]), strict=True))
    add("Logistic regression, metadata flags", fitted, meta, coefficients=coefficients)
    print(f"metadata: {time.perf_counter() - start:.1f} s", file=sys.stderr)

    start = time.perf_counter()
    hogs = {k: hog_features(s.images, hog) for k, s in splits.items()}
    print(f"HOG {hogs['train'].shape[1]}-d: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    size = train.images.shape[1]
    combined = {k: np.hstack([hogs[k], meta[k]]) for k in hogs}
    reference = f"HOG + RBF SVM ({size} px)"  # the row the given scores are paired against
    for name, features, passthrough in (
        (reference, hogs, 0),
        (f"HOG + metadata flags, RBF SVM ({size} px)", combined, meta["train"].shape[1]),
    ):
        start = time.perf_counter()
        fitted = fit_svm(
            features["train"], train.labels, features["validation"], val.labels,
            components=components, seed=seed, passthrough=passthrough,
        )  # fmt: skip
        add(name, fitted, features)
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    for name, given in (scores or {}).items():
        row = study_rows(name, val, given["validation"], test, given["test"], n_resamples=n_resamples, seed=seed)
        differences = paired_against(test, given["test"], test_scores_of[reference], n_resamples=n_resamples, seed=seed)
        rows.append({**row, "paired_against": {"reference": reference, "auroc_difference": differences}})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (default: TFDS' ~/tensorflow_datasets)")
    parser.add_argument(
        "--manual-dir",
        default=os.environ.get("TF_FRACTURE_FRACATLAS"),
        help="the extracted FracAtlas/ folder, to build the dataset on first use (default: $TF_FRACTURE_FRACATLAS)",
    )
    parser.add_argument("--image-size", type=int, default=128, help="side of the preprocessed image for HOG")
    parser.add_argument("--components", type=int, default=128, help="PCA components of the HOG features")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scores",
        action="append",
        default=[],
        metavar="NAME=CSV|RUN",
        help="another model's probabilities as a row: a CSV (split,filename,score for validation and test) "
        "or a run folder evaluated on both splits",
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="write the rows as JSON here")
    from tf_fracture import cli

    args = cli.parse_args(parser, argv)
    for item in args.scores:
        if "=" not in item:
            parser.error(f"--scores expects NAME=CSV, but got {item!r}.")
    start = time.perf_counter()
    splits = load_splits(args.data_dir, args.manual_dir, args.image_size)
    scores = {}
    for item in args.scores:
        name, path = item.split("=", 1)
        try:
            scores[name] = read_scores(path, splits)
        except (OSError, ValueError) as error:
            parser.exit(2, f"{parser.prog}: error: --scores {name}: {error}\n")
    rows = run(splits, components=args.components, n_resamples=args.resamples, seed=args.seed, scores=scores)
    print(markdown_table(rows))
    print(f"\n{time.perf_counter() - start:.0f} s in all", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            command = ["benchmarks/fracatlas_baselines.py", *(sys.argv[1:] if argv is None else argv)]
            json.dump({"command": command, "image_size": args.image_size, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
