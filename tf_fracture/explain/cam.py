"""The classifier's own class activation map (CAM) as a heatmap, beside Grad-CAM.

Every `FractureClassifier`'s logit is the spatial mean of its CAM (the layer ``"cam"``: a 1x1
convolution of the feature map, one logit per position; see `tf_fracture.models.cam_model`), so the
CAM is not an estimate of where the model looked: it is how much each position adds to the logit.
Here it is upsampled to the input like a Grad-CAM map (bilinear, min-max to [0, 1] per image, see
`upsample_and_scale`), so that the same peak and box hit rate apply to both. Unlike Grad-CAM it is
not rectified: its peak is the position that raises the logit most even where every position
lowers it.

A fusion model has no CAM of its own (its logit comes from an MLP on pooled features). Built from
classifiers, it carries each member's CAM head: one map per member, keyed ``"cam:<member>"``, each
the member classifier's own. Built from bare backbones it is explained by Grad-CAM alone, and the
reason is recorded.

Import-light: Keras loads on the first map (the report uses `title` without TensorFlow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

OWN_CAM = "cam"  # the key of the own CAM among the heatmaps (Grad-CAM's are the backbones' names)
TITLES = {OWN_CAM: "CAM (the model's own)"}
MEMBER_CAM_PREFIX = f"{OWN_CAM}:"  # a fusion member's own CAM: "cam:<member>"


@dataclass(frozen=True)
class OwnCam:
    """image -> ``[cam_1, ..., cam_n, logit]`` and the heatmap key of each CAM.

    Attributes:
        model: the Keras model (`tf_fracture.models.cam_model`).
        names: ``("cam",)`` for a classifier; ``("cam:<member>", ...)`` for a fusion's members.
    """

    model: keras.Model
    names: tuple[str, ...]

    def __call__(self, images, training=False):
        return self.model(images, training=training)


def own_cam_model(model: keras.Model) -> tuple[OwnCam | None, str | None]:
    """``(OwnCam, None)`` for a classifier or a fusion built from classifiers, or ``(None, why not)``."""
    from tf_fracture.models import FusionModel, cam_model
    from tf_fracture.models.multitask import MultiTaskClassifier

    if isinstance(model, MultiTaskClassifier):  # its fracture logit is its classifier's
        model = model.classifier
    try:
        cams = cam_model(model)
    except ValueError as error:
        return None, str(error)
    if isinstance(model, FusionModel):
        return OwnCam(cams, tuple(f"{MEMBER_CAM_PREFIX}{member.name}" for member in model.members)), None
    return OwnCam(cams, (OWN_CAM,)), None


def class_activation_maps(cam, images, *, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The own CAM of each image at the input's size, and the logits, for a model with one CAM.

    Args:
        cam: from `own_cam_model` or `tf_fracture.models.cam_model` (image -> ``[cam (B, h, w, 1), logit (B, 1)]``).
        images: ``(B, H, W)`` or ``(B, H, W, 1)`` model inputs (preprocessed, values in [0, 255]).
        batch_size: images per forward pass.

    Returns:
        ``(maps, logits)``: ``(B, H, W)`` float32 in [0, 1] (bilinear upsampling, min-max per image; a
        constant map is all zeros) and ``(B,)`` float32.
    """
    maps, logits = _maps(cam.model if isinstance(cam, OwnCam) else cam, images, batch_size)
    if len(maps) != 1:
        raise ValueError(f"Expected a model with one CAM, but it gives {len(maps)}: use own_class_activation_maps.")
    return maps[0], logits


def own_class_activation_maps(own: OwnCam, images, *, batch_size: int = 8) -> tuple[dict, np.ndarray]:
    """Every own CAM of a batch, ``{name: (B, H, W) float32 in [0, 1]}`` keyed by ``own.names``, and the logits."""
    maps, logits = _maps(own.model, images, batch_size)
    if len(maps) != len(own.names):
        raise ValueError(f"Expected {len(own.names)} CAMs ({', '.join(own.names)}), but the model gives {len(maps)}.")
    return dict(zip(own.names, maps, strict=True)), logits


def _maps(model, images, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
    from tf_fracture.explain.gradcam import _as_batch, upsample_and_scale

    images = _as_batch(images, model)
    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be a positive integer, but got {batch_size}.")
    maps, logits = None, []
    for start in range(0, len(images), batch_size):
        *cams, logit = model(images[start : start + batch_size], training=False)
        if maps is None:
            maps = [[] for _ in cams]
        for index, cam in enumerate(cams):
            cam = np.asarray(cam, np.float32)
            if cam.ndim != 4 or cam.shape[-1] != 1:
                raise ValueError(f"Expected the CAM as (batch, h, w, 1), but the model gives shape {cam.shape}.")
            maps[index].append(upsample_and_scale(cam[..., 0], images.shape[1:3]))
        logits.append(np.asarray(logit, np.float32).reshape(-1))
    return [np.concatenate(m) for m in maps], np.concatenate(logits)


def title(name: str) -> str:
    """A heatmap's title: ``"CAM (the model's own)"``, ``"CAM <member>"`` or ``"Grad-CAM <backbone>"``."""
    if name.startswith(MEMBER_CAM_PREFIX):
        return f"CAM {name.removeprefix(MEMBER_CAM_PREFIX)}"
    return TITLES.get(name, f"Grad-CAM {name}")
