"""Edge: is the int8 model really faster? The method's MobileNetV3-Large+CBAM against the edge variant.

Converts the method's MobileNetV3-Large + CBAM (grey stem, 768-d features) and the edge
variant ``large_minimal`` (Keras' minimalistic MobileNetV3-Large: ReLU, no SE, 3x3; + CBAM) to
TFLite as float32 and as full-integer int8 (int8 input and output, calibrated on random
0..255 images: latency and delegation do not depend on the weights' values), then counts
the XNNPACK delegate partitions and the ops left off them (`tf_fracture_export.litert`), asks LiteRT
whether the model is fully accelerated, and
times one image at 1, 2 and 4 threads. Prints a Markdown table.

XNNPACK has no int8 hard-swish, so the method's int8 model splits into one partition per
run of supported ops, with TFLite's reference kernels between them; the minimalistic
network has no hard-swish and runs as one partition. Whether int8 then beats float32 depends
on the CPU: phones' ARM cores have int8 dot-product instructions (dotprod, i8mm) that XNNPACK
uses; on an x86 host with AVX2 only (no VNNI), XNNPACK's float32 kernels are as fast or faster.
The table prints the host's CPU so that numbers are compared on the same kind of machine.

Run:
    python benchmarks/edge_benchmark.py                 # 224 px, 1/2/4 threads, 3 rounds of 50 runs
    python benchmarks/edge_benchmark.py --width small   # MobileNetV3-Small and small_minimal
    python benchmarks/edge_benchmark.py --quick         # smoke mode: 64 px, MobileNetV3-Small, 1 thread

The models are built with random weights (``weights=None``); latency needs no training.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from tf_fracture.models import build_classifier
from tf_fracture_export import litert

QUANTIZATIONS = ("float32", "int8")
# label -> (family, variant): the method's network and its edge variant.
CANDIDATES = {
    "large": {"method": ("mobilenetv3", "large"), "edge": ("mobilenetv3", "large_minimal")},
    "small": {"method": ("mobilenetv3", "small"), "edge": ("mobilenetv3", "small_minimal")},
}


@dataclass(frozen=True)
class Row:
    model: str  # e.g. "method: mobilenetv3 large + CBAM"
    quantization: str
    size_mb: float
    partitions: int
    fully_accelerated: bool
    undelegated: dict[str, int]  # op -> count left to LiteRT's reference kernels
    latency_ms: dict[int, float]  # threads -> median ms per image


def probability_model(classifier: keras.Model, size: int) -> keras.Model:
    """The exported model's I/O: one greyscale image of 0..255 at ``size`` px -> the fracture probability."""
    image = keras.Input((size, size, classifier.input_shape[-1]), batch_size=1, name="image")
    probability = keras.layers.Activation("sigmoid", name="probability")(classifier(image))
    return keras.Model(image, probability, name=f"{classifier.name}_probability")


def calibration_images(shape: Sequence[int], count: int, seed: int = 0) -> np.ndarray:
    """Random 0..255 images (float32), ``count`` of ``shape`` (without the batch axis)."""
    return np.random.default_rng(seed).integers(0, 256, (count, *shape)).astype(np.float32)


