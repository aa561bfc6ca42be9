"""Geometric augmentation of the method: rotation, horizontal flip, scale and translation.

All four are composed into one affine matrix per image and applied with a single
bilinear resampling (one pass, not four, so no compounded blur). There are no brightness or
contrast changes: the method leaves intensities to CLAHE.

Two entry points share the same sampling and matrix code:

* `augment_batch(images, seed, config)` - stateless: the same seed gives the same result,
  eagerly or inside ``tf.data``; `transform_batch` applies parameters drawn beforehand (the input
  pipeline draws a whole epoch's with `sample_parameters`). It resamples with OpenCV's
  ``warpAffine`` by default, about 8x faster on a CPU (where tf.data runs) than TensorFlow's
  projective-transform kernel; ``engine="keras"`` uses ``keras.ops.image.affine_transform``.
* `RandomAffine` - a serialisable Keras layer (active only when ``training=True``) for
  putting the augmentation inside a model, on the GPU where there is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tf_fracture.validation import check_choice, check_number, check_rate

ENGINES = ("opencv", "keras")


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random geometric transform (the method's values by default)."""

    max_rotation_degrees: float = field(default=60.0, metadata={"help": "Rotation uniform in [-max, max] degrees."})
    flip_probability: float = field(default=0.75, metadata={"help": "Probability of a horizontal flip."})
    scale_range: tuple[float, float] = field(default=(0.85, 1.1), metadata={"help": "Zoom factor range."})
    translation_range: tuple[float, float] = field(
        default=(0.02, 0.12),
        metadata={"help": "Shift on each axis: |shift| uniform in this range (fraction of the size), random sign."},
    )
    fill_value: float = field(default=0.0, metadata={"help": "Value of pixels moved in from outside (black)."})

    def __post_init__(self):
        check_number("max_rotation_degrees", self.max_rotation_degrees, 0.0, 180.0)
        check_rate("flip_probability", self.flip_probability, high_inclusive=True)
        low, high = self.scale_range
        if not 0.0 < low <= high:
            raise ValueError(f"Expected `scale_range` (low, high) with 0 < low <= high, but got {self.scale_range!r}.")
        low, high = self.translation_range
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(
                "Expected `translation_range` (low, high) with 0 <= low <= high < 1, "
                f"but got {self.translation_range!r}."
            )


def affine_matrices(angle, scale, shift_x, shift_y, flip, height, width):
    """Output-to-input transforms ``[a0, a1, a2, b0, b1, b2, 0, 0]`` (one row per image).

    The forward map, about the image centre ``c``, is ``p_out = c + s * R(angle) * F * (p_in - c) + t``
    with ``F`` a horizontal flip where ``flip`` is 1 and ``t = (shift_x * width, shift_y * height)``;
    ``affine_transform`` needs its inverse, ``p_in = M (p_out - c - t) + c`` with ``M = F R(-angle) / s``.
    Angles in radians, positive = counter-clockwise on screen (y points down).
    """
    angle, scale, shift_x, shift_y, flip = (ops.cast(v, "float32") for v in (angle, scale, shift_x, shift_y, flip))
    cx = (ops.cast(width, "float32") - 1.0) / 2.0
    cy = (ops.cast(height, "float32") - 1.0) / 2.0
    tx = shift_x * ops.cast(width, "float32")
    ty = shift_y * ops.cast(height, "float32")
    cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
    sign = 1.0 - 2.0 * flip  # -1 mirrors x
    # R(-angle) for y-down image coordinates; F applied last in the inverse, i.e. to the x row.
    m00, m01 = sign * cos, sign * -sin
    m10, m11 = sin, cos
    ux, uy = cx + tx, cy + ty
    a2 = cx - (m00 * ux + m01 * uy)
    b2 = cy - (m10 * ux + m11 * uy)
    zeros = ops.zeros_like(angle)
    return ops.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=-1)


