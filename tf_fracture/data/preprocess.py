"""The method's deterministic preprocessing: resize, CLAHE, then unsharp masking.

The functions work on 2-D uint8 NumPy images with OpenCV, which is the reference implementation.
This module needs no TensorFlow (the edge predictor and the VLM track use it);
``tf_fracture.data.pipeline.tf_preprocess`` runs the same code inside a ``tf.data`` pipeline.

Reference:
    The method's preprocessing: resize to the stage's size (384 px for MURA pretraining, 584 px for
    elbow training), CLAHE with clip limit 2.5 on a 4x4 grid, then ``img + 2 * (img - gaussian(img))``
    with a 5x5 (MURA) or 7x7 (elbow) Gaussian.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from types import MappingProxyType

import cv2
import numpy as np

from tf_fracture.validation import check_choice, check_int, check_number

RESIZE_MODES = ("stretch", "pad")


@dataclass(frozen=True)
class PreprocessConfig:
    """The parameters of :func:`preprocess`, validated on construction.

    Every field but ``image_size`` is keyword-only.

    Args:
        image_size: side of the square output, in pixels.
        clahe_clip_limit: CLAHE contrast limit (OpenCV's ``clipLimit``).
        clahe_grid: CLAHE tiles per side (OpenCV's ``tileGridSize=(grid, grid)``).
        unsharp_kernel: side of the Gaussian kernel of the unsharp mask; odd, at least 3.
        unsharp_amount: weight of the detail layer ``img - gaussian(img)``.
        resize_mode: ``"stretch"`` resizes to a square ignoring the aspect ratio; ``"pad"`` pads the
            image to a square with black (0) first, keeping the aspect ratio.

    Example:
        >>> config = PreprocessConfig(512, unsharp_kernel=5, resize_mode="pad")
        >>> get_preprocess_config("elbow").image_size
        584
    """

    image_size: int = field(metadata={"help": "Side of the square output image, in pixels."})
    _: KW_ONLY
    clahe_clip_limit: float = field(default=2.5, metadata={"help": "CLAHE contrast limit (OpenCV clipLimit)."})
    clahe_grid: int = field(default=4, metadata={"help": "CLAHE tiles per side: tileGridSize=(grid, grid)."})
    unsharp_kernel: int = field(metadata={"help": "Unsharp-mask Gaussian kernel side, odd and >= 3."})
    unsharp_amount: float = field(default=2.0, metadata={"help": "Weight of the detail layer img - gaussian(img)."})
    resize_mode: str = field(
        default="stretch", metadata={"help": "'stretch' to a square, or 'pad' to a square with 0 (keeps aspect)."}
    )

    def __post_init__(self):
        check_int("image_size", self.image_size)
        check_int("clahe_grid", self.clahe_grid)
        check_int("unsharp_kernel", self.unsharp_kernel, minimum=3)
        if self.unsharp_kernel % 2 == 0:
            raise ValueError(
                f"Expected `unsharp_kernel` to be odd (a centred Gaussian kernel), "
                f"but got `unsharp_kernel={self.unsharp_kernel}`."
            )
        check_number("clahe_clip_limit", self.clahe_clip_limit, 0.0, low_inclusive=False)
        check_number("unsharp_amount", self.unsharp_amount, 0.0)
        check_choice("resize_mode", self.resize_mode, RESIZE_MODES)


# The method's values. Read-only: a preset is changed with dataclasses.replace, never in place.
PREPROCESS_PRESETS = MappingProxyType(
    {
        "mura": PreprocessConfig(384, unsharp_kernel=5),
        "elbow": PreprocessConfig(584, unsharp_kernel=7),
    }
)


def get_preprocess_config(name: str) -> PreprocessConfig:
    """The named preset: ``"mura"`` (384 px, 5x5 unsharp) or ``"elbow"`` (584 px, 7x7 unsharp).

    Raises:
        ValueError: an unknown name; the message lists the valid ones.
    """
    if name not in PREPROCESS_PRESETS:
        valid = ", ".join(repr(n) for n in sorted(PREPROCESS_PRESETS))
        raise ValueError(f"Expected a preprocessing preset among {valid}, but got `name={name!r}`.")
    return PREPROCESS_PRESETS[name]


def resize(image: np.ndarray, size: int, mode: str = "stretch") -> np.ndarray:
    """Resizes a 2-D uint8 image to ``(size, size)``.

    Each axis is resampled with ``cv2.INTER_AREA`` where it shrinks (it averages the source pixels,
    so no aliasing of fine trabecular texture or noise) and with ``cv2.INTER_LINEAR`` where it grows
    (no overshoot, unlike cubic, which the unsharp mask that follows would amplify into halos).
    When one axis shrinks and the other grows, the two axes are resized in two passes.

    Args:
        image: ``(H, W)`` uint8.
        size: side of the output.
        mode: ``"stretch"``, or ``"pad"``: pad to a centred square with 0 first, keeping the aspect
            ratio.

    Example:
        >>> resize(np.zeros((100, 50), np.uint8), 64, "pad").shape
        (64, 64)
    """
    _check_image(image)
    check_int("size", size)
    check_choice("mode", mode, RESIZE_MODES)
    if mode == "pad":
        image = _pad_to_square(image)
    height, width = image.shape
    shrink_h, shrink_w = size < height, size < width
    if shrink_h != shrink_w:
        image = cv2.resize(image, (width, size), interpolation=_interpolation(shrink_h))
        return cv2.resize(image, (size, size), interpolation=_interpolation(shrink_w))
    return cv2.resize(image, (size, size), interpolation=_interpolation(shrink_h))


def clahe(image: np.ndarray, clip_limit: float = 2.5, grid: int = 4) -> np.ndarray:
    """Contrast Limited Adaptive Histogram Equalisation, OpenCV's.

    Args:
        image: ``(H, W)`` uint8.
        clip_limit: OpenCV's ``clipLimit``.
        grid: tiles per side, ``tileGridSize=(grid, grid)``.

    Example:
        >>> clahe(np.zeros((64, 64), np.uint8), clip_limit=2.5, grid=4).shape
        (64, 64)
    """
    _check_image(image)
    check_int("grid", grid)
    # A fresh CLAHE object per call: they hold state, and tf.data calls this from several threads.
    return cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(grid, grid)).apply(image)


def unsharp_mask(image: np.ndarray, kernel: int = 5, amount: float = 2.0) -> np.ndarray:
    """Unsharp masking: ``img + amount * (img - GaussianBlur(img, (kernel, kernel), 0))``.

    Computed in float32, rounded and clipped to [0, 255]. Sigma 0 is OpenCV's default for the
    kernel size; for sizes up to 7 OpenCV uses fixed tables (5: [1, 4, 6, 4, 1] / 16,
    7: [2, 7, 14, 18, 14, 7, 2] / 64). Borders are reflected without repeating the edge pixel
    (``BORDER_REFLECT_101``).

    Args:
        image: ``(H, W)`` uint8.
        kernel: odd Gaussian kernel side.
        amount: weight of the detail layer.

    Example:
        >>> unsharp_mask(np.zeros((64, 64), np.uint8), kernel=5, amount=2.0).shape
        (64, 64)
    """
    _check_image(image)
    check_int("kernel", kernel)
    if kernel % 2 == 0:
        raise ValueError(f"Expected `kernel` to be odd, but got `kernel={kernel}`.")
    pixels = image.astype(np.float32)
    blurred = cv2.GaussianBlur(pixels, (kernel, kernel), 0)
    sharpened = pixels + np.float32(amount) * (pixels - blurred)
    return np.clip(np.rint(sharpened), 0, 255).astype(np.uint8)


def preprocess(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The method's preprocessing: resize, then CLAHE, then unsharp masking.

    Args:
        image: ``(H, W)`` uint8 radiograph of any size.
        config: a :class:`PreprocessConfig`, e.g. ``get_preprocess_config("mura")``.

    Returns:
        ``(S, S)`` uint8 with ``S = config.image_size``.

    Example:
        >>> preprocess(np.full((500, 400), 128, np.uint8), get_preprocess_config("mura")).shape
        (384, 384)
    """
    image = resize(image, config.image_size, config.resize_mode)
    image = clahe(image, config.clahe_clip_limit, config.clahe_grid)
    return unsharp_mask(image, config.unsharp_kernel, config.unsharp_amount)


def _interpolation(shrink: bool) -> int:
    return cv2.INTER_AREA if shrink else cv2.INTER_LINEAR


def _pad_to_square(image: np.ndarray) -> np.ndarray:
    height, width = image.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    return cv2.copyMakeBorder(image, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=0)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.uint8:
        shape, dtype = getattr(image, "shape", None), getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"Expected a 2-D uint8 image (H, W), but got shape {shape} and dtype {dtype}.")
    if image.size == 0:
        raise ValueError(f"Expected a non-empty image, but got shape {image.shape}.")