def to_tflite(model: keras.Model, quantization: str, calibration: np.ndarray | None = None) -> bytes:
    """``model`` as a TFLite flatbuffer: ``"float32"``, or ``"int8"`` (full integer, int8 input and output)."""
    import tensorflow as tf  # only the conversion needs TensorFlow
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"Expected `quantization` to be one of {QUANTIZATIONS}, but got {quantization!r}.")
    if quantization == "int8" and (calibration is None or not len(calibration)):
        raise ValueError("int8 conversion needs calibration images (N, H, W, C) of 0..255.")
    # The inference graph with its variables frozen to constants: the same ops as
    # `from_keras_model` (which exports a SavedModel first), converted about 6x faster.
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(function)])
    if quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # int8, not uint8: uint8 I/O adds QUANTIZE ops at the ends that stay off the delegate.
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def measure(
    candidates: dict[str, tuple[str, str]],
    size: int,
    threads: Iterable[int],
    runs: int,
    calibration_count: int,
    directory: pathlib.Path,
    quantizations: Sequence[str] = QUANTIZATIONS,
    repeats: int = 3,
) -> list[Row]:
    """Converts every candidate, then times them interleaved: ``repeats`` rounds over all models and
    thread counts, ``runs`` invocations each, reporting the median of the rounds' medians (a shared
    machine's load then weighs on every model alike instead of on whichever ran during a burst)."""
    threads = tuple(threads)
    converted = []
    for label, (family, variant) in candidates.items():
        keras.utils.set_random_seed(0)
        classifier = build_classifier(family, variant, weights=None, input_size=size)
        model = probability_model(classifier, size)
        calibration = calibration_images(model.input_shape[1:], calibration_count)
        for quantization in quantizations:
            path = directory / f"{family}_{variant}_{size}_{quantization}.tflite"
            path.write_bytes(to_tflite(model, quantization, calibration))
            converted.append((f"{label}: {family} {variant} + CBAM", quantization, path))
    times = {(path, n): [] for _, _, path in converted for n in threads}
    for _ in range(repeats):
        for (path, n), medians in times.items():
            medians.append(litert.latency_ms(path, n, runs=runs))
    return [
        Row(
            model=name,
            quantization=quantization,
            size_mb=path.stat().st_size / 2**20,
            partitions=litert.delegate_partitions(path),
            fully_accelerated=litert.is_fully_accelerated(path),
            undelegated=litert.undelegated_ops(path),
            latency_ms={n: statistics.median(times[path, n]) for n in threads},
        )
        for name, quantization, path in converted
    ]


def markdown(rows: Sequence[Row], size: int) -> str:
    threads = sorted({n for row in rows for n in row.latency_ms})
    header = ["model", "TFLite", "size (MB)", "XNNPACK partitions", "fully accelerated", "ops off XNNPACK"]
    header += [f"ms/image @{n} thread{'s' if n > 1 else ''}" for n in threads]
    title = f"Input {size}x{size}x1, batch 1, ms: median over interleaved rounds of each round's median."
    lines = [title, "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---", "---", "---:", "---:", "---", "---", *["---:"] * len(threads)]) + "|")
    for row in rows:
        accelerated = "yes" if row.fully_accelerated else "no"
        undelegated = ", ".join(f"{op} x{count}" for op, count in row.undelegated.items()) or "none"
        cells = [row.model, row.quantization, f"{row.size_mb:.2f}", str(row.partitions), accelerated, undelegated]
        cells += [f"{row.latency_ms[n]:.2f}" for n in threads]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo) and its int8 dot-product flags where known."""
    try:
        info = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name = fields.get("model name") or fields.get("Hardware") or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    int8 = sorted(flags & {"avx2", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
    return f"{name} ({platform.machine()}; {', '.join(int8) or 'no int8 dot-product flags'})"


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input size in pixels")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4], help="thread counts to time")
    parser.add_argument("--runs", type=int, default=50, help="timed invocations per model, thread count and round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds over all models")
    parser.add_argument("--calibration-images", type=int, default=32, help="random images calibrating int8")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="keep the .tflite files here")
    parser.add_argument("--width", choices=sorted(CANDIDATES), default="large", help="MobileNetV3-Large or -Small")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 64 px MobileNetV3-Small pair, 1 thread")
    args = parser.parse_args(argv)
    candidates = CANDIDATES[args.width]
    if args.quick:
        candidates, args.size, args.threads, args.runs, args.repeats = CANDIDATES["small"], 64, [1], 3, 1
        args.calibration_images = 4
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.out or pathlib.Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        rows = measure(
            candidates, args.size, args.threads, args.runs, args.calibration_images, directory, repeats=args.repeats
        )
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores visible")
    print(markdown(rows, args.size))
    return rows


if __name__ == "__main__":
    main()
