"""Smoke run: build every model of the method, run it on a synthetic radiograph, print a summary.

    python -m tf_fracture.smoke                  # random init, works offline
    python -m tf_fracture.smoke --weights imagenet --size 384 --keras-summary

This is the README's main command until the training CLI (``python -m tf_fracture.train``)
lands; it proves the install and the models on a fresh machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def synthetic_radiograph(size: int, seed: int = 0):
    """A crude bone-like test image in [0, 255]: a bright bar with a darker medulla, plus noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 40 + 30 * np.exp(-((xx - 0.5) ** 2) / 0.08)  # soft tissue
    shaft = np.abs(xx - 0.5 - 0.1 * (yy - 0.5)) < 0.09
    image = np.where(shaft, 200, image)
    image = np.where(np.abs(xx - 0.5 - 0.1 * (yy - 0.5)) < 0.04, 150, image)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255)
    return image.astype("float32")[None, :, :, None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", choices=("none", "imagenet"), default="none", help="backbone initialisation")
    parser.add_argument("--size", type=int, default=224, help="input size in pixels (default 224)")
    parser.add_argument("--keras-summary", action="store_true", help="also print Keras' full layer summaries")
    args = parser.parse_args(argv)

    import keras

    from tf_fracture.backbones import WeightsUnavailableError, available_backbones
    from tf_fracture.layers import CBAM
    from tf_fracture.models import build_classifier, build_fusion

    weights = None if args.weights == "none" else "imagenet"
    image = synthetic_radiograph(args.size)
    print(f"tf-fracture smoke run: weights={args.weights}, input 1x{args.size}x{args.size}x1 (synthetic radiograph)\n")
    print(f"{'model':<40} {'params':>11} {'features':>9} {'CBAM blocks':>12} {'logit':>9} {'build s':>8}")
    models = []
    try:
        for name in available_backbones():
            start = time.perf_counter()
            model = build_classifier(name, weights=weights)
            models.append(model)
            _report(model, image, start, CBAM)
        start = time.perf_counter()
        fusion = build_fusion(models)
        _report(fusion, image, start, CBAM, features="fused_features")
    except WeightsUnavailableError as error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 2
    if args.keras_summary:
        for model in [*models, fusion]:
            model.summary(line_length=120)
    print(f"\nAll {len(models) + 1} models built and ran (Keras {keras.__version__}).")
    return 0


def _report(model, image, start, cbam_class, features="features"):
    import numpy as np

    logit = float(np.asarray(model(image, training=False))[0, 0])
    width = model.get_layer(features).output.shape[-1]
    blocks = sum(isinstance(layer, cbam_class) for layer in _all_layers(model))
    elapsed = time.perf_counter() - start
    print(f"{model.name:<40} {model.count_params():>11,} {width:>9} {blocks:>12} {logit:>9.4f} {elapsed:>8.1f}")


def _all_layers(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


if __name__ == "__main__":
    sys.exit(main())
