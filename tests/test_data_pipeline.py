"""tf.data pipelines: preprocessing once, epoch composition, augmentation, determinism."""

import numpy as np
import pytest
import tensorflow as tf

from tf_fracture.data.augment import AugmentConfig
from tf_fracture.data.pipeline import (
    PIPELINE_PRESETS,
    PipelineConfig,
    evaluation_pipeline,
    training_pipeline,
)
from tf_fracture.data.preprocess import PreprocessConfig, preprocess

PRE = PreprocessConfig(image_size=32, unsharp_kernel=5)


def fake_split(n=10, seed=0):
    """A TFDS-like split: dicts with an 'image' (H, W, 1) uint8 of varying size and a 'label'."""
    rng = np.random.default_rng(seed)
    examples = [
        {"image": rng.integers(0, 256, (40 + i, 48, 1), dtype=np.uint8), "label": np.int64(i % 2)} for i in range(n)
    ]
    return tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={
            "image": tf.TensorSpec((None, None, 1), tf.uint8),
            "label": tf.TensorSpec((), tf.int64),
        },
    ), examples


def collect(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_evaluation_pipeline_is_the_numpy_preprocessing_in_order():
    split, examples = fake_split()
    images, labels = collect(evaluation_pipeline(split, PRE, batch_size=4))
    assert images.shape == (10, 32, 32, 1) and images.dtype == np.float32
    expected = np.stack([preprocess(e["image"][:, :, 0], PRE) for e in examples])[..., None]
    np.testing.assert_array_equal(images, expected.astype(np.float32))
    np.testing.assert_array_equal(labels, [e["label"] for e in examples])


def test_epoch_composition_originals_plus_augmented_copies():
    split, examples = fake_split(n=6)
    config = PipelineConfig(batch_size=5, augmented_copies=2, seed=3)
    images, labels = collect(training_pipeline(split, PRE, config))
    assert len(images) == 18  # 6 originals + 2 x 6 augmented copies, as in the method's elbow epochs
    originals = np.stack([preprocess(e["image"][:, :, 0], PRE) for e in examples])[..., None].astype(np.float32)
    # Every original appears exactly once, unaugmented; the other 12 are transformed copies.
    matches = [int(np.flatnonzero([np.array_equal(img, o) for o in originals]).size) for img in images]
    assert sum(matches) == 6
    assert sorted(labels.tolist()) == sorted([float(e["label"]) for e in examples] * 3)


def test_presets_reproduce_the_method_epoch_sizes():
    assert PIPELINE_PRESETS["elbow"].augmented_copies == 2 and 3495 * 3 == 10485
    assert PIPELINE_PRESETS["mura"].augmented_copies == 1 and 36805 * 2 == 73610


def test_seeded_pipeline_is_deterministic_and_reaugments_each_epoch():
    split, _ = fake_split()
    config = PipelineConfig(batch_size=4, seed=11)
    first = collect(training_pipeline(split, PRE, config))
    again = collect(training_pipeline(split, PRE, config))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    pipeline = training_pipeline(split, PRE, config)
    epoch1, epoch2 = collect(pipeline), collect(pipeline)
    assert not np.array_equal(epoch1[0], epoch2[0])  # new shuffle and new augmentation each epoch


def test_no_augmentation_keeps_pixels():
    split, examples = fake_split(n=5)
    images, _ = collect(training_pipeline(split, PRE, PipelineConfig(batch_size=5, seed=0), augment=None))
    originals = {preprocess(e["image"][:, :, 0], PRE).tobytes() for e in examples}
    assert {img[:, :, 0].astype(np.uint8).tobytes() for img in images} == originals


def test_preprocessing_runs_once_with_cache(monkeypatch):
    import tf_fracture.data.preprocess as pre

    calls = []
    original = pre.preprocess

    def counting(image, config):
        calls.append(1)
        return original(image, config)

    monkeypatch.setattr(pre, "preprocess", counting)
    split, _ = fake_split(n=4)
    pipeline = training_pipeline(split, PRE, PipelineConfig(batch_size=2, seed=1), AugmentConfig())
    for _ in range(3):
        collect(pipeline)
    assert len(calls) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"augmented_copies": -1}, "augmented_copies"),
        ({"shuffle_buffer": 1.5}, "shuffle_buffer"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(**kwargs)
