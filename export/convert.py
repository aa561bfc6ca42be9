"""A trained classifier as a TFLite flatbuffer: float32, float16, dynamic-range or full-integer int8.

    from tf_fracture_export.convert import convert, representative_images
    model = load_model("runs/demo/model.keras", compile=False)
    flatbuffer = convert(model, "int8", calibration_images=representative_images("runs/demo", 200))

The exported graph is the Keras classifier with a sigmoid on its logit, at a fixed batch of 1:
input ``(1, S, S, 1)`` holding the PREPROCESSED greyscale image in 0..255 (float32, or int8 for the
int8 variant: its input scale is 1 and zero point -128, so ``q = pixel - 128`` exactly). Output 0
is ``(1, 1)``, the fracture probability. A classifier with a class activation map (a layer named
``"cam"``, `tf_fracture.models.CAM_LAYER`: every `FractureClassifier`) has output 1 too, the CAM
``(1, h, w, 1)`` at the feature map's resolution: one logit per position, whose spatial mean is the
logit the probability is the sigmoid of (`tf_fracture.models.cam_model`). In the int8 variant the
CAM is int8 like the probability (dequantise each with its own tensor's scale and zero point): it is
the very tensor the int8 graph averages into the logit, so exposing it adds no op and no rounding
(the converter's ``inference_output_type`` applies to every output alike). A model without a CAM
(a plain Keras classifier, or a file saved before the CAM head) exports the probability only. The
signature ``serving_default`` names the outputs ``probability`` and ``cam``. The intensity scaling
is the Keras model's own (it is inside the model); CLAHE and unsharp masking stay outside, in
OpenCV (no TFLite op does CLAHE).

Conversion path: ``TFLiteConverter.from_keras_model`` on a batch-1 functional wrapper. For a Keras 3
model TensorFlow 2.21 writes a SavedModel with ``keras.export.ExportArchive`` (calling the model with
``training=False``) and converts that, which freezes the weights: the float16 and int8 variants
really hold fp16 / int8 weights. (``from_concrete_functions`` on a ``tf.function`` leaves Keras 3's
variables as READ_VARIABLE ops: the weights stay float32 and int8 calibration fails.)
TensorFlow loads on the first conversion, not on import (the command line parses its arguments first).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tf_fracture_export.metadata import QUANTIZATIONS

if TYPE_CHECKING:
    import keras

DEFAULT_CALIBRATION_IMAGES = 200
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
CAM_OUTPUT_NAME = "cam"


def check_quantization(quantization: str) -> str:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantization {quantization!r}; expected one of {', '.join(QUANTIZATIONS)}.")
    return quantization


INT8_IO = ("int8", "float32")


def check_int8_io(quantization: str, int8_io: str) -> str:
    """``int8_io`` if it is one of `INT8_IO` and fits ``quantization`` (only int8 has a choice)."""
    if int8_io not in INT8_IO:
        raise ValueError(f"Unknown int8 input/output type {int8_io!r}; expected one of {', '.join(INT8_IO)}.")
    if int8_io != "int8" and quantization != "int8":
        raise ValueError(f"The input/output type is a choice of the int8 variant only, not of {quantization!r}.")
    return int8_io


def check_exportable(model: keras.Model) -> int:
    """The image size of a single-model classifier that can be exported; refuses anything else.

    Raises:
        ValueError: a fusion model (several backbones: export one of its members instead), or a model
            that does not take one ``(S, S, 1)`` image and give one logit.
    """
    from tf_fracture.models.fusion import FusionModel

    if isinstance(model, FusionModel):
        raise ValueError(
            f"{model.name!r} is a fusion model (several backbones in one graph); the edge export takes a single "
            "model. Export one of its member runs instead (model.members in its config.json)."
        )
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"Expected a classifier with one image input and one logit output, but {model.name!r} has "
            f"{len(inputs)} inputs and {len(outputs)} outputs."
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 1:
        raise ValueError(
            f"Expected a square single-channel image input (batch, S, S, 1), but {model.name!r} takes {shape}. "
            "Only grey-stem models (model.stem='grey') take what a device has; retrain with the grey stem."
        )
    if tuple(outputs[0].shape)[1:] != (1,):
        raise ValueError(f"Expected one fracture logit per image, but {model.name!r} gives {outputs[0].shape}.")
    return int(shape[1])


def cam_size(model: keras.Model) -> tuple[int, int] | None:
    """``(h, w)`` of the classifier's class activation map (its ``"cam"`` layer), or None when it has none.

    Raises:
        ValueError: a ``"cam"`` layer whose output is not one map ``(batch, h, w, 1)``.
    """
    from tf_fracture.models import CAM_LAYER

    try:
        layer = model.get_layer(CAM_LAYER)
    except ValueError:
        return None
    shape = tuple(layer.output.shape)
    if len(shape) != 4 or shape[3] != 1 or shape[1] is None or shape[2] is None:
        raise ValueError(
            f"Expected {model.name!r}'s {CAM_LAYER!r} layer to give one map (batch, h, w, 1), but it gives {shape}."
        )
    return int(shape[1]), int(shape[2])


def edge_model(model: keras.Model) -> keras.Model:
    """``model`` at batch 1 with a sigmoid on its logit: image (1, S, S, 1) in 0..255 -> probability (1, 1).

    A model with a class activation map (`cam_size` is not None) gives ``{"probability": (1, 1),
    "cam": (1, h, w, 1)}``: the map and the logit from one call (`tf_fracture.models.cam_model`).
    """
    import keras

    size = check_exportable(model)
    image = keras.Input((size, size, 1), batch_size=1, name=INPUT_NAME)
    sigmoid = keras.layers.Activation("sigmoid", dtype="float32", name=OUTPUT_NAME)
    if cam_size(model) is None:
        return keras.Model(image, sigmoid(model(image, training=False)), name=f"{model.name}_edge")
    from tf_fracture.models import cam_model

    cam, logit = cam_model(model)(image, training=False)
    # A dict names the signature's outputs; their order in the flatbuffer is fixed after conversion.
    return keras.Model(image, {OUTPUT_NAME: sigmoid(logit), CAM_OUTPUT_NAME: cam}, name=f"{model.name}_edge")


def convert(
    model: keras.Model,
    quantization: str,
    *,
    calibration_images: np.ndarray | Iterable[np.ndarray] | None = None,
    int8_io: str = "int8",
) -> bytes:
    """The TFLite flatbuffer of ``model`` (see the module docstring for its input and outputs).

    Args:
        model: a single-model classifier (one logit); see `check_exportable`.
        quantization: ``"float32"`` (no change); ``"float16"`` (fp16 weights, float I/O); ``"dynamic"``
            (int8 weights, float activations and I/O); ``"int8"`` (full integer: every op int8, int8 input
            and output; int8 rather than uint8, whose extra quantize ops stay off the delegate).
        calibration_images: int8 only (required there): preprocessed images ``(N, S, S, 1)`` in 0..255,
            e.g. `representative_images` of the run's training split.
        int8_io: int8 only: ``"int8"`` (default) quantised input and outputs; ``"float32"`` keeps every op
            int8 but takes and gives float32 (a QUANTIZE op first, DEQUANTIZE last), for runtimes that have
            no int8 tensors (LiteRT.js, the web app's).

    Raises:
        ValueError: unknown quantization, int8 without calibration images (or with the wrong shape),
            calibration images for another variant, or a model `check_exportable` refuses.
    """
    import tensorflow as tf

    check_quantization(quantization)
    check_int8_io(quantization, int8_io)
    size = check_exportable(model)
    if quantization == "int8":
        calibration = _calibration_array(calibration_images, size)
    elif calibration_images is not None:
        raise ValueError(f"Calibration images are for the int8 variant only, not {quantization!r}.")
    converter = tf.lite.TFLiteConverter.from_keras_model(edge_model(model))
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    # Keras' ExportArchive prints "Saved artifact at /tmp/..." to stdout: noise in a command's output.
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffer = converter.convert()
    if cam_size(model) is None:
        return flatbuffer
    return outputs_in_order(flatbuffer, (OUTPUT_NAME, CAM_OUTPUT_NAME))


def outputs_in_order(flatbuffer: bytes, names: Sequence[str]) -> bytes:
    """``flatbuffer`` with its main graph's outputs in the order of ``names`` (keys of its first signature).

    The converter orders a multi-output graph's outputs as it pleases (the same Keras outputs came out
    as [cam, probability] or [probability, cam] depending on their names and order); apps read outputs
    by index, so the probability must be output 0 whatever the converter did. The outputs vector holds
    tensor indices: permuting it in place changes nothing else in the file (the signature maps names
    to tensor indices, not to positions).

    Raises:
        ValueError: the model's first signature does not name exactly these outputs.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    buffer = bytearray(flatbuffer)
    model = schema.Model.GetRootAs(buffer, 0)
    if model.SignatureDefsLength() < 1:
        raise ValueError("The converted model has no signature: cannot tell its outputs apart.")
    signature = model.SignatureDefs(0)
    by_name = {}
    for j in range(signature.OutputsLength()):
        entry = signature.Outputs(j)
        by_name[entry.Name().decode()] = entry.TensorIndex()
    if sorted(by_name) != sorted(names):
        raise ValueError(
            f"Expected the converted model's outputs to be {sorted(names)}, but they are {sorted(by_name)}."
        )
    outputs = model.Subgraphs(signature.SubgraphIndex()).OutputsAsNumpy()  # a view into `buffer`
    if sorted(int(t) for t in outputs) != sorted(by_name.values()):
        raise ValueError("The converted model's signature and its graph's outputs disagree.")
    outputs[:] = [by_name[name] for name in names]
    return bytes(buffer)


