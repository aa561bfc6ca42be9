"""Tiny TFLite conversions and test radiographs for the export tests (import as `from export_helpers import ...`).

`to_tflite` is a minimal stand-in for the export's converter: batch fixed at 1 (a dynamic batch leaves
SHAPE/STRIDED_SLICE/PACK/RESHAPE ops outside XNNPACK and splits even a float32 model in two),
float32 or full-integer int8 with int8 I/O calibrated on the images given; it gives the model's own
output only (no class activation map).
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
import tensorflow as tf


def radiograph(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A ``(height, width)`` uint8 stand-in radiograph: a "bone" band, blobs and noise at several scales.

    CLAHE and unsharp masking change it, and its structure differs from one draw to the next.
    """
    y, x = np.mgrid[0:height, 0:width]
    image = 60 + 80 * np.exp(-(((x - width * rng.uniform(0.3, 0.7)) / (width * 0.12)) ** 2))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(3, 12)
        image += rng.uniform(-50, 50) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r**2))
    image += rng.normal(0, 12, image.shape)
    return np.clip(cv2.GaussianBlur(image, (3, 3), 0), 0, 255).astype(np.uint8)


def spread_batchnorm(model: keras.Model, images: np.ndarray) -> None:
    """Every BatchNorm's moving statistics := those of ``images`` (one training-mode pass with momentum 0).

    An untrained deep network's activations fade layer by layer (the logits of different images agree
    to 1e-11 at Keras' initial weights); with each layer normalised on real inputs they differ again.
    """
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(np.asarray(images, np.float32), training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum


def to_tflite(model: keras.Model, path, *, calibration: np.ndarray | None = None, sigmoid: bool = False):
    """Writes ``model`` (batch fixed at 1) as a .tflite file; int8 with int8 I/O when ``calibration`` is given.

    Args:
        model: a Keras model taking ``(B, S, S, C)``.
        path: the .tflite file to write.
        calibration: ``(N, S, S, C)`` float images for full-integer quantisation, or None for float32.
        sigmoid: append a sigmoid (the classifier gives a logit; the exported model gives the probability).
    """
    inputs = keras.Input(model.input_shape[1:], batch_size=1)
    outputs = model(inputs)
    if sigmoid:
        outputs = keras.layers.Activation("sigmoid")(outputs)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs))
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[np.newaxis].astype(np.float32)] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path
