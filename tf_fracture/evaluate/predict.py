"""Scores of a model on a dataset split, with the metadata that the evaluation groups them by.

The images are preprocessed exactly as the model's training images were: with the ``PreprocessConfig``
the model carries (``model.preprocessing``), never with a guess. TensorFlow loads on the first
prediction, not on import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tf_fracture.data.preprocess import PreprocessConfig

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class SplitPredictions:
    """A model's fracture probabilities on one split, item by item in dataset order.

    Attributes:
        scores: sigmoid of the logit, float64 in [0, 1].
        labels: 0/1, 1 = fracture / injury / abnormal.
        filenames: each item's file name as the dataset records it.
        groups: the item's study (MURA ``study_id``), or None where the dataset has no studies; studies
            are scored by the mean of their images' probabilities.
        patients: the item's patient where the dataset has no studies (the bootstrap resamples whole
            patients), or None.
        body_parts: the item's body part (MURA ``body_part``, FracAtlas's first region) or None.
        dataset, split: where the items come from, e.g. ``"mura/grouped_val"``, ``"test"``.
        metadata: further per-item columns of the split (`split_metadata`'s: FracAtlas' regions, views,
            hardware, ...; fracture ``boxes``), for the shortcut tests; None where not read.
    """

    scores: np.ndarray
    labels: np.ndarray
    filenames: np.ndarray | None = None
    groups: np.ndarray | None = None
    patients: np.ndarray | None = None
    body_parts: np.ndarray | None = None
    dataset: str = ""
    split: str = ""
    metadata: Mapping[str, np.ndarray] | None = None

    def __post_init__(self):
        n = np.asarray(self.scores).shape[0]
        columns = {name: getattr(self, name) for name in ("labels", "filenames", "groups", "patients", "body_parts")}
        columns.update({f"metadata[{k!r}]": v for k, v in (self.metadata or {}).items()})
        for name, value in columns.items():
            if value is not None and len(value) != n:
                raise ValueError(
                    f"SplitPredictions: {len(value)} {name} for {n} scores; give one per item "
                    "(in the order of the scores)."
                )

    def __len__(self) -> int:
        return int(np.asarray(self.scores).shape[0])


def sigmoid(logits: Any) -> np.ndarray:
    """Probabilities from logits in float64, without overflow for large |logit|."""
    z = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    e = np.exp(z[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def model_preprocessing(model) -> PreprocessConfig:
    """The ``PreprocessConfig`` a model was trained with (stored in the ``.keras`` file).

    Raises:
        ValueError: the model records no preprocessing (built without ``preprocessing=``).
    """
    stored = getattr(model, "preprocessing", None)
    if not stored:
        raise ValueError(
            f"Model {getattr(model, 'name', '?')!r} carries no preprocessing, so the images it expects are unknown. "
            "Build it with build_classifier(..., preprocessing=PreprocessConfig(...)) (tf_fracture.train does), "
            "or pass `preprocess_config` explicitly."
        )
    fields = {f.name for f in dataclasses.fields(PreprocessConfig)}
    unknown = sorted(set(stored) - fields)
    if unknown:
        raise ValueError(f"The model's preprocessing has unknown fields {unknown}; expected some of {sorted(fields)}.")
    return PreprocessConfig(**stored)


def predict_with_labels(
    model, dataset_split: tf.data.Dataset, preprocess_config: PreprocessConfig | None = None, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, labels)`` of ``model`` on a TFDS split of examples (dicts with ``image`` and ``label``)."""
    from tf_fracture.data.pipeline import evaluation_pipeline  # loads TensorFlow

    config = _resolve_preprocessing(model, preprocess_config)
    batches = evaluation_pipeline(dataset_split, config, batch_size=batch_size, cache=None)
    logits, labels = [], []
    for images, batch_labels in batches:
        out = model.predict_on_batch(images)
        out = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
        if out.ndim != 2 or out.shape[1] != 1:
            raise ValueError(
                f"Expected the model to give one fracture logit per image, shape (batch, 1), but got {out.shape}."
            )
        logits.append(out[:, 0])
        labels.append(batch_labels.numpy())
    if not logits:
        raise ValueError("The split holds no examples: nothing to predict.")
    return sigmoid(np.concatenate(logits)), np.concatenate(labels).astype(np.int64)


def predict_logits(model, images, batch_size: int = 32) -> np.ndarray:
    """The fracture logits of model inputs already preprocessed, float64 ``(B,)``.

    Args:
        model: a single-logit model (`FractureClassifier`, `FusionModel`).
        images: ``(B, S, S)`` or ``(B, S, S, 1)``, values in [0, 255] (``preprocess``'s output).
        batch_size: images per forward pass.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"Expected a non-empty batch (B, S, S) or (B, S, S, 1), but got shape {images.shape}.")
    logits = []
    for start in range(0, len(images), batch_size):
        out = model.predict_on_batch(images[start : start + batch_size])
        out = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
        if out.ndim != 2 or out.shape[1] != 1:
            raise ValueError(
                f"Expected the model to give one fracture logit per image, shape (batch, 1), but got {out.shape}."
            )
        logits.append(out[:, 0].astype(np.float64))
    return np.concatenate(logits)


def predict(
    model, dataset_split: tf.data.Dataset, preprocess_config: PreprocessConfig | None = None, batch_size: int = 32
) -> np.ndarray:
    """Fracture probabilities (sigmoid of the logit), float64, in the split's order.

    Args:
        model: a `FractureClassifier` or `FusionModel` (one float32 logit per image).
        dataset_split: TFDS examples (dicts with ``image`` and ``label``), unbatched.
        preprocess_config: None (default) uses the model's own ``preprocessing``; one given must equal it.
        batch_size: images per forward pass.
    """
    return predict_with_labels(model, dataset_split, preprocess_config, batch_size)[0]


def _resolve_preprocessing(model, preprocess_config: PreprocessConfig | None) -> PreprocessConfig:
    stored = getattr(model, "preprocessing", None)
    if preprocess_config is None:
        return model_preprocessing(model)
    if not isinstance(preprocess_config, PreprocessConfig):
        raise ValueError(
            f"Expected `preprocess_config` to be a PreprocessConfig, got {type(preprocess_config).__name__}."
        )
    if stored and model_preprocessing(model) != preprocess_config:
        raise ValueError(
            f"`preprocess_config` {preprocess_config} differs from the preprocessing the model was trained with "
            f"{model_preprocessing(model)}; evaluate with the model's own (pass None)."
        )
    return preprocess_config
