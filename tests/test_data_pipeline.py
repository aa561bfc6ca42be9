"""tf.data pipelines: the preprocessed store and its keyed cache, whole-epoch permutations, resumable epochs."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tf_fracture.data.pipeline as pipeline_module
from tf_fracture.data.augment import AugmentConfig
from tf_fracture.data.pipeline import (
    PIPELINE_PRESETS,
    PipelineConfig,
    TrainingPipeline,
    evaluation_pipeline,
    training_pipeline,
)
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.data.store import PreprocessedStore

PRE = PreprocessConfig(image_size=32, unsharp_kernel=5)


def fake_split(n=10, seed=0, unique_labels=False):
    """A TFDS-like split: dicts with an 'image' (H, W, 1) uint8 of varying size and a 'label'.

    With ``unique_labels`` image ``i`` has label ``i``, so a batch's labels say which image each element is.
    """
    rng = np.random.default_rng(seed)
    label = (lambda i: i) if unique_labels else (lambda i: i % 2)
    examples = [
        {"image": rng.integers(0, 256, (40 + i, 48, 1), dtype=np.uint8), "label": np.int64(label(i))} for i in range(n)
    ]
    return tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={
            "image": tf.TensorSpec((None, None, 1), tf.uint8),
            "label": tf.TensorSpec((), tf.int64),
        },
    ), examples


def expected_images(examples, config=PRE):
    return np.stack([preprocess(e["image"][:, :, 0], config) for e in examples])[..., None].astype(np.float32)


def collect(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def counting_preprocess(monkeypatch):
    calls = []
    original = pipeline_module.preprocess

    def counting(image, config):
        calls.append(1)
        return original(image, config)

    monkeypatch.setattr(pipeline_module, "preprocess", counting)
    return calls


# --- evaluation and the store ----------------------------------------------------------------------


@pytest.mark.parametrize("cache", [None, "", "dir"])
def test_evaluation_pipeline_is_the_numpy_preprocessing_in_order(cache, tmp_path):
    split, examples = fake_split()
    cache = str(tmp_path / "cache") if cache == "dir" else cache
    images, labels = collect(evaluation_pipeline(split, PRE, batch_size=4, cache=cache))
    assert images.shape == (10, 32, 32, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(images, expected_images(examples))
    np.testing.assert_array_equal(labels, [e["label"] for e in examples])


def test_in_memory_store_preprocesses_each_image_once(monkeypatch):
    calls = counting_preprocess(monkeypatch)
    split, _ = fake_split(n=4)
    pipeline = training_pipeline(split, PRE, PipelineConfig(batch_size=2, seed=1), AugmentConfig())
    collect(pipeline.epochs(0, count=3))
    assert len(calls) == 4


# --- item 1: the file cache is keyed by what produced it -------------------------------------------


def test_cache_is_not_read_for_another_split(tmp_path):
    # The defect: an evaluation pipeline given the path a training split was cached at returned
    # the training images and labels.
    cache = str(tmp_path / "cache")
    train, _ = fake_split(n=6, seed=0)
    validation, val_examples = fake_split(n=6, seed=1)  # same length: only the content tells them apart
    collect(training_pipeline(train, PRE, PipelineConfig(batch_size=2, cache=cache, seed=0)).epoch(0))
    images, labels = collect(evaluation_pipeline(validation, PRE, batch_size=4, cache=cache))
    np.testing.assert_array_equal(images, expected_images(val_examples))
    np.testing.assert_array_equal(labels, [e["label"] for e in val_examples])
    assert len(os.listdir(cache)) == 2  # one store per split, side by side


def test_cache_is_not_read_for_another_preset_of_the_same_size(tmp_path):
    cache = str(tmp_path / "cache")
    split, examples = fake_split(n=5)
    sharper = PreprocessConfig(image_size=32, unsharp_kernel=7, unsharp_amount=3.0)
    collect(evaluation_pipeline(split, PRE, cache=cache))
    images, _ = collect(evaluation_pipeline(split, sharper, cache=cache))
    np.testing.assert_array_equal(images, expected_images(examples, sharper))
    assert not np.array_equal(images, expected_images(examples, PRE))


def test_cache_is_not_read_for_another_size(tmp_path):
    cache = str(tmp_path / "cache")
    split, examples = fake_split(n=5)
    small = PreprocessConfig(image_size=24, unsharp_kernel=5)
    collect(evaluation_pipeline(split, PRE, cache=cache))
    images, _ = collect(evaluation_pipeline(split, small, cache=cache))
    np.testing.assert_array_equal(images, expected_images(examples, small))


def test_cache_is_reused_by_a_later_run_and_says_what_it_holds(tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    calls = counting_preprocess(monkeypatch)
    split, _ = fake_split(n=12)
    config = PipelineConfig(batch_size=4, cache=cache, seed=5)
    first = collect(training_pipeline(split, PRE, config, source="fake/1.0.0/train").epoch(0))
    built = len(calls)
    assert built == 12 + pipeline_module.FINGERPRINT_EXAMPLES
    again = collect(training_pipeline(split, PRE, config, source="fake/1.0.0/train").epoch(0))
    assert len(calls) - built == pipeline_module.FINGERPRINT_EXAMPLES  # only the key's fingerprint
    np.testing.assert_array_equal(first[0], again[0])
    (folder,) = os.listdir(cache)
    with open(os.path.join(cache, folder, "manifest.json")) as file:
        manifest = json.load(file)
    assert manifest["source"] == "fake/1.0.0/train" and manifest["count"] == 12
    assert manifest["image_shape"] == [32, 32, 1] and manifest["preprocess"]["unsharp_kernel"] == 5
    # Another source name is another store, even for the same bytes.
    training_pipeline(split, PRE, config, source="fake/1.0.0/validation")
    assert len(os.listdir(cache)) == 2


def test_damaged_store_is_refused_with_what_to_delete(tmp_path):
    cache = str(tmp_path / "cache")
    split, _ = fake_split(n=4)
    collect(evaluation_pipeline(split, PRE, cache=cache))
    (folder,) = os.listdir(cache)
    with open(os.path.join(cache, folder, "images.u8"), "r+b") as file:
        file.truncate(100)
    with pytest.raises(ValueError, match=f"{folder}.*Delete that folder"):
        evaluation_pipeline(split, PRE, cache=cache)


def test_training_needs_a_store():
    split, _ = fake_split(n=2)
    with pytest.raises(ValueError, match="random access"):
        training_pipeline(split, PRE, PipelineConfig(cache=None))


# --- item 7: every epoch is one permutation of the whole epoch -------------------------------------


def test_epoch_is_a_permutation_of_originals_and_augmented_copies():
    split, examples = fake_split(n=6, unique_labels=True)
    pipeline = training_pipeline(split, PRE, PipelineConfig(batch_size=5, augmented_copies=2, seed=3))
    assert (pipeline.epoch_size, pipeline.steps_per_epoch) == (18, 4)
    originals = expected_images(examples)
    for epoch in (0, 1):
        images, labels = collect(pipeline.epoch(epoch))
        assert len(images) == 18  # 6 originals + 2 x 6 augmented copies, as in the method's elbow epochs
        image_index, copy = pipeline.element_order(epoch)
        np.testing.assert_array_equal(labels, image_index)
        pairs = sorted(zip(image_index.tolist(), copy.tolist(), strict=True))
        assert pairs == [(i, c) for i in range(6) for c in range(3)]  # each (image, copy) exactly once
        for image, i, c in zip(images, image_index, copy, strict=True):
            # copy 0 is the original, untouched; copies 1 and 2 are transformed.
            assert np.array_equal(image, originals[i]) == (c == 0)
        for i in range(6):
            copies = images[image_index == i]
            assert len({c.tobytes() for c in copies}) == 3


def order_statistics(labels, n_images):
    """Median distance between the two copies of an image, and the deciles of the first tenth's images."""
    positions = np.argsort(labels, kind="stable").reshape(n_images, 2)
    median_gap = float(np.median(positions[:, 1] - positions[:, 0]))
    first_tenth = labels[: len(labels) // 10]
    deciles = np.bincount((first_tenth * 10 // n_images).astype(int), minlength=10) / len(first_tenth)
    return median_gap, deciles


def test_copies_are_spread_over_the_whole_epoch():
    # 20,000 tiny images, one copy each: 40,000 elements, ten times the old 4,096-element shuffle
    # buffer, under which copies were ~2,000 positions apart and the first tenth of the epoch came
    # from the first quarter of the data.
    n = 20_000
    store = PreprocessedStore(np.zeros((n, 2, 2, 1), np.uint8), np.arange(n, dtype=np.int64))
    pipeline = TrainingPipeline(store, PipelineConfig(batch_size=1000, augmented_copies=1, seed=0))
    labels = collect(pipeline.epoch(0))[1]
    median_gap, deciles = order_statistics(labels, n)
    # Two uniformly random positions among M lie a median (1 - 1/sqrt(2)) M = 0.293 M apart.
    assert abs(median_gap / (2 * n) - 0.293) < 0.02, median_gap
    np.testing.assert_allclose(deciles, 0.1, atol=0.015)


def test_epoch_built_alone_equals_the_same_epoch_of_an_uninterrupted_run():
    split, _ = fake_split(n=7, unique_labels=True)
    config = PipelineConfig(batch_size=3, augmented_copies=1, seed=21)
    run = training_pipeline(split, PRE, config)
    steps = run.steps_per_epoch
    batches = list(run.epochs(start_epoch=0, count=3))
    assert len(batches) == 3 * steps
    epochs = [collect(batches[e * steps : (e + 1) * steps]) for e in range(3)]

    resumed = training_pipeline(split, PRE, config)  # a new process after a crash, say
    alone = collect(resumed.epoch(2))
    np.testing.assert_array_equal(alone[0], epochs[2][0])
    np.testing.assert_array_equal(alone[1], epochs[2][1])
    continued = collect(resumed.epochs(start_epoch=2).take(steps))  # the infinite stream, from epoch 2
    np.testing.assert_array_equal(continued[0], epochs[2][0])
    # Each epoch has its own order and its own augmentations.
    assert not np.array_equal(epochs[0][1], epochs[1][1])
    same_image = [e[0][np.flatnonzero(e[1] == 0)] for e in epochs[:2]]
    assert not np.array_equal(same_image[0], same_image[1])


def test_an_element_is_the_same_whatever_the_batch_size():
    split, _ = fake_split(n=5, unique_labels=True)
    small, large = (
        collect(training_pipeline(split, PRE, PipelineConfig(batch_size=b, augmented_copies=1, seed=4)).epoch(1))
        for b in (3, 10)
    )
    np.testing.assert_array_equal(small[1], large[1])
    np.testing.assert_array_equal(small[0], large[0])


def test_same_seed_same_batches_across_constructions():
    split, _ = fake_split()
    config = PipelineConfig(batch_size=4, seed=11)
    first = collect(training_pipeline(split, PRE, config).epochs(0, count=2))
    again = collect(training_pipeline(split, PRE, config).epochs(0, count=2))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    other = collect(training_pipeline(split, PRE, PipelineConfig(batch_size=4, seed=12)).epochs(0, count=2))
    assert not np.array_equal(first[0], other[0])


def test_no_seed_draws_one_that_repeats_the_run():
    split, _ = fake_split(n=6)
    a, b = (training_pipeline(split, PRE, PipelineConfig(batch_size=6)) for _ in range(2))
    assert isinstance(a.seed, int) and a.seed != b.seed
    assert not np.array_equal(collect(a.epoch(0))[0], collect(b.epoch(0))[0])
    repeat = training_pipeline(split, PRE, PipelineConfig(batch_size=6, seed=a.seed))
    np.testing.assert_array_equal(collect(repeat.epoch(0))[0], collect(a.epoch(0))[0])


def test_no_augmentation_keeps_pixels():
    split, examples = fake_split(n=5)
    pipeline = training_pipeline(split, PRE, PipelineConfig(batch_size=5, seed=0), augment=None)
    images, _ = collect(pipeline.epoch(0))
    originals = {preprocess(e["image"][:, :, 0], PRE).tobytes() for e in examples}
    assert {img[:, :, 0].astype(np.uint8).tobytes() for img in images} == originals


def test_steps_per_epoch_with_and_without_the_remainder():
    split, _ = fake_split(n=7)
    keep = training_pipeline(split, PRE, PipelineConfig(batch_size=4, augmented_copies=1, seed=0))
    drop = TrainingPipeline(keep.store, PipelineConfig(batch_size=4, augmented_copies=1, seed=0, drop_remainder=True))
    assert (keep.steps_per_epoch, drop.steps_per_epoch) == (4, 3)
    assert [len(y) for _, y in keep.epoch(0)] == [4, 4, 4, 2]
    assert [len(y) for _, y in drop.epoch(0)] == [4, 4, 4]


def test_presets_reproduce_the_method_epoch_sizes():
    assert PIPELINE_PRESETS["elbow"].augmented_copies == 2 and 3495 * 3 == 10485
    assert PIPELINE_PRESETS["mura"].augmented_copies == 1 and 36805 * 2 == 73610


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"augmented_copies": -1}, "augmented_copies"),
        ({"seed": -3}, "seed"),
        ({"cache": 3}, "cache"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(**kwargs)


def test_bad_epoch_numbers():
    store = PreprocessedStore(np.zeros((3, 2, 2, 1), np.uint8), np.zeros(3, np.int64))
    pipeline = TrainingPipeline(store, PipelineConfig(batch_size=2, seed=0))
    for call in (lambda: pipeline.epoch(-1), lambda: pipeline.epochs(start_epoch=1.5)):
        with pytest.raises(ValueError, match="integer >= 0"):
            call()
