"""Smoke run: the built-in synthetic dataset through the data pipeline into every model.

    tf-fracture smoke                  # random init, works offline
    tf-fracture smoke --weights imagenet --stage mura --keras-summary

It builds the ``synthetic_xray/tiny`` TFDS dataset, takes one training batch through the
method's preprocessing (resize, CLAHE, unsharp masking) and augmentation, builds the three
classifiers and the fusion model, and runs each on the batch. This is the README's main
command until the training CLI (``tf-fracture train``) lands; it proves the install,
the data path and the models on a fresh machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from tf_fracture.cli import parse_args

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def synthetic_batch(stage: str, data_dir: str, batch_size: int):
    """One augmented training batch of ``synthetic_xray/tiny`` at the stage's preset."""
    import tensorflow_datasets as tfds

    import tf_fracture.datasets  # noqa: F401  (registers synthetic_xray)
    from tf_fracture.data.pipeline import PipelineConfig, training_pipeline
    from tf_fracture.data.preprocess import PREPROCESS_PRESETS

    split = tfds.load("synthetic_xray/tiny", split="train", data_dir=data_dir)
    pipeline = training_pipeline(
        split, PREPROCESS_PRESETS[stage], PipelineConfig(batch_size=batch_size, augmented_copies=1, seed=0)
    )
    return next(iter(pipeline.epoch(0)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="tf-fracture smoke", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", choices=("none", "imagenet"), default="none", help="backbone initialisation")
    parser.add_argument(
        "--stage", choices=("mura", "elbow"), default="mura", help="preprocessing preset: 384 px (mura), 584 px (elbow)"
    )
    parser.add_argument("--batch", type=int, default=4, help="images in the batch (default 4)")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory (default: a temporary one)")
    parser.add_argument("--keras-summary", action="store_true", help="also print Keras' full layer summaries")
    args = parse_args(parser, argv)  # adds --verbose; hides TensorFlow's start-up log unless given

    import keras

    from tf_fracture.backbones import WeightsUnavailableError, available_backbones
    from tf_fracture.layers import CBAM
    from tf_fracture.models import build_classifier, build_fusion

    weights = None if args.weights == "none" else "imagenet"
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory() as scratch:
        images, labels = synthetic_batch(args.stage, args.data_dir or scratch, args.batch)
    image = images.numpy()
    print(
        f"tf-fracture smoke run: weights={args.weights}; one {args.stage} training batch of synthetic_xray/tiny, "
        f"{tuple(image.shape)}, labels {labels.numpy().astype(int).tolist()}\n"
    )
    print(f"{'model':<40} {'params':>11} {'features':>9} {'CBAM blocks':>12}  {'logits':<28} {'build s':>6}")
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
    if weights is None:
        print(
            "Random initialisation: the logits only show that the models run. Untrained networks in inference "
            "mode can give huge values (Keras' own EfficientNetV2-M does too); train or use --weights imagenet."
        )
    return 0


def _report(model, image, start, cbam_class, features="features"):
    import numpy as np

    logits = np.asarray(model(image, training=False))[:, 0]
    width = model.get_layer(features).output.shape[-1]
    blocks = sum(isinstance(layer, cbam_class) for layer in _all_layers(model))
    elapsed = time.perf_counter() - start
    if not np.all(np.isfinite(logits)):
        raise RuntimeError(f"{model.name} gave non-finite logits {logits}")
    logit = " ".join(f"{v:+.3f}" for v in logits)
    print(f"{model.name:<40} {model.count_params():>11,} {width:>9} {blocks:>12}  {logit:<28} {elapsed:>6.1f}")


def _all_layers(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


if __name__ == "__main__":
    sys.exit(main())
