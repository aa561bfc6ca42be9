"""Occlusion: does the score depend on what is inside the fracture box?

For a fractured image with a fracture box, the model scores three inputs:

- the preprocessed image itself (``original``);
- the same with the box's pixels replaced by a fill (``box_removed``): a model that sees the fracture
  must score it lower;
- the same with every pixel *but* the box's replaced (``box_only``): a model that needs nothing
  but the fracture keeps its score; one that leans on the rest (body region, hardware, markers,
  the image's overall look) loses it.

Where the box is: rasterised at the model's input size by `tf_fracture.data.targets.target_mask`,
which resizes it with the very function that resizes the image (stretch or pad), so box and image
agree pixel for pixel; a pixel the box touches at all (mask > 0 after resizing) counts as inside, so
``box_removed`` removes the whole box and ``box_only`` keeps the whole box. In ``pad`` mode the
padding (outside the radiograph) is not image content: it stays as the preprocessing left it in both
versions, and the fill is computed without it.

The fill is the mean grey value of the preprocessed image's content (the padding left out), one flat
value per image. Why not the alternatives: black (0) is the colour of padding and collimation, and a
black box (or a black surround) is a strong edge and an intensity no radiograph region has; a blurred
copy of the image keeps the coarse content the test means to remove (a blurred plate or screw is
still a bright bar, a displaced fragment still a step), so a shortcut inside the box would survive
``box_removed`` and one outside it would survive ``box_only``. The flat mean removes all content of
the region and keeps the image's overall brightness; what it cannot avoid is the edge around the
flat region, which is why ``box_only`` (a large flat surround, far from any training image) is read
as "the score should stay", not as a precise number.

The statistics are paired, image by image (`tf_fracture.metrics.paired_change`): the mean change
of the logit and of the probability (``occluded - original``) with bootstrap intervals, and the share
of images whose score dropped (ties count half).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tf_fracture import metrics
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.data.targets import target_mask
from tf_fracture.metrics._checks import to_jsonable

FILL = "the mean of the preprocessed image's content (padding excluded), one flat value per image"
WHOLE_IMAGE = ((0.0, 0.0, 1.0, 1.0),)


@dataclass(frozen=True)
class OcclusionInputs:
    """The three model inputs of one image, ``(S, S)`` float32 in [0, 255], and where the box is.

    Attributes:
        original: the preprocessed image.
        box_removed: the box's pixels set to ``fill``.
        box_only: every content pixel outside the box set to ``fill`` (padding kept).
        box: bool ``(S, S)``, the pixels the box touches at the model's size.
        content: bool ``(S, S)``, the radiograph's pixels (all but the padding).
        fill: the value used.
    """

    original: np.ndarray
    box_removed: np.ndarray
    box_only: np.ndarray
    box: np.ndarray
    content: np.ndarray
    fill: float


def occlusion_inputs(image: np.ndarray, boxes, config: PreprocessConfig) -> OcclusionInputs:
    """The original, box-removed and box-only inputs of a raw image and its fracture boxes.

    Args:
        image: the raw ``(H, W)`` uint8 radiograph (as the dataset stores it).
        boxes: its fracture boxes, normalised ``(ymin, xmin, ymax, xmax)`` of the raw image.
        config: the model's preprocessing.

    Raises:
        ValueError: no box, or a box that is empty at the model's size.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        raise ValueError("Occlusion needs at least one fracture box; this image has none.")
    original = preprocess(image, config).astype(np.float32)
    box = target_mask(image.shape, config=config, boxes=boxes) > 0
    content = target_mask(image.shape, config=config, boxes=WHOLE_IMAGE) > 0
    if not box.any():
        raise ValueError(f"The boxes {boxes.tolist()} cover no pixel at the model's size {config.image_size}.")
    fill = np.float32(original[content].mean())
    box_removed = np.where(box, fill, original).astype(np.float32)
    box_only = np.where(content & ~box, fill, original).astype(np.float32)
    return OcclusionInputs(original, box_removed, box_only, box, content, float(fill))


@dataclass(frozen=True)
class OcclusionTest:
    """The paired changes of the score when the box is masked out, and when all but the box is.

    Attributes:
        n: fractured images with a box.
        box_removed, box_only: ``{"logit": PairedChange, "probability": PairedChange}`` of
            ``occluded - original``; ``share_lower`` is the share of images whose score dropped.
        box_area: mean share of the image's content inside the box (what ``box_only`` keeps).
    """

    n: int
    box_removed: dict[str, metrics.PairedChange]
    box_only: dict[str, metrics.PairedChange]
    box_area: float
    fill: str = FILL

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "skipped": None,
                "n": self.n,
                "fill": self.fill,
                "box_area": self.box_area,
                "box_removed": self.box_removed,
                "box_only": self.box_only,
                "definition": (
                    "per fractured test image with a box: score of the occluded input minus the original's "
                    "(box_removed: the box's pixels filled; box_only: all content but the box filled); "
                    "mean_change with a bootstrap CI, share_lower = share of images whose score dropped "
                    "(ties half); boxes rasterised at the model's size as the image is resized"
                ),
            }
        )


def occlusion_test(
    original: Sequence[float],
    box_removed: Sequence[float],
    box_only: Sequence[float],
    *,
    box_area: float = float("nan"),
    n_resamples: int = 2000,
    seed: int = 0,
    groups=None,
) -> OcclusionTest:
    """The occlusion statistics from the three logits of each image (NumPy; see the module docstring)."""
    original = np.asarray(original, np.float64)
    options = {"n_resamples": n_resamples, "seed": seed, "groups": groups}

    def changes(occluded):
        occluded = np.asarray(occluded, np.float64)
        return {
            "logit": metrics.paired_change(original, occluded, **options),
            "probability": metrics.paired_change(_sigmoid(original), _sigmoid(occluded), **options),
        }

    return OcclusionTest(int(original.size), changes(box_removed), changes(box_only), float(box_area))


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -logits))
