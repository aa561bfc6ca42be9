"""The classifier's own class activation map (CAM) as a heatmap, beside Grad-CAM.

Every `FractureClassifier`'s logit is the spatial mean of its CAM (the layer ``"cam"``: a 1x1
convolution of the feature map, one logit per position; see `tf_fracture.models.cam_model`), so the
CAM is not an estimate of where the model looked: it is how much each position adds to the logit.
Here it is upsampled to the input like a Grad-CAM map (bilinear, min-max to [0, 1] per image, see
`upsample_and_scale`), so that the same peak and box hit rate apply to both. Unlike Grad-CAM it is
not rectified: its peak is the position that raises the logit most even where every position
lowers it.

A fusion model has no CAM of its own (its logit comes from an MLP on pooled features): it is
explained by Grad-CAM alone, and the reason is recorded.

Import-light: Keras loads on the first map (the report uses `title` without TensorFlow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

OWN_CAM = "cam"  # the key of the own CAM among the heatmaps (Grad-CAM's are the backbones' names)
TITLES = {OWN_CAM: "CAM (the model's own)"}


def own_cam_model(model: keras.Model) -> tuple[keras.Model | None, str | None]:
    """``(image -> [cam, logit], None)`` for a classifier, or ``(None, why not)`` for a model without a CAM."""
    from tf_fracture.models import cam_model
    from tf_fracture.models.multitask import MultiTaskClassifier

    if isinstance(model, MultiTaskClassifier):  # its fracture logit is its classifier's
        model = model.classifier
    try:
        return cam_model(model), None
    except ValueError as error:
        return None, str(error)


def class_activation_maps(cam: keras.Model, images, *, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The own CAM of each image at the input's size, and the logits.

    Args:
        cam: from `own_cam_model` (image -> ``[cam (B, h, w, 1), logit (B, 1)]``).
        images: ``(B, H, W)`` or ``(B, H, W, 1)`` model inputs (preprocessed, values in [0, 255]).
        batch_size: images per forward pass.

    Returns:
        ``(maps, logits)``: ``(B, H, W)`` float32 in [0, 1] (bilinear upsampling, min-max per image; a
        constant map is all zeros) and ``(B,)`` float32.
    """
    from tf_fracture.explain.gradcam import _as_batch, upsample_and_scale

    images = _as_batch(images, cam)
    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be a positive integer, but got {batch_size}.")
    maps, logits = [], []
    for start in range(0, len(images), batch_size):
        cams, logit = cam(images[start : start + batch_size], training=False)
        cams = np.asarray(cams, np.float32)
        if cams.ndim != 4 or cams.shape[-1] != 1:
            raise ValueError(f"Expected the CAM as (batch, h, w, 1), but the model gives shape {cams.shape}.")
        maps.append(upsample_and_scale(cams[..., 0], images.shape[1:3]))
        logits.append(np.asarray(logit, np.float32).reshape(-1))
    return np.concatenate(maps), np.concatenate(logits)


def title(name: str) -> str:
    """A heatmap's panel title: ``"CAM (the model's own)"``, or ``"Grad-CAM <backbone>"``."""
    return TITLES.get(name, f"Grad-CAM {name}")