def sample_parameters(seed, batch_size, config: AugmentConfig = AugmentConfig()):
    """Stateless draw of ``(angle, scale, shift_x, shift_y, flip)`` for a batch; ``seed`` is 2 ints."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)

    def uniform(i, low, high):
        return tf.random.stateless_uniform([batch_size], seed=seeds[i], minval=low, maxval=high)

    max_angle = math.radians(config.max_rotation_degrees)
    angle = uniform(0, -max_angle, max_angle)
    scale = uniform(1, *config.scale_range)
    shift_x = uniform(2, *config.translation_range) * _random_sign(seeds[3], batch_size)
    shift_y = uniform(4, *config.translation_range) * _random_sign(tf.reverse(seeds[3], [0]), batch_size)
    flip = tf.cast(uniform(5, 0.0, 1.0) < config.flip_probability, tf.float32)
    return angle, scale, shift_x, shift_y, flip


def augment_batch(images, seed, config: AugmentConfig = AugmentConfig(), engine: str = "opencv", where=None):
    """Randomly transforms a batch ``(B, H, W, C)``; the same ``seed`` (2 ints) gives the same output.

    Args:
        images: a batch, any dtype (integers are rounded and clipped back to their range).
        seed: two integers; the stateless draw of every transform's parameters.
        config: the parameter ranges.
        engine: ``"opencv"`` (``cv2.warpAffine``, fast on CPU) or ``"keras"``
            (``keras.ops.image.affine_transform``, runs on a GPU). Both resample bilinearly
            with the same matrices; they differ by OpenCV's fixed-point interpolation weights.
        where: optional ``(B,)`` booleans; images where it is False are returned unchanged.
    """
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank != 1:
        raise ValueError(f"Expected `seed` to be two integers, but got shape {seed.shape}.")
    params = sample_parameters(seed, tf.shape(images)[0], config)
    return transform_batch(images, params, config.fill_value, engine, where)


def transform_batch(images, parameters, fill_value: float = 0.0, engine: str = "opencv", where=None):
    """Applies given transforms to a batch ``(B, H, W, C)``: the deterministic half of :func:`augment_batch`.

    The input pipeline draws the parameters of a whole epoch at once (element ``i``'s transform is
    then a function of the epoch's seed and ``i``, whatever batch ``i`` lands in) and applies them here.

    Args:
        images: a batch, any dtype (integers are rounded and clipped back to their range).
        parameters: ``(angle, scale, shift_x, shift_y, flip)``, each ``(B,)``, as from
            :func:`sample_parameters`.
        fill_value: value of pixels moved in from outside.
        engine: ``"opencv"`` or ``"keras"`` (see :func:`augment_batch`).
        where: optional ``(B,)`` booleans; images where it is False are returned unchanged (and,
            with OpenCV, not resampled at all).
    """
    check_choice("engine", engine, ENGINES)
    images = tf.convert_to_tensor(images)
    dtype = images.dtype
    shape = tf.shape(images)
    matrices = affine_matrices(*parameters, shape[1], shape[2])
    mask = tf.ones([shape[0]], tf.bool) if where is None else tf.reshape(tf.cast(where, tf.bool), [-1])
    if engine == "opencv":
        out = tf.numpy_function(_warp, [images, matrices, fill_value, mask], dtype, stateful=False, name="warp")
        out.set_shape(images.shape)
        return out
    out = ops.image.affine_transform(
        tf.cast(images, tf.float32), matrices, "bilinear", fill_mode="constant", fill_value=fill_value
    )
    if dtype.is_integer:
        out = tf.clip_by_value(tf.round(out), dtype.min, dtype.max)
    out = tf.cast(out, dtype)
    return out if where is None else tf.where(tf.reshape(mask, [-1, 1, 1, 1]), out, images)


def _warp(images: np.ndarray, matrices: np.ndarray, fill_value, mask: np.ndarray) -> np.ndarray:
    """``cv2.warpAffine`` per image with output-to-input matrices (``WARP_INVERSE_MAP``); ``mask`` False: copied."""
    out = images.copy()
    height, width = images.shape[1:3]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for k in np.flatnonzero(mask):
        matrix = matrices[k, :6].reshape(2, 3).astype(np.float64)
        # One channel at a time: OpenCV's multi-channel kernels round differently, and an image must
        # come out the same whether or not its target mask rides along as a second channel.
        for c in range(images.shape[-1]):
            out[k, ..., c] = cv2.warpAffine(
                np.ascontiguousarray(images[k, ..., c]), matrix, (width, height), flags=flags,
                borderMode=cv2.BORDER_CONSTANT, borderValue=float(fill_value),
            )  # fmt: skip
    return out


def _random_sign(seed, n):
    return tf.where(tf.random.stateless_uniform([n], seed=seed) < 0.5, -1.0, 1.0)


@keras.saving.register_keras_serializable(package="tf_fracture")
class RandomAffine(keras.layers.Layer):
    """The method's random rotation, flip, scale and translation as one Keras layer.

    Active only with ``training=True``; otherwise the identity.

    Args:
        max_rotation_degrees, flip_probability, scale_range, translation_range, fill_value:
            see `AugmentConfig` (defaults: 60, 0.75, (0.85, 1.1), (0.02, 0.12), 0).
        seed: seed of the layer's random generator.

    Example:
        >>> model = keras.Sequential([keras.Input((None, None, 1)), RandomAffine(seed=0)])
    """

    def __init__(
        self,
        max_rotation_degrees=60.0,
        flip_probability=0.75,
        scale_range=(0.85, 1.1),
        translation_range=(0.02, 0.12),
        fill_value=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.config = AugmentConfig(
            float(max_rotation_degrees), float(flip_probability), tuple(scale_range), tuple(translation_range),
            float(fill_value),
        )  # fmt: skip
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        seed = keras.random.randint((2,), 0, 2**31 - 1, seed=self.seed_generator)
        return augment_batch(images, seed, self.config, engine="keras")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        c = self.config
        return {
            **super().get_config(),
            "max_rotation_degrees": c.max_rotation_degrees,
            "flip_probability": c.flip_probability,
            "scale_range": list(c.scale_range),
            "translation_range": list(c.translation_range),
            "fill_value": c.fill_value,
            "seed": self.seed,
        }
