"""A metadata-only baseline: how far the dataset's metadata flags alone get, on the model's own split.

FracAtlas' fractured and intact radiographs differ in body region, view and hardware; MURA's
abnormality rate differs by body part. A logistic regression on those flags alone, fitted on the
train split, scores the test split without seeing a pixel: a CNN whose AUROC is not clearly above
it may have learnt the flags. The features and the fit are those of
``benchmarks/fracatlas_baselines.py`` (scikit-learn's ``LogisticRegression(C,
class_weight="balanced")`` with C chosen by validation AUROC), written in NumPy here because
scikit-learn is not a dependency of the library; the tests check both against scikit-learn and the
benchmark.

Features per dataset (never the ones that carry the label: FracAtlas' ``fracture_count`` and boxes):
- ``fracatlas``: regions and views as multi-hot indicators, then mixed, hardware, multiscan (10).
- ``mura``: the body part, one-hot (7).
- others (``synthetic_xray``, ``elbow``): none; the baseline is skipped and says why.

NumPy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tf_fracture import metrics
from tf_fracture.configs.datasets import get_dataset_spec

FRACATLAS_REGIONS = ("hand", "leg", "hip", "shoulder")  # the builder's `regions` ClassLabel names, in order
FRACATLAS_VIEWS = ("frontal", "lateral", "oblique")  # the builder's `views` ClassLabel names, in order
FRACATLAS_FLAGS = ("mixed", "hardware", "multiscan")
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # benchmarks/fracatlas_baselines.py's


def has_metadata_flags(dataset: str) -> bool:
    """Whether `metadata_features` has features for ``dataset`` (FracAtlas, MURA)."""
    return dataset in ("fracatlas", "mura")


@dataclass(frozen=True)
class MetadataFeatures:
    """Per-item feature rows and their column names."""

    values: np.ndarray
    names: tuple[str, ...]


def metadata_features(dataset: str, metadata: Mapping[str, Any]) -> MetadataFeatures | str:
    """The baseline's features of one split, or the reason there are none.

    Args:
        dataset: the dataset's name (``fracatlas``, ``mura``, ...).
        metadata: per-item columns as `tf_fracture.data.sources.split_metadata` returns them (for
            FracAtlas ``regions`` and ``views`` as lists of class indices, ``mixed``, ``hardware``,
            ``multiscan``; for MURA ``body_parts`` as class indices).

    Returns:
        `MetadataFeatures` (float64), or a string saying why the dataset has no metadata flags.
    """
    if dataset == "fracatlas":
        missing = [k for k in ("regions", "views", *FRACATLAS_FLAGS) if k not in metadata]
        if missing:
            raise ValueError(f"FracAtlas metadata lacks {missing}; read it with split_metadata('fracatlas', ...).")
        regions, views = metadata["regions"], metadata["views"]
        values = np.zeros((len(regions), len(FRACATLAS_REGIONS) + len(FRACATLAS_VIEWS) + len(FRACATLAS_FLAGS)))
        for i, (item_regions, item_views) in enumerate(zip(regions, views, strict=True)):
            values[i, np.asarray(item_regions, np.int64).reshape(-1)] = 1.0
            values[i, len(FRACATLAS_REGIONS) + np.asarray(item_views, np.int64).reshape(-1)] = 1.0
        for j, flag in enumerate(FRACATLAS_FLAGS):
            values[:, len(FRACATLAS_REGIONS) + len(FRACATLAS_VIEWS) + j] = np.asarray(metadata[flag], bool)
        names = (*(f"region_{r}" for r in FRACATLAS_REGIONS), *(f"view_{v}" for v in FRACATLAS_VIEWS), *FRACATLAS_FLAGS)
        return MetadataFeatures(values, names)
    if dataset == "mura":
        if "body_parts" not in metadata:
            raise ValueError("MURA metadata lacks `body_parts`; read it with split_metadata('mura', ...).")
        parts = get_dataset_spec("mura").body_part_names
        index = np.asarray(metadata["body_parts"], np.int64).reshape(-1)
        values = np.zeros((index.size, len(parts)))
        known = (index >= 0) & (index < len(parts))
        values[np.flatnonzero(known), index[known]] = 1.0
        return MetadataFeatures(values, tuple(f"body_part_{p}" for p in parts))
    return f"{dataset} has no metadata flags to fit a baseline on" + (
        " (its nuisance variables are drawn independently of the label by construction, and "
        "fracture_kind is the label itself)"
        if dataset == "synthetic_xray"
        else ""
    )


@dataclass(frozen=True)
class LogisticModel:
    """``sigmoid(x @ coef + intercept)``: a fitted L2-regularised logistic regression."""

    coef: np.ndarray
    intercept: float

    def decision_function(self, x) -> np.ndarray:
        return np.asarray(x, np.float64) @ self.coef + self.intercept

    def predict_proba(self, x) -> np.ndarray:
        """P(label 1) per row."""
        return _sigmoid(self.decision_function(x))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def fit_logistic_regression(
    x, y, *, C: float = 1.0, class_weight: str | None = "balanced", max_iter: int = 100, tol: float = 1e-10
) -> LogisticModel:
    """Fits scikit-learn's ``LogisticRegression(C=C, class_weight=...)`` (L2, unpenalised intercept) by Newton's method.

    Minimises ``C * sum_i s_i * logloss_i + ||coef||^2 / 2`` with ``s_i = n / (2 * n_class(i))`` for
    ``class_weight="balanced"`` (else 1), the objective of scikit-learn's lbfgs solver; Newton steps
    with a backtracking line search, until the largest gradient entry is below ``tol`` times the
    sample weight total.

    Raises:
        ValueError: a label other than 0/1, one class only, rows of another count than the labels,
            ``C`` not positive.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.size:
        raise ValueError(f"Expected features (n, k) and n labels, but got shapes {x.shape} and {y.shape}.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("The baseline's labels must be 0 or 1.")
    y = y.astype(np.float64)
    n_positive = int(y.sum())
    if n_positive in (0, y.size):
        raise ValueError(f"The baseline needs both classes in its training data, but all {y.size} labels are equal.")
    if not C > 0:
        raise ValueError(f"Expected `C` > 0, but got C={C!r}.")
    if class_weight not in ("balanced", None):
        raise ValueError(f"Expected `class_weight` to be 'balanced' or None, but got {class_weight!r}.")
    weights = np.ones(y.size)
    if class_weight == "balanced":
        weights = np.where(y == 1, y.size / (2.0 * n_positive), y.size / (2.0 * (y.size - n_positive)))
    design = np.hstack([x, np.ones((y.size, 1))])
    penalty = np.ones(design.shape[1])
    penalty[-1] = 0.0  # the intercept is not penalised

    def objective(theta):
        z = design @ theta
        return C * weights @ (np.logaddexp(0.0, z) - y * z) + 0.5 * penalty @ theta**2

    theta = np.zeros(design.shape[1])
    value = objective(theta)
    for _ in range(max_iter):
        p = _sigmoid(design @ theta)
        gradient = C * design.T @ (weights * (p - y)) + penalty * theta
        if np.abs(gradient).max() <= tol * weights.sum():
            break
        hessian = C * (design.T * (weights * p * (1.0 - p))) @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-10:
            candidate = theta - size * step
            new_value = objective(candidate)
            if new_value <= value - 1e-4 * size * gradient @ step:
                break
            size /= 2.0
        if size <= 1e-10:  # no decrease left: at the optimum up to rounding
            break
        theta, value = candidate, new_value
    return LogisticModel(theta[:-1].copy(), float(theta[-1]))


@dataclass(frozen=True)
class MetadataBaseline:
    """The fitted baseline: its features, its C (chosen on validation) and its coefficients."""

    model: LogisticModel
    feature_names: tuple[str, ...]
    C: float
    validation_auroc_by_C: dict[str, float] = field(default_factory=dict)
    n_train: int = 0

    def scores(self, features: MetadataFeatures) -> np.ndarray:
        if features.names != self.feature_names:
            raise ValueError(f"Expected the features {self.feature_names}, but got {features.names}.")
        return self.model.predict_proba(features.values)

    @property
    def coefficients(self) -> dict[str, float]:
        return {name: float(c) for name, c in zip(self.feature_names, self.model.coef, strict=True)}


def fit_metadata_baseline(
    train: MetadataFeatures,
    train_labels,
    validation: MetadataFeatures,
    validation_labels,
    *,
    grid: Sequence[float] = C_GRID,
) -> MetadataBaseline:
    """A balanced logistic regression on ``train``, its C the one with the best validation AUROC.

    Ties go to the smaller C (the more regularised fit), as in ``benchmarks/fracatlas_baselines.py``.
    """
    aurocs, fitted = {}, {}
    for c in grid:
        fitted[c] = fit_logistic_regression(train.values, train_labels, C=c)
        aurocs[c] = metrics.roc_auc(validation_labels, fitted[c].predict_proba(validation.values))
    best = max(grid, key=lambda c: (aurocs[c], -c))
    return MetadataBaseline(
        fitted[best], train.names, float(best), {str(c): float(a) for c, a in aurocs.items()}, len(train_labels)
    )
