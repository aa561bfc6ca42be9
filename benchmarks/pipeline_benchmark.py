"""Input-pipeline throughput vs. a plain OpenCV loop, a PyTorch DataLoader and the training step.

In one run, at 384 px (MURA preset) and 584 px (elbow preset), images per second of:

* ours: ``tf_fracture.data.pipeline.training_pipeline`` (decode + resize/CLAHE/unsharp +
  affine augmentation + batching), first epoch (building the in-memory preprocessed store
  included) and later epochs (drawn from the store);
* a plain per-image loop in OpenCV doing the same operations, sequentially;
* a PyTorch ``DataLoader`` running that same per-image code with as many worker processes
  as this machine has cores (what tf.data's AUTOTUNE may use);
* the training step of MobileNetV3-Large + CBAM (``train_on_batch``) on this CPU.

Run:
    .venv/bin/python benchmarks/pipeline_benchmark.py                     # synthetic radiographs
    TF_FRACTURE_FRACATLAS=../shared/fracatlas/FracAtlas .venv/bin/python benchmarks/pipeline_benchmark.py
The PyTorch column needs ``pip install torch==2.13.0`` (the ``vlm`` extra); it is skipped without it.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import keras
import numpy as np
import tensorflow as tf

from tf_fracture.data.pipeline import PIPELINE_PRESETS, PipelineConfig, training_pipeline
from tf_fracture.data.preprocess import PREPROCESS_PRESETS, preprocess
from tf_fracture.models import build_classifier

STAGES = {384: "mura", 584: "elbow"}


def source_files(count: int, workdir: str) -> tuple[list[str], str]:
    """FracAtlas JPEGs where TF_FRACTURE_FRACATLAS is set, else synthetic radiographs written as PNG."""
    root = os.environ.get("TF_FRACTURE_FRACATLAS")
    if root:
        files = sorted(glob.glob(os.path.join(root, "images", "*", "*.jpg")))[:count]
        if files:
            return files, f"{len(files)} FracAtlas JPEGs"
    from tf_fracture.data.synthetic import generate_radiograph

    files = []
    for i in range(count):
        path = os.path.join(workdir, f"{i:05d}.png")
        cv2.imwrite(path, generate_radiograph(i, size=512).image)
        files.append(path)
    return files, f"{count} synthetic 512 px PNGs"


def random_affine_cv2(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The method's augmentation, per image, in OpenCV (the baselines' version of ours)."""
    h, w = image.shape
    rotate = np.vstack(
        [cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), rng.uniform(-60, 60), rng.uniform(0.85, 1.1)), [0, 0, 1]]
    )
    mirror = np.array([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]]) if rng.random() < 0.75 else np.eye(3)
    shift = np.eye(3)
    shift[0, 2] = rng.uniform(0.02, 0.12) * rng.choice([-1, 1]) * w
    shift[1, 2] = rng.uniform(0.02, 0.12) * rng.choice([-1, 1]) * h
    matrix = (shift @ rotate @ mirror)[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)


def load_one(path: str, config, rng) -> np.ndarray:
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_GRAYSCALE)
    return random_affine_cv2(preprocess(image, config), rng)


def opencv_loop(files, config, batch_size) -> float:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    batch = []
    for path in files:
        batch.append(load_one(path, config, rng))
        if len(batch) == batch_size:
            np.stack(batch).astype(np.float32)
            batch = []
    return len(files) / (time.perf_counter() - start)


def torch_loader(files, config, batch_size, workers) -> tuple[float, float] | None:
    try:
        import torch
        from torch.utils.data import DataLoader, Dataset
    except ImportError:
        return None

    class Files(Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            rng = np.random.default_rng(i + int(torch.initial_seed()) % 2**31)
            return torch.from_numpy(load_one(files[i], config, rng)[None].astype(np.float32))

    loader = DataLoader(Files(), batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=True)
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        for _batch in loader:
            pass
        rates.append(len(files) / (time.perf_counter() - start))
    return rates[0], rates[1]


def ours(files, config, pipeline_config) -> tuple[float, float]:
    def read(path):
        return {"image": tf.io.decode_image(tf.io.read_file(path), channels=1, expand_animations=False), "label": 0}

    split = tf.data.Dataset.from_tensor_slices(files).map(read, num_parallel_calls=tf.data.AUTOTUNE)
    start = time.perf_counter()
    pipeline = training_pipeline(split, config, pipeline_config)  # the store: part of epoch 1's work
    building = time.perf_counter() - start
    # One dataset for the three epochs, as model.fit(pipeline.epochs(), steps_per_epoch=...) uses it.
    # Building its graph is a one-off start-up cost (about a second here), not counted, as before.
    epochs = pipeline.epochs(0, count=3)
    rates = []
    start = time.perf_counter() - building
    for step, _batch in enumerate(epochs, start=1):
        if step % pipeline.steps_per_epoch == 0:
            rates.append(pipeline.epoch_size / (time.perf_counter() - start))
            start = time.perf_counter()
    return rates[0], (rates[1] + rates[2]) / 2


def training_rate(size, batch_size, steps) -> float:
    model = build_classifier("mobilenetv3", weights=None, input_size=size)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=keras.losses.BinaryCrossentropy(True))
    x = np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 1)).astype("float32")
    y = np.zeros((batch_size,), "float32")
    for _ in range(2):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=5)
    args = parser.parse_args(argv)
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as workdir:
        files, described = source_files(args.images, workdir)
        rows = []
        for size, stage in STAGES.items():
            config = PREPROCESS_PRESETS[stage]
            batch = PIPELINE_PRESETS[stage].batch_size
            ours_first, ours_later = ours(files, config, PipelineConfig(batch_size=batch, seed=0))
            loop = opencv_loop(files, config, batch)
            torch_rates = torch_loader(files, config, batch, workers)
            train = training_rate(size, batch, args.train_steps)
            rows.append((size, batch, ours_first, ours_later, loop, torch_rates, train))
            print(f"measured {size} px", flush=True)

    print(f"\n{described}; {workers} CPU cores; images/s (higher is better); batch = the stage preset's.\n")
    print(
        "| size | batch | ours, epoch 1 | ours, later epochs | OpenCV loop | PyTorch DataLoader "
        f"({workers} workers), epoch 1 / 2 | training step, MobileNetV3+CBAM | ours later / training |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, batch, first, later, loop, torch_rates, train in rows:
        torch_cell = "n/a" if torch_rates is None else f"{torch_rates[0]:.0f} / {torch_rates[1]:.0f}"
        print(
            f"| {size} | {batch} | {first:.0f} | {later:.0f} | {loop:.0f} | {torch_cell} | {train:.1f} | "
            f"{later / train:.0f}x |"
        )
    slowest = min(min(first, later) / train for _, _, first, later, *_rest, train in rows)
    verdict = "never" if slowest > 1 else "SOMETIMES"
    print(
        f"\nThe pipeline is {verdict} what the training step waits for: its slowest epoch feeds "
        f"{slowest:.1f}x the images the step consumes."
    )
    if not math.isfinite(slowest):
        raise SystemExit("benchmark produced no numbers")


if __name__ == "__main__":
    main()
