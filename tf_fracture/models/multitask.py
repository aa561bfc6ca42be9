"""An auxiliary body-part head beside the fracture logit (multi-task), sharing the classifier's layers.

API (for the training code):

    from tf_fracture.models.multitask import BODY_PART, FRACTURE, multitask_loss, with_body_part_head
    from tf_fracture.data.sources import split_metadata
    from tf_fracture.configs import get_dataset_spec

    spec = get_dataset_spec(config.data.dataset)              # spec.body_part_feature is not None
    model = with_body_part_head(classifier, len(spec.body_part_names), part_names=spec.body_part_names)
    model.compile(optimizer, **multitask_loss(config.model.aux_loss_weight),
                  metrics={FRACTURE: [keras.metrics.AUC(from_logits=True, name="auroc")]})
    parts = split_metadata(name, load_split(config.data, split, decode_images=False))["body_parts"]
    train = training_pipeline(split_ds, preprocess, pipeline_config, augment, source=..., targets={BODY_PART: parts})
    val = evaluation_pipeline(val_ds, preprocess, batch_size, cache, source=..., targets={BODY_PART: val_parts})
    model.fit(train.epochs(start), validation_data=val, ...)  # batches (images, {"fracture": y, "body_part": part})
    model.classifier.save("RUN/model.keras")                  # the single-logit classifier alone

* ``with_body_part_head(classifier, num_parts, *, part_names=(), name=None) -> MultiTaskClassifier``: a
  functional model on the classifier's own input with outputs ``{"fracture": logit (B, 1) float32,
  "body_part": logits (B, num_parts) float32}``. The body-part head is one Dense layer on the backbone's
  pooled ``"features"``; every other layer IS the classifier's (shared, not copied), so training the
  multi-task model trains ``model.classifier``, which saves alone with its one logit (the run folder's
  ``model.keras``, read by evaluate/explain/export unchanged).
* ``multitask_loss(aux_loss_weight) -> {"loss": {...}, "loss_weights": {...}}`` for ``compile``: binary
  cross-entropy on the fracture logit (weight 1) and sparse categorical cross-entropy on the body part
  (weight ``aux_loss_weight``), which ignores part ``-1`` (FracAtlas images with no region).
* The whole multi-task model saves and reloads too (``tf_fracture.models.load_model``, safe mode), e.g.
  in Keras' ``BackupAndRestore`` state.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tf_fracture.layers.cbam import CBAM, SpatialGateLogits
from tf_fracture.models.classifier import CAM_LAYER, FractureClassifier, pooled_features
from tf_fracture.validation import check_choice, check_int, check_number

__all__ = ["BODY_PART", "CAM", "FRACTURE", "MultiTaskClassifier", "multitask_loss", "with_body_part_head", "with_cam"]

FRACTURE = "fracture"  # the output (and target) names; tf_fracture.data.pipeline.FRACTURE_TARGET matches
BODY_PART = "body_part"
CAM = CAM_LAYER  # the class activation map as an output, for guided training (tf_fracture.train.losses)
IGNORED_PART = -1  # a target of -1 (an image without a known body part) adds no body-part loss
# What guided training supervises: the classifier's own CAM, or the spatial gate (as logits) of its last
# CBAM block, the method's own attention (tf_fracture.train.losses.LocalizationLoss's `evidence`).
LOCALIZATION_MAPS = ("cam", "cbam_gate")


@keras.saving.register_keras_serializable(package="tf_fracture")
class MultiTaskClassifier(keras.Model):
    """A :class:`FractureClassifier` with further outputs for training: a dict of ``"fracture"`` and the others.

    The further outputs: a body-part head on the pooled features (``num_parts`` classes), and/or the
    classifier's own class activation map ``"cam"`` ``(B, h, w, 1)`` (``cam=True``), which guided
    training supervises with the fracture's box (`tf_fracture.train.losses.LocalizationLoss`).
    Both are read from the classifier's layers, so training this model trains ``.classifier``.

    Args:
        classifier: the single-logit classifier; its layers become this model's (shared).
        num_parts: number of body-part classes, or 0 for no body-part head.
        part_names: their names in label order (kept in the config for reports), or empty.
        cam: add the class activation map as the output ``"cam"``.
        localization_map: what the output ``"cam"`` is: ``"cam"``, the classifier's own class
            activation map, or ``"cbam_gate"``, the logits of the spatial gate of the backbone's last
            CBAM block (the gate that block multiplies its input by: the method's own attention).

    Example:
        >>> model = with_body_part_head(build_classifier("mobilenetv3", "small", weights=None), 7)
        >>> sorted(model(images))
        ['body_part', 'fracture']
        >>> model.classifier.output_shape
        (None, 1)
    """

    def __init__(
        self,
        classifier: FractureClassifier,
        num_parts: int = 0,
        part_names: Sequence[str] = (),
        cam: bool = False,
        localization_map: str = "cam",
        **kwargs,
    ):
        if not isinstance(classifier, FractureClassifier):
            raise ValueError(
                "Expected `classifier` to be a FractureClassifier (see tf_fracture.models.build_classifier), "
                f"but got {type(classifier).__name__}."
            )
        if num_parts != 0:
            check_int("num_parts", num_parts, minimum=2)
        part_names = [str(p) for p in part_names]
        if part_names and len(part_names) != num_parts:
            raise ValueError(f"Expected {num_parts} `part_names`, but got {len(part_names)}: {part_names}.")
        if not isinstance(cam, bool):
            raise ValueError(f"Expected `cam` to be True or False, but got `cam={cam!r}`.")
        if not num_parts and not cam:
            raise ValueError("A MultiTaskClassifier needs a body-part head (`num_parts` >= 2) or `cam=True`.")
        check_choice("localization_map", localization_map, LOCALIZATION_MAPS)
        outputs = {FRACTURE: classifier.output}
        if num_parts:
            features = pooled_features(classifier)
            outputs[BODY_PART] = keras.layers.Dense(num_parts, name=f"{BODY_PART}_logits", dtype="float32")(features)
        if cam:
            outputs[CAM] = classifier.cam if localization_map == "cam" else _last_cbam_gate(classifier)
        name = kwargs.pop("name", None) or f"{classifier.name.removesuffix('_classifier')}_multitask"
        trainable = kwargs.pop("trainable", True)
        super().__init__(inputs=classifier.input, outputs=outputs, name=name, **kwargs)
        self.trainable = trainable
        self.classifier = classifier
        self.num_parts = num_parts
        self.part_names = part_names
        self.cam = cam
        self.localization_map = localization_map

    @property
    def preprocessing(self):
        return self.classifier.preprocessing

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "num_parts": self.num_parts,
            "part_names": list(self.part_names),
            "cam": self.cam,
            "localization_map": self.localization_map,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["classifier"], dict):
            config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)


def with_body_part_head(
    classifier: FractureClassifier, num_parts: int, *, part_names: Sequence[str] = (), name: str | None = None
) -> MultiTaskClassifier:
    """``classifier`` with an auxiliary body-part head (see the module's docstring for the training API)."""
    return MultiTaskClassifier(classifier, num_parts, part_names, **({"name": name} if name else {}))


def with_cam(
    classifier: FractureClassifier,
    *,
    num_parts: int = 0,
    part_names: Sequence[str] = (),
    localization_map: str = "cam",
) -> MultiTaskClassifier:
    """``classifier`` with its class activation map as the output ``"cam"`` (and a body-part head if ``num_parts``)."""
    return MultiTaskClassifier(classifier, num_parts, part_names, cam=True, localization_map=localization_map)


def _last_cbam_gate(classifier: FractureClassifier) -> keras.KerasTensor:
    """The logits ``(B, h, w, 1)`` of the spatial gate of the classifier's last CBAM block, from its own call.

    Read from the block's input and output in the graph (`SpatialGateLogits`), so the gate is the one
    the forward pass applied, BatchNorm's batch statistics included, and no layer runs twice.
    """
    blocks = [layer for layer in classifier.layers if isinstance(layer, CBAM)]
    if not blocks:
        raise ValueError(
            f"{classifier.name!r} has no CBAM block, so `localization_map='cbam_gate'` has no gate to supervise: "
            "build it with attention (--set model.attention=true) or use localization_map='cam'."
        )
    block = blocks[-1]
    channel_gated = block.channel_gate(block.input)  # stateless (an MLP): the very tensor the spatial gate saw
    return SpatialGateLogits(name=f"{block.name}_gate_logits", dtype="float32")([channel_gated, block.output])


def multitask_loss(aux_loss_weight: float) -> dict:
    """``compile`` keyword arguments: the fracture loss (weight 1) + ``aux_loss_weight`` x the body-part loss."""
    check_number("aux_loss_weight", aux_loss_weight, 0.0)
    return {
        "loss": {
            FRACTURE: keras.losses.BinaryCrossentropy(from_logits=True),
            BODY_PART: keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORED_PART),
        },
        "loss_weights": {FRACTURE: 1.0, BODY_PART: float(aux_loss_weight)},
    }
