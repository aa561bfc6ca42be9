"""Input checks and JSON conversion shared by the metric modules (NumPy only)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np


def _as_vector(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    # Keras predicts shape (n, 1): accept it, but nothing else that is not a vector.
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array (or shape (n, 1)), but got shape {array.shape}.")
    return array


def _where(mask: np.ndarray, limit: int = 10) -> str:
    index = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in index[:limit])
    return f"[{shown}{', ...' if index.size > limit else ''}]"


def check_binary(
    labels: Any, scores: Any, *, probabilities: bool = False, what: str = "metrics"
) -> tuple[np.ndarray, np.ndarray]:
    """Validates binary labels and scores and returns them as (int64, float64) vectors.

    Args:
        labels: 0/1 labels (int, float or bool); 1 is the positive (fracture / injury) class.
        scores: one score per item; higher means more likely positive.
        probabilities: if True, scores must lie in [0, 1].
        what: named in error messages.

    Raises:
        ValueError: empty input, lengths that differ, labels other than 0/1, NaN or infinite
            scores (with how many and where), or probabilities outside [0, 1].
    """
    y = _as_vector(labels, "labels")
    s = _as_vector(scores, "scores")
    if y.size == 0 or s.size == 0:
        raise ValueError(f"{what}: got {y.size} labels and {s.size} scores; there is nothing to evaluate.")
    if y.size != s.size:
        raise ValueError(f"{what}: got {y.size} labels but {s.size} scores; give one score per label.")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{what}: labels must be 0/1 numbers, but got dtype {y.dtype}.")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        values = np.unique(y[bad])[:5].tolist()
        raise ValueError(
            f"{what}: labels must be 0 (negative) or 1 (positive, fracture); found {int(bad.sum())} other "
            f"labels (values {values}) at indices {_where(bad)}."
        )
    if not np.issubdtype(s.dtype, np.number) or np.iscomplexobj(s):
        raise ValueError(f"{what}: scores must be real numbers, but got dtype {s.dtype}.")
    s = s.astype(np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        raise ValueError(
            f"{what}: {int(bad.sum())} of {s.size} scores are NaN or infinite, at indices {_where(bad)}. "
            "Check the model's outputs (a diverged training gives NaN) before computing metrics."
        )
    if probabilities:
        bad = (s < 0) | (s > 1)
        if bad.any():
            raise ValueError(
                f"{what}: scores must be probabilities in [0, 1], but {int(bad.sum())} lie outside, at indices "
                f"{_where(bad)}. Pass sigmoid(logits), not logits."
            )
    return y.astype(np.int64), s


def check_both_classes(labels: np.ndarray, what: str) -> None:
    n_positive = int(labels.sum())
    if n_positive == 0 or n_positive == labels.size:
        only = 1 if n_positive else 0
        raise ValueError(
            f"{what} needs both classes, but all {labels.size} labels are {only}: AUROC, average precision and "
            f"a {'specificity' if only else 'sensitivity'} are undefined. Evaluate on a split with both classes."
        )


def fingerprint(labels: np.ndarray, scores: np.ndarray) -> str:
    """SHA-256 of the (labels, scores) pair: recognises the same data passed twice."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(scores, dtype=np.float64).tobytes())
    return digest.hexdigest()


def to_jsonable(value: Any) -> Any:
    """Plain Python containers and numbers; non-finite floats (e.g. the ROC curve's +inf) become None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value
