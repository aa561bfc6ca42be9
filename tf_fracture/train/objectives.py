"""What a training minimises and reports: the losses, their weights and the metrics given to ``compile``.

A single-logit classifier: binary cross-entropy and the training AUROC. A `MultiTaskClassifier` adds
the body-part head's loss and accuracy, and the guided training's localisation loss on its CAM.
"""

from __future__ import annotations

import keras

from tf_fracture.models.multitask import (
    BODY_PART,
    CAM,
    FRACTURE,
    IGNORED_PART,
    MultiTaskClassifier,
    multitask_loss,
)
from tf_fracture.train.losses import LocalizationLoss


def compile_arguments(model: keras.Model, aux_loss_weight: float, model_config=None) -> dict:
    """``loss`` (+ ``loss_weights``) and ``metrics`` for ``compile``: the loss is always on logits.

    A single-logit model: binary cross-entropy and the training AUROC (``"auroc"``). A
    `MultiTaskClassifier`: `multitask_loss` (fracture + ``aux_loss_weight`` x body part), the AUROC
    on the fracture logit (Keras logs it as ``"fracture_auroc"``) and the body-part accuracy over
    images with a known part (``"body_part_accuracy"``). With a ``"cam"`` output (guided training),
    ``model_config.localization_weight`` x `LocalizationLoss` of ``model_config.localization_loss`` with
    ``model_config.localization_cells`` (on a CBAM gate's logits, ``model.localization_map ==
    "cbam_gate"``, its evidence is the gate).
    """
    auroc = keras.metrics.AUC(from_logits=True, name="auroc")
    if not is_multitask(model):
        return {"loss": keras.losses.BinaryCrossentropy(from_logits=True), "metrics": [auroc]}
    losses = multitask_loss(aux_loss_weight)
    loss = {FRACTURE: losses["loss"][FRACTURE]}
    weights = {FRACTURE: 1.0}
    metrics = {FRACTURE: [auroc]}
    if model.num_parts:
        loss[BODY_PART], weights[BODY_PART] = losses["loss"][BODY_PART], losses["loss_weights"][BODY_PART]
        metrics[BODY_PART] = [KnownPartAccuracy(name="accuracy")]
    if model.cam:
        if model_config is None:
            raise ValueError("A model with a 'cam' output needs `model_config` (its localisation loss and weight).")
        evidence = "sigmoid" if getattr(model, "localization_map", "cam") == "cbam_gate" else "relu"
        loss[CAM] = LocalizationLoss(
            model_config.localization_loss, evidence, model_config.localization_cells, name="localization_loss"
        )
        weights[CAM] = float(model_config.localization_weight)
    return {"loss": loss, "loss_weights": weights, "metrics": metrics}


def is_multitask(model: keras.Model) -> bool:
    """Whether ``model`` has the auxiliary body-part head (its outputs are a dict)."""
    return isinstance(model, MultiTaskClassifier)


@keras.saving.register_keras_serializable(package="tf_fracture")
class KnownPartAccuracy(keras.metrics.Metric):
    """Accuracy of body-part logits over the images whose part is known (target ``-1`` is left out).

    Keras' ``SparseCategoricalAccuracy`` counts ``-1`` targets as errors (FracAtlas images without a
    region), which would cap the accuracy below 1 for a perfect head.
    """

    def __init__(self, name="known_part_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.correct = self.add_variable((), initializer="zeros", name="correct")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        known = keras.ops.cast(keras.ops.not_equal(y_true, IGNORED_PART), self.dtype)
        predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "int32")
        hits = keras.ops.cast(keras.ops.equal(predicted, y_true), self.dtype) * known
        self.correct.assign_add(keras.ops.sum(hits))
        self.count.assign_add(keras.ops.sum(known))

    def result(self):
        return keras.ops.divide_no_nan(self.correct, self.count)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)
