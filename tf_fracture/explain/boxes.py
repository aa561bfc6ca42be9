"""Box hit rate: how often a heatmap's peak falls inside a fracture box, beside what chance gives.

Boxes are normalised ``(ymin, xmin, ymax, xmax)`` in [0, 1] (TFDS ``BBoxFeature``, FracAtlas's and
synthetic_xray's ``fracture_boxes``). A heatmap's peak is its argmax pixel, taken at the pixel's
centre ``((row + 0.5) / H, (col + 0.5) / W)``; a peak on a box's edge counts as inside. Where a
plateau of pixels shares the maximum, the peak is the plateau's pixel nearest its centroid (see
`peak`: a coarse map's border cell, upsampled, is such a plateau reaching the image's edge).

The chance rate is the hit rate of a peak drawn uniformly over the pixels: per image, the fraction
of pixel centres inside any of its boxes (overlapping boxes counted once), averaged over images.
A hit rate means something only well above it. Where boxes are small for the map (a box a cell or
two wide), a miss by a few pixels and a miss across the image count alike: the peak's distance to
the nearest box, in the heatmap's pixels (0 inside), tells them apart. NumPy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BoxHitRate:
    """The box hit rate over the images that have at least one box.

    Attributes:
        hit_rate: fraction of those images whose heatmap peak lies in one of their boxes.
        chance_rate: the mean box-area fraction: the hit rate of a uniformly random peak.
        n: images with at least one box (the denominator of both rates).
        hits: per image with boxes, whether its peak hit.
        without_boxes: images given without any box, left out of ``n``.
        flat: images among ``n`` whose heatmap is constant (no peak): counted as misses.
        chances: per image with boxes, its box-area fraction (its chance of a hit).
        distances: per image with boxes, its peak's distance to the nearest box in the heatmap's
            pixels (0 for a hit; NaN for a flat heatmap).
    """

    hit_rate: float
    chance_rate: float
    n: int
    hits: tuple[bool, ...]
    without_boxes: int
    flat: int
    chances: tuple[float, ...] = ()
    distances: tuple[float, ...] = ()

    @property
    def median_distance(self) -> float:
        """The median of `distances` over the images with a peak (NaN when none has one)."""
        finite = [d for d in self.distances if np.isfinite(d)]
        return float(np.median(finite)) if finite else float("nan")

    def to_dict(self) -> dict:
        return {
            "hit_rate": self.hit_rate,
            "chance_rate": self.chance_rate,
            "n": self.n,
            "without_boxes": self.without_boxes,
            "flat": self.flat,
            "median_peak_distance_px": self.median_distance,
        }


def check_boxes(boxes) -> np.ndarray:
    """``boxes`` as a ``(k, 4)`` float64 array of normalised ``(ymin, xmin, ymax, xmax)``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    bad = (boxes < 0) | (boxes > 1) | ~np.isfinite(boxes)
    if bad.any() or np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise ValueError(
            "Expected boxes as normalised (ymin, xmin, ymax, xmax) with 0 <= min <= max <= 1, "
            f"but got {boxes.tolist()}."
        )
    return boxes


# Pixels within this share of the map's range of its maximum are tied with it (float rounding in the
# upsampling makes a plateau's pixels differ in the last bits).
PLATEAU_TOLERANCE = 1e-6


def peak(heatmap: np.ndarray) -> tuple[float, float]:
    """The normalised ``(y, x)`` centre of the heatmap's peak pixel.

    The peak is the argmax pixel. Where several pixels share the maximum (within
    ``PLATEAU_TOLERANCE`` of the map's range), it is the tied pixel nearest their centroid (the first
    of those on ties): a coarse map (a 7x7 CAM of a 224 px input) upsampled bilinearly with clamped
    edges turns a border cell's maximum into a flat plateau from the cell's centre to the image's
    edge, and its first pixel would put the peak in the image's corner, half a cell away from the cell.
    """
    heatmap = np.asarray(heatmap, np.float64)
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError(f"Expected a 2-D heatmap, but got shape {heatmap.shape}.")
    high = heatmap.max()
    rows, cols = np.nonzero(heatmap >= high - PLATEAU_TOLERANCE * (high - heatmap.min()))
    nearest = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    return (rows[nearest] + 0.5) / heatmap.shape[0], (cols[nearest] + 0.5) / heatmap.shape[1]


def _inside(y, x, boxes: np.ndarray):
    y, x = np.asarray(y)[..., None], np.asarray(x)[..., None]
    return ((boxes[:, 0] <= y) & (y <= boxes[:, 2]) & (boxes[:, 1] <= x) & (x <= boxes[:, 3])).any(axis=-1)


