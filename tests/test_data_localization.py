"""Localisation targets through the data path: rasterised like the image, stored, warped with their image."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tf_fracture.data.augment import AugmentConfig
from tf_fracture.data.pipeline import (
    CAM_TARGET,
    FRACTURE_TARGET,
    PipelineConfig,
    preprocessed_store,
    training_pipeline,
)
from tf_fracture.data.preprocess import PreprocessConfig, resize
from tf_fracture.data.targets import MASK_ON, NO_TARGET, box_mask, target_mask

SIZE = 48
PRE = PreprocessConfig(SIZE, unsharp_kernel=3)
N = 10


def scene(i):
    """Image ``i``: a bright rectangle (its "fracture") on a dark field; odd images have none.

    Returns the example with its box (normalised) for positives, none for negatives.
    """
    rng = np.random.default_rng(i)
    height, width = 60 + 4 * i, 80 - 2 * i  # not square: the resize geometry matters
    image = np.full((height, width), 10 + i, np.uint8)  # flat: CLAHE would stretch noise to the threshold
    boxes = np.zeros((0, 4), np.float32)
    if i % 2 == 0:
        top, left = int(rng.integers(5, height // 2)), int(rng.integers(5, width // 2))
        bottom, right = top + int(rng.integers(10, 20)), left + int(rng.integers(12, 22))
        image[top:bottom, left:right] = 230
        boxes = np.array([[top / height, left / width, bottom / height, right / width]], np.float32)
    return {"image": image[..., None], "label": np.int64(i % 2 == 0), "fracture_boxes": boxes}


def split(n=N):
    examples = [scene(i) for i in range(n)]
    return tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={
            "image": tf.TensorSpec((None, None, 1), tf.uint8),
            "label": tf.TensorSpec((), tf.int64),
            "fracture_boxes": tf.TensorSpec((None, 4), tf.float32),
        },
    ).apply(tf.data.experimental.assert_cardinality(n))


def within_a_pixel(a: np.ndarray, b: np.ndarray) -> bool:
    """Each set lies inside the other grown by one pixel (8-neighbourhood)."""
    kernel = np.ones((3, 3), np.uint8)
    grow = lambda m: cv2.dilate(m.astype(np.uint8), kernel).astype(bool)  # noqa: E731
    return bool(np.all(a <= grow(b)) and np.all(b <= grow(a)))


def test_box_mask_marks_pixel_centres_inside_the_box():
    mask = box_mask([(0.25, 0.5, 0.75, 1.0)], 8, 4)
    expected = np.zeros((8, 4), np.uint8)
    expected[2:6, 2:4] = MASK_ON
    np.testing.assert_array_equal(mask, expected)
    assert box_mask([(0.5, 0.5, 0.5, 0.5)], 10, 10).sum() == MASK_ON  # a degenerate box keeps its pixel
    assert not box_mask([], 5, 5).any()


@pytest.mark.parametrize("box", [(0.5, 0.1, 0.4, 0.2), (-0.1, 0, 0.5, 0.5), (0, 0, 1.2, 1), (0, 0, 1)])
def test_box_mask_refuses_bad_boxes(box):
    with pytest.raises(ValueError, match="box"):
        box_mask([box], 10, 10)


@pytest.mark.parametrize("mode", ["stretch", "pad"])
def test_target_mask_is_resized_like_its_image(mode):
    config = PreprocessConfig(SIZE, unsharp_kernel=3, resize_mode=mode)
    for i in range(0, N, 2):
        example = scene(i)
        image = resize(example["image"][..., 0], SIZE, mode)
        target = target_mask(example["image"].shape[:2], config=config, boxes=example["fracture_boxes"])
        assert target.shape == (SIZE, SIZE) and target.dtype == np.uint8
        assert within_a_pixel(target >= 128, image >= 128), i


def test_a_pixel_mask_takes_the_place_of_the_boxes():
    mask = np.zeros((30, 30), np.uint8)
    mask[3:6, 20:25] = 1
    target = target_mask((30, 30), config=PreprocessConfig(30, unsharp_kernel=3), boxes=[(0, 0, 1, 1)], mask=mask)
    np.testing.assert_array_equal(target > 0, mask > 0)
    empty = target_mask(
        (30, 30), config=PreprocessConfig(30, unsharp_kernel=3), boxes=[(0, 0, 0.5, 0.5)], mask=0 * mask
    )
    assert empty[:15, :15].all() and not empty[15:, 15:].any()  # an empty mask: the boxes
    with pytest.raises(ValueError, match="shape"):
        target_mask((30, 31), config=PreprocessConfig(30, unsharp_kernel=3), mask=mask)


def test_the_pipeline_target_is_the_box_or_the_mask_as_asked():
    from tf_fracture.data.pipeline import tf_target_mask

    mask = np.zeros((30, 30, 1), np.uint8)
    mask[3:6, 20:25] = 1
    example = {
        "image": tf.zeros((30, 30, 1), tf.uint8),
        "fracture_boxes": tf.constant([(0.0, 0.0, 0.5, 0.5)], tf.float32),
        "fracture_mask": tf.constant(mask),
    }
    config = PreprocessConfig(30, unsharp_kernel=3)
    box = tf_target_mask(example, config).numpy()[..., 0]  # the default: the box, whatever the mask says
    assert box[:15, :15].all() and not box[15:, :].any() and not box[:, 15:].any()
    pixels = tf_target_mask(example, config, "mask").numpy()[..., 0]
    np.testing.assert_array_equal(pixels > 0, mask[..., 0] > 0)
    with pytest.raises(ValueError, match="target"):
        tf_target_mask(example, config, "outline")


@pytest.mark.parametrize("cache", ["", "disk"])
def test_warped_mask_follows_the_warped_image(cache, tmp_path):
    """Under random rotations, flips, scales and shifts the target is the fracture of the warped image."""
    config = PipelineConfig(batch_size=4, augmented_copies=2, seed=5, cache=str(tmp_path) if cache else "")
    augment = AugmentConfig(max_rotation_degrees=60.0, flip_probability=0.5, translation_range=(0.0, 0.1))
    pipeline = training_pipeline(split(), PRE, config, augment, localization=True)
    checked = 0
    for epoch in (0, 1):
        for images, targets in pipeline.epoch(epoch):
            assert set(targets) == {FRACTURE_TARGET, CAM_TARGET}
            masks, labels = targets[CAM_TARGET].numpy(), targets[FRACTURE_TARGET].numpy()
            assert masks.shape == images.shape and masks.dtype == np.float32
            for image, mask, label in zip(images.numpy(), masks, labels, strict=True):
                if label == 0:
                    np.testing.assert_array_equal(mask, NO_TARGET)  # no box: no target at all
                    continue
                assert 0.0 <= mask.min() and mask.max() <= 1.0
                assert within_a_pixel(mask[..., 0] >= 0.5, image[..., 0] >= 128)
                checked += 1
    assert checked == 2 * 3 * (N // 2)  # every fractured image and its copies, in both epochs


def test_targets_change_neither_images_nor_labels_nor_order():
    config = PipelineConfig(batch_size=4, augmented_copies=1, seed=3)
    plain = training_pipeline(split(), PRE, config)
    guided = training_pipeline(split(), PRE, config, localization=True)
    for (x0, y0), (x1, t1) in zip(plain.epoch(1), guided.epoch(1), strict=True):
        np.testing.assert_array_equal(x0.numpy(), x1.numpy())
        np.testing.assert_array_equal(y0.numpy(), t1[FRACTURE_TARGET].numpy())


def test_an_epoch_built_alone_equals_the_same_epoch_of_a_run_with_targets(tmp_path):
    config = PipelineConfig(batch_size=3, augmented_copies=1, seed=11, cache=str(tmp_path))
    first = training_pipeline(split(), PRE, config, localization=True)
    run = list(first.epochs(0, count=3))
    again = training_pipeline(split(), PRE, config, localization=True)  # a resumed run reads the disk store
    alone = list(again.epoch(2))
    steps = first.steps_per_epoch
    for (x0, t0), (x1, t1) in zip(run[2 * steps :], alone, strict=True):
        np.testing.assert_array_equal(x0.numpy(), x1.numpy())
        np.testing.assert_array_equal(t0[CAM_TARGET].numpy(), t1[CAM_TARGET].numpy())


def test_disk_store_keeps_the_masks_under_a_key_of_their_own(tmp_path):
    plain = preprocessed_store(split(), PRE, str(tmp_path), source="toy")
    guided = preprocessed_store(split(), PRE, str(tmp_path), source="toy", localization=True)
    assert plain.path != guided.path and plain.masks is None
    assert guided.manifest["masks"] is True and guided.masks.shape == guided.images.shape
    np.testing.assert_array_equal(guided.images, plain.images)
    np.testing.assert_array_equal(guided.has_target, np.arange(N) % 2 == 0)
    reopened = preprocessed_store(split(), PRE, str(tmp_path), source="toy", localization=True)
    np.testing.assert_array_equal(reopened.masks, guided.masks)
    memory = preprocessed_store(split(), PRE, "", localization=True)
    np.testing.assert_array_equal(memory.masks, guided.masks)


def test_a_store_without_masks_says_how_to_get_them():
    store = preprocessed_store(split(4), PRE, "")
    with pytest.raises(ValueError, match="localization=True"):
        store.gather_masks(np.arange(2))


def test_datasets_without_boxes_have_no_targets():
    examples = [{"image": np.full((20, 20, 1), 9, np.uint8), "label": np.int64(1)}] * 3
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={"image": tf.TensorSpec((None, None, 1), tf.uint8), "label": tf.TensorSpec((), tf.int64)},
    ).apply(tf.data.experimental.assert_cardinality(3))
    pipeline = training_pipeline(dataset, PRE, PipelineConfig(batch_size=3, seed=0), localization=True)
    _, targets = next(iter(pipeline.epoch(0)))
    np.testing.assert_array_equal(targets[CAM_TARGET].numpy(), NO_TARGET)