def _calibration_array(images, size: int) -> np.ndarray:
    if images is None:
        raise ValueError(
            "Full-integer int8 needs calibration images: pass `calibration_images` (representative_images(run, n))."
        )
    array = np.asarray(list(images) if not isinstance(images, np.ndarray) else images, dtype=np.float32)
    if array.ndim != 4 or array.shape[1:] != (size, size, 1) or len(array) == 0:
        raise ValueError(
            f"Expected calibration images of shape (N, {size}, {size}, 1) with N >= 1, preprocessed, in 0..255; "
            f"got {array.shape}."
        )
    if array.min() < 0 or array.max() > 255:
        raise ValueError(
            f"Calibration images must be preprocessed images in 0..255, got values in [{array.min()}, {array.max()}]."
        )
    return array


def representative_images(run, n: int = DEFAULT_CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """``n`` preprocessed images ``(n, S, S, 1)`` uint8 from the run's own TRAINING split, without augmentation.

    Read the way training reads them: the split's examples through the same preprocessed store
    (`tf_fracture.data.pipeline.preprocessed_store`, so a run's disk cache is reused), then a
    sample of ``n`` indices drawn without replacement by ``numpy.random.default_rng(seed)`` and
    returned in index order (all of them when the split holds ``n`` or fewer).
    The registry of datasets must be imported first (``import tf_fracture.datasets``).

    Args:
        run: a run folder (its ``config.json``) or an `ExperimentConfig`.
        n: how many images (at least 1).
        seed: the sample's seed.
    """
    from tf_fracture.configs import ExperimentConfig
    from tf_fracture.data.pipeline import preprocessed_store
    from tf_fracture.data.sources import load_split, source_name
    from tf_fracture.validation import check_int

    check_int("n", n)
    experiment = run if isinstance(run, ExperimentConfig) else read_experiment(run)
    data = experiment.data
    store = preprocessed_store(
        load_split(data, data.train_split),
        data.preprocess_config(),
        data.cache,
        source=source_name(data, data.train_split),
    )
    count = len(store)
    if count == 0:
        raise ValueError(f"The {data.dataset} {data.train_split!r} split is empty: nothing to calibrate on.")
    indices = np.sort(np.random.default_rng(seed).choice(count, size=min(n, count), replace=False))
    images, _ = store.gather(indices)
    return np.asarray(images, dtype=np.uint8)


def read_experiment(run_dir: str | os.PathLike):
    """The run's resolved `ExperimentConfig` (``RUN/config.json``), with what to do when it is missing."""
    from tf_fracture.configs import ExperimentConfig
    from tf_fracture.run_folder import RunFolder

    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        raise FileNotFoundError(
            f"No config.json in {str(run_dir)!r}: expected a training run folder (tf-fracture train)."
        )
    return ExperimentConfig.from_json(folder.config)
