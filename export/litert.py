"""The one place that talks to LiteRT: load a ``.tflite`` model, run it, and measure it as a device would.

TensorFlow-free: it needs ``ai_edge_litert`` (the maintained successor of ``tflite-runtime``) and NumPy
only, so that the predictor, the export's verification and the benchmarks run the model the same way.

The models this works with take ``(1, S, S, 1)`` preprocessed greyscale images, 0..255 (float32, or
int8 quantised with the input tensor's scale and zero point), and return the fracture probability
``(1, 1)`` as output 0 and, when they carry one, the class activation map ``(1, h, w, 1)`` as
output 1 (`cam_size`); each float32, or int8 dequantised with its own tensor's scale and zero point.
`run_model` returns the probabilities, `run_model_with_cam` the maps too.

Delegation: LiteRT's interpreter applies the XNNPACK delegate by default. Every group of consecutive
ops XNNPACK can run becomes one ``DELEGATE`` node (a partition); an op it cannot run (int8
``HARD_SWISH``, a dynamic-shape ``SHAPE``/``RESHAPE``) stays on the reference kernels and splits the
graph. `delegate_partitions` counts the partitions, `undelegated_ops` names what stays outside, and
`is_fully_accelerated` asks LiteRT's ``CompiledModel`` the same question through its public API.

Example:
    >>> interpreter = load_interpreter("runs/demo/export/model_int8.tflite", num_threads=2)  # doctest: +SKIP
    >>> run_model(interpreter, np.zeros((3, 96, 96, 1), np.uint8))  # doctest: +SKIP
    array([0.41, 0.41, 0.41], dtype=float32)
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

#: The op name LiteRT gives a node that a delegate (here XNNPACK, the default one) runs.
DELEGATE_OP = "DELEGATE"


def load_interpreter(model_path: str | os.PathLike, num_threads: int | None = None):
    """A LiteRT ``Interpreter`` for the model, tensors allocated and the default XNNPACK delegate applied.

    Args:
        model_path: the ``.tflite`` file.
        num_threads: CPU threads for the kernels and XNNPACK (``None``: LiteRT's default, one).

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``num_threads`` below 1, or the file is not a model LiteRT can load.
    """
    from ai_edge_litert.interpreter import Interpreter  # lazy: importing this module stays cheap

    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"No model at {path}: pass the .tflite file that tf-fracture export wrote.")
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)):
        raise ValueError(f"Expected `num_threads` to be an int >= 1 or None, but got `num_threads={num_threads!r}`.")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"Expected `num_threads` >= 1, but got `num_threads={num_threads}`.")
    try:
        with _quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ValueError(
            f"{path}: LiteRT cannot load this model ({error}). Export it again with tf-fracture export."
        ) from None
    return interpreter


def input_size(interpreter) -> int:
    """The side ``S`` of the model's ``(B, S, S, 1)`` input.

    Raises:
        ValueError: the model does not take one square single-channel image input.
    """
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        raise ValueError(f"Expected a model with one input, but it has {len(inputs)}: not a tf-fracture export.")
    shape = tuple(int(d) for d in inputs[0]["shape"])
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1:
        raise ValueError(
            f"Expected the model's input to be (batch, S, S, 1) greyscale, but it is {shape}: not a tf-fracture export."
        )
    return shape[1]


def cam_size(interpreter) -> tuple[int, int] | None:
    """``(h, w)`` of the model's class activation map (output 1), or None for a model that gives the probability only.

    Raises:
        ValueError: outputs that are not a tf-fracture export's: the probability ``(B, 1)`` first, then
            optionally the map ``(B, h, w, 1)``, nothing else.
    """
    outputs = interpreter.get_output_details()
    if not 1 <= len(outputs) <= 2:
        raise ValueError(
            f"Expected a model with one or two outputs (the probability, then the class activation map), but it has "
            f"{len(outputs)}: not a tf-fracture export."
        )
    shapes = [tuple(int(d) for d in detail["shape"]) for detail in outputs]
    if len(shapes[0]) != 2 or shapes[0][1] != 1:
        raise ValueError(
            f"Expected output 0 to be the probability (batch, 1), but it has shape {shapes[0]}: not a tf-fracture "
            "export (or its outputs are out of order)."
        )
    if len(shapes) == 1:
        return None
    if len(shapes[1]) != 4 or shapes[1][3] != 1 or shapes[1][0] != shapes[0][0]:
        raise ValueError(
            f"Expected output 1 to be the class activation map (batch, h, w, 1), but it has shape {shapes[1]} "
            f"(output 0: {shapes[0]}): not a tf-fracture export."
        )
    return shapes[1][1], shapes[1][2]


def run_model(interpreter, images: np.ndarray) -> np.ndarray:
    """Runs the model on preprocessed images and returns one fracture probability per image.

    int8 (or uint8) inputs are quantised with the input tensor's scale and zero point
    (``round(x / scale) + zero_point``, clipped to the type's range), as the converter's calibration
    assumed; quantised outputs are dequantised with ``(q - zero_point) * scale``. A model with batch 1
    is run one image at a time; one with another batch size is resized to the batch.

    Args:
        interpreter: from `load_interpreter`.
        images: ``(N, S, S, 1)`` or ``(N, S, S)``, uint8 or float, values 0..255, already preprocessed.

    Returns:
        ``(N,)`` float32 probabilities.

    Raises:
        ValueError: images of the wrong shape for the model, or a model whose output 0 is not one value per image.
    """
    return _run(interpreter, images, with_cam=False)[0]


def run_model_with_cam(interpreter, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like `run_model`, and also each image's class activation map (the model's output 1), dequantised.

    Returns:
        ``(probabilities (N,), cams (N, h, w))``, both float32; the mean of a CAM is the logit whose
        sigmoid is the probability (up to the int8 variant's rounding).

    Raises:
        ValueError: as `run_model`, or a model without a CAM output (`cam_size` is None).
    """
    size = cam_size(interpreter)
    if size is None:
        raise ValueError(
            "This model gives the probability only (no class activation map output): export it again from a "
            "classifier with a CAM head (tf_fracture.models.build_classifier) to get heatmaps."
        )
    return _run(interpreter, images, with_cam=True)


def _run(interpreter, images: np.ndarray, with_cam: bool) -> tuple[np.ndarray, np.ndarray | None]:
    images = np.asarray(images)
    size = input_size(interpreter)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[1:] != (size, size, 1):
        raise ValueError(
            f"Expected images of shape (N, {size}, {size}, 1) for this model, but got {images.shape}: "
            "preprocess them to the model's size first (metadata.preprocessing)."
        )
    cam = cam_size(interpreter) if with_cam else None
    if len(images) == 0:
        return np.zeros((0,), np.float32), (np.zeros((0, *cam), np.float32) if with_cam else None)
    detail = interpreter.get_input_details()[0]
    quantized = _quantize(images, detail)
    batch = int(detail["shape"][0])
    if batch == 1:
        outputs = [_invoke(interpreter, quantized[i : i + 1], with_cam) for i in range(len(quantized))]
    else:
        if batch != len(quantized):
            interpreter.resize_tensor_input(detail["index"], list(quantized.shape))
            interpreter.allocate_tensors()
        outputs = [_invoke(interpreter, quantized, with_cam)]
    probabilities = np.concatenate([p for p, _ in outputs]).astype(np.float32)
    cams = np.concatenate([c for _, c in outputs]).astype(np.float32) if with_cam else None
    return probabilities, cams


def delegate_partitions(model_path: str | os.PathLike) -> int:
    """The number of XNNPACK partitions (``DELEGATE`` nodes) the model is split into; 1 means one piece.

    Counted on LiteRT's interpreter after it has applied its default XNNPACK delegate. 0 means XNNPACK
    runs nothing of it.
    """
    return sum(op["op_name"] == DELEGATE_OP for op in _ops_after_delegation(load_interpreter(model_path)))


def undelegated_ops(model_path: str | os.PathLike) -> dict[str, int]:
    """The ops XNNPACK leaves to LiteRT's reference kernels, by op name and count (``{}``: none).

    Each ``DELEGATE`` node lists the tensors entering and leaving its partition; walking back from its
    outputs to its inputs through the original ops gives the ops it replaced. The rest stay outside.

    Example:
        >>> undelegated_ops("model_int8.tflite")  # doctest: +SKIP
        {'HARD_SWISH': 19}
    """
    ops = _ops_after_delegation(load_interpreter(model_path))
    original = {op["index"]: op for op in ops if op["op_name"] != DELEGATE_OP}
    producer = {int(t): index for index, op in original.items() for t in op["outputs"]}
    replaced: set[int] = set()
    for delegate in (op for op in ops if op["op_name"] == DELEGATE_OP):
        boundary = {int(t) for t in delegate["inputs"]}
        pending = [int(t) for t in delegate["outputs"]]
        seen: set[int] = set()
        while pending:
            tensor = pending.pop()
            if tensor in seen or tensor in boundary:
                continue
            seen.add(tensor)
            node = producer.get(tensor)
            if node is None or node in replaced:
                continue
            replaced.add(node)
            pending.extend(int(t) for t in original[node]["inputs"] if t != -1)
    counts = collections.Counter(op["op_name"] for index, op in original.items() if index not in replaced)
    return dict(counts.most_common())


def is_fully_accelerated(model_path: str | os.PathLike) -> bool:
    """Whether LiteRT runs the whole model on its CPU accelerator (XNNPACK), nothing on fallback kernels.

    Asks LiteRT's public ``CompiledModel.is_fully_accelerated()`` (ai-edge-litert >= 2.x). Where that
    API is missing, answers from the interpreter: one partition and no undelegated op.
    """
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"No model at {path}: pass the .tflite file that tf-fracture export wrote.")
    try:
        from ai_edge_litert.compiled_model import CompiledModel
    except ImportError:
        return delegate_partitions(path) == 1 and not undelegated_ops(path)
    with _quiet_native_stderr():  # LiteRT's C++ logs ~25 INFO lines per model on stderr
        model = CompiledModel.from_file(str(path))
        try:
            accelerated = bool(model.is_fully_accelerated())
        finally:
            model.close()
            del model
            gc.collect()  # frees the model's LiteRT environment now, so its teardown log is silenced too
    return accelerated


@contextlib.contextmanager
def _quiet_native_stderr():
    """Sends file descriptor 2 to /dev/null for the block (native libraries write there directly);
    ``TF_FRACTURE_VERBOSE=1`` keeps it."""
    if os.environ.get("TF_FRACTURE_VERBOSE") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def latency_ms(model_path: str | os.PathLike, num_threads: int, runs: int = 50, warmup: int = 5) -> float:
    """The median wall time of one inference at batch 1, in milliseconds, with ``num_threads`` threads.

    Times ``invoke()`` alone on a fixed random image (preprocessing and I/O excluded), after ``warmup``
    untimed runs that let XNNPACK pack its weights and warm the caches.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"Expected `runs` >= 1 and `warmup` >= 0, but got `runs={runs}`, `warmup={warmup}`.")
    interpreter = load_interpreter(model_path, num_threads=num_threads)
    detail = interpreter.get_input_details()[0]
    shape = [1, *(int(d) for d in detail["shape"][1:])]
    if int(detail["shape"][0]) != 1:
        interpreter.resize_tensor_input(detail["index"], shape)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
    image = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    interpreter.set_tensor(detail["index"], _quantize(image, detail))
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        interpreter.invoke()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def _quantize(images: np.ndarray, detail) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return images.astype(dtype)
    scale, zero_point = _scale_zero_point(detail, "input")
    info = np.iinfo(dtype)
    values = np.rint(images.astype(np.float64) / scale) + zero_point
    return np.clip(values, info.min, info.max).astype(dtype)


def _invoke(interpreter, batch: np.ndarray, with_cam: bool) -> tuple[np.ndarray, np.ndarray | None]:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
    interpreter.invoke()
    outputs = interpreter.get_output_details()
    if not 1 <= len(outputs) <= 2:
        raise ValueError(
            f"Expected a model with one or two outputs (the probability, then the class activation map), but it has "
            f"{len(outputs)}: not a tf-fracture export."
        )
    values = _dequantize(interpreter, outputs[0], "output 0")
    if values.ndim != 2 or values.size != len(batch):
        raise ValueError(
            f"Expected one probability per image, but the model's output 0 has shape {values.shape} for "
            f"{len(batch)} image(s): not a tf-fracture export."
        )
    cam = _dequantize(interpreter, outputs[1], "output 1")[..., 0] if with_cam else None
    return values.reshape(len(batch)), cam


def _dequantize(interpreter, detail, which: str) -> np.ndarray:
    # get_tensor copies, so the next invoke() cannot overwrite what is returned.
    values = interpreter.get_tensor(detail["index"])
    if np.issubdtype(values.dtype, np.integer):
        scale, zero_point = _scale_zero_point(detail, which)
        return (values.astype(np.float64) - zero_point) * scale
    return values.astype(np.float64)


def _scale_zero_point(detail, which: str) -> tuple[float, int]:
    scale, zero_point = detail["quantization"]
    if not scale:
        raise ValueError(f"The model's {which} is {np.dtype(detail['dtype']).name} without a quantisation scale.")
    return float(scale), int(zero_point)


def _ops_after_delegation(interpreter) -> list[dict]:
    # The node list after delegation holds the original ops and one DELEGATE node per partition.
    # `_get_ops_details` is private in LiteRT 2.3, but it is the only way to see the partitions there.
    get_ops = getattr(interpreter, "_get_ops_details", None)
    if get_ops is None:
        raise RuntimeError(
            "This ai-edge-litert has no Interpreter._get_ops_details: install the version in tf-fracture's dev extra."
        )
    return get_ops()
