"""The localisation loss of guided training: the classifier's CAM asked to sit on the fracture.

The classifier's logit is the spatial mean of its class activation map (`tf_fracture.models`), so
the map is what decides the score. With the fracture's place known (a box or mask, warped with its
image: `tf_fracture.data.targets`), a second loss asks that map to put its evidence there:

* ``"energy"`` (Rao et al., ICCV 2023, "Studying How to Efficiently and Effectively Guide Models
  with Explanations"): ``1 - sum(relu(cam) * box) / sum(relu(cam))``, the share of the map's
  positive evidence outside the box. It says nothing about the magnitude (the classification loss
  decides that), only where the evidence lies.
* ``"bce"``: binary cross-entropy of each map cell (as a logit) against whether it touches the box:
  a dense target, which also pushes the cells away from the box negative.

The map is the classifier's CAM (logits per position: its evidence is ``relu(cam)``), or, with
``evidence="sigmoid"``, the logits of a CBAM spatial gate (`tf_fracture.models.multitask`: its
evidence is the gate itself, ``sigmoid(logits)``, in (0, 1)); ``"bce"`` takes either as logits.

The target ``(B, S, S, 1)`` comes at the image's size and is reduced to the map's ``(h, w)``, in one
of two ways (``cells``):

* ``"touch"``: a cell is in the box (1) when any of its pixels is: the box grown to whole cells.
  Where boxes are as small as a cell or two (FracAtlas at 384 px, stride 16: a median box of 1.5
  cells a side), evidence anywhere in the grown box satisfies the loss, also in a cell that the box
  only grazes.
* ``"coverage"``: a cell counts by the share of its pixels in the box (in [0, 1]). The energy is
  then exactly Rao et al.'s energy at the image's resolution for the map upsampled by repeating
  each cell (sum over pixels of ``relu(cam) * box`` over the sum of ``relu(cam)``: every cell has
  as many pixels), so the loss prefers the cells most inside the box; ``"bce"`` takes the share as
  a soft label.

Images without a target (`NO_TARGET`, -1 everywhere: negatives, and datasets without boxes) add
nothing, and the loss is the mean over the images of the batch that have one (0 when none has).
"""

from __future__ import annotations

import keras
from keras import ops

from tf_fracture.validation import check_choice

LOCALIZATION_LOSSES = ("none", "energy", "bce")
EVIDENCE = ("relu", "sigmoid")
CELLS = ("touch", "coverage")
_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="tf_fracture")
class LocalizationLoss(keras.losses.Loss):
    """The localisation loss on a class activation map; ``y_true`` a target mask, ``y_pred`` the map.

    Args:
        kind: ``"energy"`` or ``"bce"`` (see the module's docstring).
        evidence: how the energy loss reads the map's positive evidence: ``"relu"`` (a CAM) or
            ``"sigmoid"`` (a gate's logits).
        cells: how the target is reduced to the map's cells: ``"touch"`` (1 where any pixel is in
            the box) or ``"coverage"`` (the share of the cell's pixels in the box).
        name: the loss's name.

    Example:
        >>> loss = LocalizationLoss("energy")
        >>> loss(targets, cams)  # targets (B, S, S, 1) in [0, 1] or -1; cams (B, h, w, 1)
    """

    def __init__(
        self, kind: str = "energy", evidence: str = "relu", cells: str = "touch", name: str | None = None, **kwargs
    ):
        check_choice("kind", kind, LOCALIZATION_LOSSES[1:])
        check_choice("evidence", evidence, EVIDENCE)
        check_choice("cells", cells, CELLS)
        super().__init__(name=name or f"{kind}_localization_loss", **kwargs)
        self.kind = kind
        self.evidence = evidence
        self.cells = cells

    def call(self, y_true, y_pred):
        cam = ops.cast(y_pred, "float32")
        targets = ops.cast(y_true, "float32")
        has = ops.cast(ops.max(targets, axis=(1, 2, 3)) >= 0.0, "float32")  # (B,)
        inside = cell_targets(ops.maximum(targets, 0.0), ops.shape(cam)[1:3], self.cells)  # (B, h, w, 1) in [0, 1]
        if self.kind == "energy":
            evidence = ops.relu(cam) if self.evidence == "relu" else ops.sigmoid(cam)
            share = ops.sum(evidence * inside, axis=(1, 2, 3)) / (ops.sum(evidence, axis=(1, 2, 3)) + _EPSILON)
            per_image = 1.0 - share
        else:
            per_image = ops.mean(
                ops.binary_crossentropy(inside, cam, from_logits=True), axis=(1, 2, 3)
            )  # fmt: skip
        per_image = ops.where(has > 0, per_image, 0.0)  # never a NaN from an image without a target
        # Keras divides the per-image values by the batch size: scaled so that the result is the
        # mean over the images that have a target.
        batch = ops.cast(ops.shape(has)[0], "float32")
        return per_image * has * batch / ops.maximum(ops.sum(has), 1.0)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "evidence": self.evidence, "cells": self.cells}


def cell_targets(targets, size, cells: str = "touch") -> keras.KerasTensor:
    """Target masks ``(B, S, S, 1)`` in [0, 1] -> ``(B, h, w, 1)`` per map cell.

    ``cells="touch"``: 1 where a cell of the map holds any target pixel, else 0. ``"coverage"``: the
    mean of the cell's target pixels (for a box mask, the share of the cell inside the box).
    """
    check_choice("cells", cells, CELLS)
    height, width = int(size[0]), int(size[1])
    # Area resampling gives each cell the mean of its pixels (cells of S/h pixels, also when S is not
    # a multiple of h).
    pooled = ops.image.resize(targets, (height, width), interpolation="area")
    if cells == "coverage":
        return ops.clip(pooled, 0.0, 1.0)
    return ops.cast(pooled > 1e-3, "float32")  # any mass at all puts the cell in the box