def peak_in_boxes(heatmap: np.ndarray, boxes) -> bool:
    """Whether the heatmap's peak lies inside (or on the edge of) any of ``boxes``."""
    y, x = peak(heatmap)
    return bool(_inside(y, x, check_boxes(boxes)))


def peak_distance(heatmap: np.ndarray, boxes) -> float:
    """The distance from the heatmap's peak to the nearest of ``boxes``, in the heatmap's pixels (0 inside).

    Measured from the peak pixel's centre to the box's edge (`peak`; a box's edge counts as inside),
    with the rows and columns scaled by the heatmap's height and width; ``inf`` without boxes.

    Example:
        >>> heatmap = np.zeros((10, 10))
        >>> heatmap[2, 3] = 1.0  # the peak's centre: (2.5, 3.5) pixels
        >>> peak_distance(heatmap, [(0.0, 0.6, 0.3, 1.0)])  # the box starts at column 6: 2.5 pixels right
        2.5
    """
    boxes = check_boxes(boxes)
    if not len(boxes):
        return float("inf")
    height, width = np.asarray(heatmap).shape
    y, x = peak(heatmap)
    dy = np.maximum.reduce([boxes[:, 0] - y, np.zeros(len(boxes)), y - boxes[:, 2]]) * height
    dx = np.maximum.reduce([boxes[:, 1] - x, np.zeros(len(boxes)), x - boxes[:, 3]]) * width
    return float(np.min(np.hypot(dy, dx)))


def box_area_fraction(boxes, shape: tuple[int, int]) -> float:
    """The fraction of an ``(H, W)`` grid's pixel centres inside any of ``boxes`` (a random peak's hit chance)."""
    boxes = check_boxes(boxes)
    height, width = shape
    ys = (np.arange(height) + 0.5) / height
    xs = (np.arange(width) + 0.5) / width
    return float(_inside(ys[:, None], xs[None, :], boxes).mean())


def box_hit_rate(heatmaps: Sequence[np.ndarray], boxes: Sequence) -> BoxHitRate:
    """How often each heatmap's peak falls inside one of its image's boxes, and the chance rate.

    Args:
        heatmaps: per image, a 2-D heatmap (a ``(B, H, W)`` array works too).
        boxes: per image, its boxes (``(k, 4)``, normalised ``ymin, xmin, ymax, xmax``; ``k`` may be 0).

    Returns:
        A `BoxHitRate` over the images with at least one box; NaN rates when there is none.

    Example:
        >>> heatmap = np.zeros((10, 10))
        >>> heatmap[2, 3] = 1.0  # the peak, at row 2, column 3
        >>> rate = box_hit_rate([heatmap], [[(0.1, 0.2, 0.4, 0.5)]])  # a box over rows 1-3, columns 2-4
        >>> rate.hit_rate, rate.chance_rate
        (1.0, 0.09)
    """
    if len(heatmaps) != len(boxes):
        raise ValueError(f"Expected one box list per heatmap, but got {len(heatmaps)} heatmaps and {len(boxes)}.")
    hits, chances, distances, flat, without = [], [], [], 0, 0
    for heatmap, image_boxes in zip(heatmaps, boxes, strict=True):
        image_boxes = check_boxes(image_boxes)
        if len(image_boxes) == 0:
            without += 1
            continue
        heatmap = np.asarray(heatmap)
        chances.append(box_area_fraction(image_boxes, heatmap.shape))
        if heatmap.size and heatmap.max() == heatmap.min():
            flat += 1
            hits.append(False)
            distances.append(float("nan"))
        else:
            distance = peak_distance(heatmap, image_boxes)  # 0 exactly when the peak is in a box (edges too)
            hits.append(distance == 0.0)
            distances.append(distance)
    n = len(hits)
    return BoxHitRate(
        hit_rate=float(np.mean(hits)) if n else float("nan"),
        chance_rate=float(np.mean(chances)) if n else float("nan"),
        n=n,
        hits=tuple(hits),
        without_boxes=without,
        flat=flat,
        chances=tuple(chances),
        distances=tuple(distances),
    )


def boxes_after_resize(boxes, image_shape: tuple[int, int], resize_mode: str = "stretch") -> np.ndarray:
    """Boxes of the original image, in the coordinates of the preprocessed square image.

    ``"stretch"`` keeps normalised coordinates; ``"pad"`` (the image padded to a centred square
    first, see `tf_fracture.data.preprocess.resize`) shrinks them towards the centre of the long side.
    """
    boxes = check_boxes(boxes)
    if resize_mode == "stretch":
        return boxes
    if resize_mode != "pad":
        raise ValueError(f"Expected `resize_mode` to be one of 'stretch', 'pad', but got {resize_mode!r}.")
    height, width = image_shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    scale = np.array([height, width, height, width]) / side
    offset = np.array([top, left, top, left]) / side
    return boxes * scale + offset
