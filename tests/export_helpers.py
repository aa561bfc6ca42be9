"""Tiny TFLite conversions for the export tests (import as `from export_helpers import ...`).

A minimal stand-in for the export's converter: batch fixed at 1 (a dynamic batch leaves
SHAPE/STRIDED_SLICE/PACK/RESHAPE ops outside XNNPACK and splits even a float32 model in two),
float32 or full-integer int8 with int8 I/O calibrated on the images given.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


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
