"""Losses computed in NumPy, as the training computes them in Keras: for the validation logs."""

from __future__ import annotations

import math

import numpy as np

# A body part that is not known (Keras' ``ignore_class``): `tf_fracture.models.multitask.IGNORED_PART`.
IGNORED_PART = -1


def binary_cross_entropy(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of ``logits`` (stable form, as Keras' ``from_logits=True``)."""
    z = np.asarray(logits, np.float64).reshape(-1)
    y = np.asarray(labels, np.float64).reshape(-1)
    return float(np.mean(np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def body_part_scores(parts: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """Mean sparse categorical cross-entropy of ``logits`` (N, P) and accuracy, over the known parts (not -1).

    As the training's body-part loss (Keras' ``ignore_class=-1``: the mean over known parts). NaN
    for both when no part is known.
    """
    parts = np.asarray(parts).reshape(-1).astype(np.int64)
    z = np.asarray(logits, np.float64).reshape(parts.size, -1)
    known = parts != IGNORED_PART
    if not np.any(known):
        return math.nan, math.nan
    z, parts = z[known], parts[known]
    top = z.max(axis=1, keepdims=True)
    log_softmax = z - top - np.log(np.sum(np.exp(z - top), axis=1, keepdims=True))
    loss = -log_softmax[np.arange(parts.size), parts]
    return float(np.mean(loss)), float(np.mean(np.argmax(z, axis=1) == parts))
