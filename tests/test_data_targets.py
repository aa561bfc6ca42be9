"""Extra per-image targets (the multi-task body part) carried through the store and the pipelines."""

import numpy as np
import pytest
import tensorflow as tf

from tf_fracture.data.augment import AugmentConfig
from tf_fracture.data.pipeline import (
    FRACTURE_TARGET,
    PipelineConfig,
    evaluation_pipeline,
    training_pipeline,
)
from tf_fracture.data.preprocess import PreprocessConfig
from tf_fracture.data.store import PreprocessedStore
from tf_fracture.models.multitask import BODY_PART, FRACTURE

PRE = PreprocessConfig(image_size=16, unsharp_kernel=3)
N = 11


def split(n=N):
    """Image ``i`` has label ``i`` (so a batch says which images it holds) and body part ``part(i)``."""
    rng = np.random.default_rng(0)
    examples = [{"image": rng.integers(0, 256, (20, 24, 1), np.uint8), "label": np.int64(i)} for i in range(n)]
    return tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={"image": tf.TensorSpec((None, None, 1), tf.uint8), "label": tf.TensorSpec((), tf.int64)},
    ).apply(tf.data.experimental.assert_cardinality(n))


def part(i):
    return (3 * np.asarray(i) + 1) % 5 - 1  # -1 (no part) included


PARTS = part(np.arange(N))


def test_names_match_the_model_outputs():
    assert FRACTURE_TARGET == FRACTURE


@pytest.mark.parametrize("cache", ["", "disk"])
def test_training_batches_carry_each_images_target(cache, tmp_path):
    config = PipelineConfig(batch_size=4, augmented_copies=1, seed=3, cache=str(tmp_path) if cache else "")
    pipeline = training_pipeline(split(), PRE, config, AugmentConfig(), targets={BODY_PART: PARTS})
    seen = []
    for epoch in (0, 1):
        for images, targets in pipeline.epoch(epoch):
            assert set(targets) == {FRACTURE, BODY_PART}
            labels, parts = targets[FRACTURE].numpy(), targets[BODY_PART].numpy()
            assert targets[FRACTURE].dtype == tf.float32 and targets[BODY_PART].dtype == tf.int32
            assert images.shape[0] == len(labels) == len(parts)
            np.testing.assert_array_equal(parts, part(labels.astype(int)))
            seen.extend(labels.astype(int))
    assert sorted(seen) == sorted(list(range(N)) * 4)  # 2 epochs x (original + 1 copy)


def test_targets_do_not_change_images_labels_or_order():
    config = PipelineConfig(batch_size=4, augmented_copies=1, seed=3)
    plain = training_pipeline(split(), PRE, config)
    multi = training_pipeline(split(), PRE, config, targets={BODY_PART: PARTS})
    for (x0, y0), (x1, t1) in zip(plain.epoch(2), multi.epoch(2), strict=True):
        np.testing.assert_array_equal(x0.numpy(), x1.numpy())
        np.testing.assert_array_equal(y0.numpy(), t1[FRACTURE].numpy())
    assert isinstance(next(iter(plain.epoch(0)))[1], tf.Tensor)  # without targets: (images, labels) as before


@pytest.mark.parametrize("cache", [None, ""])
def test_evaluation_batches_carry_targets_in_order(cache):
    batches = list(evaluation_pipeline(split(), PRE, batch_size=4, cache=cache, targets={BODY_PART: PARTS}))
    assert len(batches) == 3
    labels = np.concatenate([t[FRACTURE].numpy() for _, t in batches])
    parts = np.concatenate([t[BODY_PART].numpy() for _, t in batches])
    np.testing.assert_array_equal(labels, np.arange(N))
    np.testing.assert_array_equal(parts, PARTS)


@pytest.mark.parametrize("cache", [None, ""])
def test_evaluation_targets_of_the_wrong_length_are_refused(cache):
    with pytest.raises(ValueError, match=r"one target value per image \(11\)"):
        evaluation_pipeline(split(), PRE, batch_size=4, cache=cache, targets={BODY_PART: PARTS[:-1]})


@pytest.mark.parametrize(
    "targets, message",
    [
        ({BODY_PART: PARTS[:-1]}, "Expected target 'body_part' to be 11 integers"),
        ({BODY_PART: PARTS.astype(float)}, "dtype float64"),
        ({"": PARTS}, "non-empty strings"),
    ],
)
def test_store_refuses_bad_targets(targets, message):
    store = PreprocessedStore(np.zeros((N, 4, 4, 1), np.uint8), np.arange(N))
    with pytest.raises(ValueError, match=message):
        store.with_targets(targets)


def test_store_targets_are_gathered_and_read_only():
    store = PreprocessedStore(np.zeros((N, 4, 4, 1), np.uint8), np.arange(N))
    with_parts = store.with_targets({BODY_PART: PARTS})
    assert store.targets == {} and len(with_parts) == N
    (gathered,) = with_parts.gather_targets(np.array([4, 0, 4]))
    np.testing.assert_array_equal(gathered, PARTS[[4, 0, 4]])
    assert gathered.dtype == np.int32
    with pytest.raises(ValueError):
        with_parts.targets[BODY_PART][0] = 3
