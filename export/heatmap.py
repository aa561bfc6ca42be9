"""An exported model's class activation map as a heatmap PNG, with NumPy and OpenCV only (no TensorFlow).

The CAM is output 1 of an exported classifier (`tf_fracture_export.metadata`): one fracture logit per
cell of the last feature map (e.g. 7 x 7 for a 224 px MobileNetV3), whose mean is the logit. It is
drawn the way the metadata's ``heatmap`` entry tells an app to:

1. upsample the logits bilinearly to the model's input size (OpenCV ``INTER_LINEAR``, half-pixel
   centres, as ``tf.image.resize``); interpolating logits, not colours, keeps the map smooth;
2. ``heat = sigmoid(logit)``: a per-position fracture probability, on the same fixed 0-1 scale as the
   answer. Unlike a map min-max normalised per image (Grad-CAM in `tf_fracture.explain`), a normal
   image stays cold instead of always showing a hot spot somewhere;
3. blend the colour map (OpenCV's JET: blue cold, red hot) into the PREPROCESSED greyscale image the
   model saw (its ``S x S`` input, after CLAHE and unsharp masking), with opacity ``alpha * heat``, so
   that cold regions leave the radiograph as it is. The map lines up with that image exactly; with
   ``resize_mode="pad"`` it would not line up with the original file without undoing the padding.

Example:
    >>> heat = cam_heat(cam, 96)                        # (96, 96) in [0, 1]
    >>> cv2.imwrite("a_heatmap.png", overlay(model_input, heat))
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

ALPHA = 0.6  # the colour's opacity where the heat is 1
COLORMAP = cv2.COLORMAP_JET
SUFFIX = "_heatmap.png"


def cam_heat(cam: np.ndarray, size: int) -> np.ndarray:
    """``(h, w)`` CAM logits -> ``(size, size)`` float32 heat in [0, 1]: bilinear upsampling, then sigmoid."""
    cam = np.asarray(cam, np.float32)
    if cam.ndim == 3 and cam.shape[-1] == 1:
        cam = cam[..., 0]
    if cam.ndim != 2 or min(cam.shape) < 1:
        raise ValueError(f"Expected one class activation map (h, w), but got shape {cam.shape}.")
    logits = cv2.resize(cam, (int(size), int(size)), interpolation=cv2.INTER_LINEAR)
    return (0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))).astype(np.float32)  # sigmoid, no overflow


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The greyscale ``image`` with ``heat``'s colour map blended in: ``(H, W, 3)`` uint8, BGR (for ``cv2.imwrite``).

    Args:
        image: the model's input, ``(H, W)`` or ``(H, W, 1)``, values 0..255.
        heat: ``(H, W)`` in [0, 1] (`cam_heat`).
        alpha: the colour's opacity where the heat is 1; it falls linearly to 0 where the heat is 0.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    heat = np.clip(np.asarray(heat, np.float32), 0.0, 1.0)
    if image.ndim != 2 or image.shape != heat.shape:
        raise ValueError(f"Expected a greyscale image and a heat map of one shape, got {image.shape} and {heat.shape}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected `alpha` in [0, 1], but got `alpha={alpha}`.")
    grey = np.repeat(np.clip(image, 0, 255).astype(np.float32)[..., None], 3, axis=-1)
    colour = cv2.applyColorMap(np.rint(heat * 255.0).astype(np.uint8), COLORMAP).astype(np.float32)
    opacity = (alpha * heat)[..., None]
    return np.rint((1.0 - opacity) * grey + opacity * colour).astype(np.uint8)


def heatmap_names(paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """Where each input's heatmap goes, in the inputs' order: ``out_dir/<file stem>_heatmap.png``, one file each.

    Inputs sharing a stem (``a.png`` and ``a.dcm``, or ``x/a.png`` and ``y/a.png``) get ``_2``, ``_3``, ...
    in the order given; a name is also bumped rather than overwrite one of the inputs themselves.
    Characters other than letters, digits, ``-``, ``_`` and ``.`` become ``_``.
    """
    out_dir = Path(out_dir)
    paths = [os.fspath(p) for p in paths]
    inputs = {Path(p).resolve() for p in paths}
    taken: set[Path] = set()
    names = []
    for index, path in enumerate(paths):
        stem = Path(path.replace("\\", "/")).stem or f"image_{index}"
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
        target, count = out_dir / f"{stem}{SUFFIX}", 1
        while target in taken or target.resolve() in inputs:
            count += 1
            target = out_dir / f"{stem}_{count}{SUFFIX}"
        taken.add(target)
        names.append(target)
    return names


def write_heatmap(path: str | os.PathLike, image: np.ndarray, cam: np.ndarray, alpha: float = ALPHA) -> Path:
    """Writes the `overlay` of ``cam`` (upsampled to ``image``, `cam_heat`) on the model input ``image`` as a PNG."""
    image = np.asarray(image)
    size = image.shape[0]
    if image.ndim not in (2, 3) or image.shape[1] != size:
        raise ValueError(f"Expected the model's square input image (S, S) or (S, S, 1), but got shape {image.shape}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", overlay(image, cam_heat(cam, size), alpha))
    if not ok:
        raise ValueError(f"OpenCV could not encode the heatmap for {path}.")
    path.write_bytes(encoded.tobytes())
    return path
