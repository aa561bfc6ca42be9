"""Class weights of a training set, and their form for a multi-task model (per-image sample weights)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tf_fracture.configs.experiment import CLASS_WEIGHTS
from tf_fracture.models.multitask import FRACTURE


def with_fracture_class_weights(dataset, weights: Mapping[int, float]):
    """Multi-task batches ``(images, targets)`` -> ``(images, targets, sample_weights)``: the class weights
    on the fracture loss alone (the body-part loss unweighted).

    Keras' ``class_weight`` refuses models with more than one output; per-output sample weights
    give the fracture loss exactly what ``class_weight`` gives a single-logit model
    (``weights[label]`` per image, same reduction).
    """
    import tensorflow as tf

    table = tf.constant([float(weights[0]), float(weights[1])], tf.float32)

    def weigh(images, targets):
        labels = tf.cast(targets[FRACTURE], tf.int32)
        per_image = tf.gather(table, labels)
        others = {name: tf.ones_like(per_image) for name in targets if name != FRACTURE}
        return images, targets, {FRACTURE: per_image, **others}

    return dataset.map(weigh, num_parallel_calls=tf.data.AUTOTUNE)


def class_weights(labels, mode: str) -> dict[int, float] | None:
    """Keras ``class_weight`` for ``mode``: None for ``"none"``; ``"balanced"`` is ``n / (2 n_c)``.

    ``"balanced"`` is scikit-learn's ``compute_class_weight("balanced")``: each class weighs as much
    in the loss as the other, whatever their counts.
    """
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"Expected `train.class_weights` to be one of {CLASS_WEIGHTS}, but got {mode!r}.")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    counts = np.bincount(labels, minlength=2)
    if labels.size == 0 or np.any(counts[:2] == 0) or counts.size > 2:
        raise ValueError(
            "Balanced class weights need 0/1 labels with both classes, but the training labels count "
            f"{counts.tolist()} per class."
        )
    return {c: float(labels.size / (2.0 * counts[c])) for c in (0, 1)}
