"""Localisation targets: where the fracture is, as a mask at the model's input size.

Guided training asks the classifier's class activation map to put its mass on the fracture, so the
fracture's place travels with its image through the whole data path: the builder stores boxes
(normalised ``ymin, xmin, ymax, xmax``, FracAtlas' and synthetic_xray's ``fracture_boxes``) or a
pixel mask (synthetic_xray's ``fracture_mask``); here they become one uint8 mask per image, resized
by the very function that resizes the image (`tf_fracture.data.preprocess.resize`, same padding and
interpolation), so image and mask agree pixel for pixel; the store keeps it beside the image and the
augmentation warps both with one matrix.

An image without a box or mask (every negative, and the positives of datasets without boxes such as
MURA and the elbow set) has *no target*: its mask is empty, its flag False, and the localisation
loss leaves it out (partial supervision). In the training batches the mask is float32 in [0, 1],
and ``NO_TARGET`` (-1) everywhere for an image without one.

This module needs no TensorFlow.

Example:
    >>> mask = target_mask((100, 200), boxes=[(0.2, 0.5, 0.4, 0.75)], config=PreprocessConfig(64, unsharp_kernel=5))
    >>> mask.shape, mask.dtype, int(mask.max())
    ((64, 64), dtype('uint8'), 255)
"""

from __future__ import annotations

import numpy as np

from tf_fracture.data.preprocess import PreprocessConfig, resize

NO_TARGET = -1.0  # the value of every pixel of a batch's mask where the image has no target
MASK_ON = 255  # a mask pixel inside the fracture (masks are uint8 so the store keeps them as images)


def box_mask(boxes, height: int, width: int) -> np.ndarray:
    """The union of normalised boxes ``(ymin, xmin, ymax, xmax)`` rasterised at ``(height, width)``, uint8 0/255.

    A pixel is in when its centre is inside a box; a box thinner than a pixel still marks the
    pixel it crosses, so no box vanishes.

    Raises:
        ValueError: a box that is not 4 numbers with ``0 <= min <= max <= 1``.
    """
    mask = np.zeros((height, width), np.uint8)
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return mask
    if boxes.ndim not in (1, 2) or boxes.shape[-1] != 4:
        raise ValueError(
            f"Expected boxes of 4 numbers (ymin, xmin, ymax, xmax) each, but got an array of shape {boxes.shape}."
        )
    for box in boxes.reshape(-1, 4):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        if not (0.0 <= ymin <= ymax <= 1.0 and 0.0 <= xmin <= xmax <= 1.0):
            raise ValueError(
                f"Expected a box (ymin, xmin, ymax, xmax) normalised to [0, 1] with min <= max, but got {tuple(box)}."
            )
        top, bottom = _span(ymin, ymax, height)
        left, right = _span(xmin, xmax, width)
        mask[top:bottom, left:right] = MASK_ON
    return mask


def target_mask(
    image_shape: tuple[int, int], *, config: PreprocessConfig, boxes=(), mask: np.ndarray | None = None
) -> np.ndarray:
    """The target of one image at the model's size: ``(S, S)`` uint8, resized exactly like the image.

    Args:
        image_shape: ``(H, W)`` of the raw image (before preprocessing).
        config: the image's preprocessing (its size and resize mode).
        boxes: normalised ``(ymin, xmin, ymax, xmax)`` boxes (may be empty).
        mask: an optional ``(H, W)`` mask (nonzero = fracture); it takes the place of the boxes when it
            marks any pixel (a pixel mask is the finer target).

    Returns:
        uint8 ``(S, S)``; 0 outside, up to 255 inside (edges interpolated as the image's are). All zero
        when the image has no target.
    """
    height, width = (int(v) for v in image_shape[:2])
    if mask is not None and np.any(mask):
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.shape != (height, width):
            raise ValueError(
                f"Expected a fracture mask of shape {(height, width)} (the image's), but got {mask.shape}."
            )
        full = np.where(mask > 0, MASK_ON, 0).astype(np.uint8)
    else:
        full = box_mask(boxes, height, width)
    if not full.any():
        return np.zeros((config.image_size, config.image_size), np.uint8)
    return resize(full, config.image_size, config.resize_mode)


def has_target(mask: np.ndarray) -> bool:
    """Whether a stored mask marks any pixel (an image with a localisation target)."""
    return bool(np.any(mask))


def _span(low: float, high: float, size: int) -> tuple[int, int]:
    start = int(np.floor(low * size + 0.5))
    stop = int(np.floor(high * size + 0.5))
    if stop <= start:  # thinner than a pixel: keep the pixel it crosses
        start = min(int(low * size), size - 1)
        stop = start + 1
    return start, stop
