"""Model cost: parameters, FLOPs at 224/384/584 px and CPU forward latency, with and without CBAM.

Also times our ConvNeXt-Tiny rebuild against ``keras.applications.ConvNeXtTiny`` (the same
architecture, whose 7x7 depthwise convs are grouped ``Conv2D``s) in the same run, interleaved.

Run:
    .venv/bin/python benchmarks/models_benchmark.py            # the method's variants
    .venv/bin/python benchmarks/models_benchmark.py --variants all --repeats 20

FLOPs are counted by TensorFlow's profiler on the frozen inference graph for one
1-channel image (a multiply-add counts as 2 FLOPs).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tf_fracture.backbones import available_backbones, available_variants, build_backbone, get_family
from tf_fracture.models import build_classifier

SIZES = (224, 384, 584)


def flops(model: keras.Model, size: int) -> int:
    spec = tf.TensorSpec((1, size, size, model.input_shape[-1]), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


def forward_fn(model: keras.Model):
    return tf.function(lambda x: model(x, training=False), jit_compile=False)


def time_forwards(fns: dict, x: dict, repeats: int, warmup: int = 2) -> dict:
    """Median seconds per call; the functions are interleaved so drift hits all alike."""
    for name, fn in fns.items():
        for _ in range(warmup):
            fn(x[name]).numpy()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(x[name]).numpy()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", choices=("method", "all"), default="method")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x1 = (rng.random((args.batch, 224, 224, 1)) * 255).astype("float32")
    x3 = np.repeat(x1, 3, axis=-1)
    rows = []
    for name in available_backbones():
        variants = available_variants(name) if args.variants == "all" else (get_family(name).default_variant,)
        for variant in variants:
            pair = {}
            for attention in (False, True):
                model = build_classifier(name, variant, weights=None, attention=attention)
                cost = {size: flops(model, size) for size in SIZES}
                pair[attention] = (model, cost)
            fns = {att: forward_fn(model) for att, (model, _) in pair.items()}
            latency = time_forwards(fns, {False: x1, True: x1}, args.repeats)
            for attention, (model, cost) in pair.items():
                rows.append((f"{name}-{variant}", attention, model.count_params(), cost, latency[attention]))
                print(f"measured {name}-{variant} attention={attention}", flush=True)

    reference = keras.applications.ConvNeXtTiny(
        include_top=False, weights=None, input_shape=(224, 224, 3), pooling="avg"
    )
    ours = build_backbone("convnext", "tiny", weights=None, attention=False, stem="rgb", feature_dim=None)
    convnext = time_forwards(
        {"keras": forward_fn(reference), "ours": forward_fn(ours)}, {"keras": x3, "ours": x3}, args.repeats
    )

    print(
        f"\nCPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}; batch {args.batch}, median of {args.repeats} forwards at 224 px.\n"
    )
    print("| model | CBAM | params (M) | GFLOPs 224 | GFLOPs 384 | GFLOPs 584 | CPU ms/batch 224 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model_name, attention, params, cost, seconds in rows:
        gflops = " | ".join(f"{cost[s] / 1e9:.2f}" for s in SIZES)
        cbam = "yes" if attention else "no"
        print(f"| {model_name} | {cbam} | {params / 1e6:.2f} | {gflops} | {seconds * 1e3:.0f} |")
    print("\nWhat CBAM adds (with vs. without, same 768-d head):\n")
    print("| model | params | FLOPs 224 | FLOPs 584 | latency 224 |")
    print("|---|---:|---:|---:|---:|")
    for (name, _, p0, c0, t0), (_, _, p1, c1, t1) in zip(rows[::2], rows[1::2], strict=True):
        print(
            f"| {name} | {100 * (p1 / p0 - 1):+.2f}% | {100 * (c1[224] / c0[224] - 1):+.2f}% | "
            f"{100 * (c1[584] / c0[584] - 1):+.2f}% | {100 * (t1 / t0 - 1):+.1f}% |"
        )
    print(
        f"\nConvNeXt-Tiny forward, batch {args.batch} at 224 px (RGB, no CBAM, same architecture): "
        f"keras.applications {convnext['keras'] * 1e3:.0f} ms, ours {convnext['ours'] * 1e3:.0f} ms, "
        f"ours/keras = {convnext['ours'] / convnext['keras']:.2f}"
    )


if __name__ == "__main__":
    main()
