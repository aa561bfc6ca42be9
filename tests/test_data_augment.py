"""Augmentation: the affine matrix against OpenCV, parameter ranges, determinism, the Keras layer."""

import math

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_fracture.data.augment import (
    AugmentConfig,
    RandomAffine,
    affine_matrices,
    augment_batch,
    sample_parameters,
    transform_batch,
)


def smooth_image(h=48, w=64):
    yy, xx = np.mgrid[0:h, 0:w].astype("float32")
    return (120 + 60 * np.sin(xx / 7.0) * np.cos(yy / 9.0) + xx).astype("float32")


def opencv_reference(image, angle_deg, scale, shift_x, shift_y, flip):
    """Forward map with OpenCV: flip about the centre, then rotate/scale about it, then shift."""
    h, w = image.shape
    c = ((w - 1) / 2.0, (h - 1) / 2.0)
    forward = np.vstack([cv2.getRotationMatrix2D(c, angle_deg, scale), [0, 0, 1]])
    mirror = np.array([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]]) if flip else np.eye(3)
    shift = np.array([[1.0, 0, shift_x * w], [0, 1, shift_y * h], [0, 0, 1]])
    matrix = (shift @ forward @ mirror)[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@pytest.mark.parametrize(
    "angle, scale, sx, sy, flip",
    [(0.0, 1.0, 0.0, 0.0, 1), (30.0, 1.0, 0.0, 0.0, 0), (-45.0, 0.9, 0.1, -0.05, 1), (60.0, 1.1, -0.12, 0.02, 0)],
)
def test_affine_matches_opencv(angle, scale, sx, sy, flip):
    image = smooth_image()
    matrix = affine_matrices(
        np.float32([math.radians(angle)]), np.float32([scale]), np.float32([sx]), np.float32([sy]),
        np.float32([flip]), image.shape[0], image.shape[1],
    )  # fmt: skip
    ours = keras.ops.image.affine_transform(image[None, :, :, None], matrix, fill_mode="constant")[0, :, :, 0]
    expected = opencv_reference(image, angle, scale, sx, sy, flip)
    interior = np.asarray(ours)[3:-3, 3:-3], expected[3:-3, 3:-3]
    # OpenCV uses 5-bit fixed-point bilinear weights; the border pixels differ in how they blend with 0.
    np.testing.assert_allclose(*interior, atol=1.5)


def test_identity_parameters_give_the_input():
    image = smooth_image()[None, :, :, None]
    matrix = affine_matrices([0.0], [1.0], [0.0], [0.0], [0.0], 48, 64)
    np.testing.assert_allclose(keras.ops.image.affine_transform(image, matrix), image, atol=1e-4)


def test_parameter_ranges_follow_the_method():
    angle, scale, sx, sy, flip = (np.asarray(p) for p in sample_parameters([3, 4], 20000))
    assert np.abs(angle).max() <= math.radians(60) + 1e-6 and np.abs(angle).max() > math.radians(59)
    assert 0.85 <= scale.min() and scale.max() <= 1.1
    for shift in (sx, sy):
        assert 0.02 - 1e-6 <= np.abs(shift).min() and np.abs(shift).max() <= 0.12 + 1e-6
        assert abs((shift > 0).mean() - 0.5) < 0.02
    assert abs(flip.mean() - 0.75) < 0.01
    assert abs(np.corrcoef(np.sign(sx), np.sign(sy))[0, 1]) < 0.05  # the axes' signs are independent


def test_augment_batch_is_deterministic_and_the_same_inside_tf_data(rng):
    images = (rng.random((4, 32, 32, 1)) * 255).astype("uint8")
    seed = tf.constant([7, 11], tf.int64)
    eager = augment_batch(images, seed)
    assert eager.dtype == tf.uint8 and eager.shape == images.shape
    np.testing.assert_array_equal(eager, augment_batch(images, seed))
    assert not np.array_equal(eager, augment_batch(images, tf.constant([7, 12], tf.int64)))
    mapped = next(iter(tf.data.Dataset.from_tensors(images).map(lambda x: augment_batch(x, seed))))
    np.testing.assert_array_equal(eager, mapped)


@pytest.mark.parametrize("engine", ["opencv", "keras"])
def test_transform_batch_applies_the_parameters_augment_batch_draws(rng, engine):
    images = (rng.random((4, 24, 24, 1)) * 255).astype("uint8")
    seed = tf.constant([1, 10], tf.int64)
    params = sample_parameters(seed, 4)
    out = np.asarray(transform_batch(images, params, engine=engine))
    np.testing.assert_array_equal(out, augment_batch(images, seed, engine=engine))
    # Each image's transform is its own parameters' only: another order, another batch, the same result.
    order = [2, 0, 3, 1]
    shuffled = transform_batch(images[order], [tf.gather(p, order) for p in params], engine=engine)
    np.testing.assert_array_equal(shuffled, out[order])
    np.testing.assert_array_equal(transform_batch(images[2:3], [p[2:3] for p in params], engine=engine), out[2:3])


@pytest.mark.parametrize("engine", ["opencv", "keras"])
def test_where_leaves_the_other_images_untouched(rng, engine):
    images = (rng.random((4, 24, 24, 1)) * 255).astype("uint8")
    seed = tf.constant([3, 4], tf.int64)
    where = tf.constant([True, False, True, False])
    out = np.asarray(augment_batch(images, seed, where=where, engine=engine))
    everything = np.asarray(augment_batch(images, seed, engine=engine))
    np.testing.assert_array_equal(out[[1, 3]], images[[1, 3]])
    np.testing.assert_array_equal(out[[0, 2]], everything[[0, 2]])
    assert not np.array_equal(out[0], images[0])


def test_seed_of_a_wrong_shape_is_refused(rng):
    with pytest.raises(ValueError, match="two integers"):
        augment_batch(np.zeros((2, 8, 8, 1), np.uint8), tf.zeros((2, 2, 2), tf.int64))


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_opencv_and_keras_engines_agree(rng, dtype):
    yy, xx = np.mgrid[0:40, 0:56]
    smooth = (120 + 80 * np.sin(xx / 6.0) * np.cos(yy / 8.0)).astype(dtype)
    images = np.stack([smooth, smooth[::-1]])[..., None]
    seed = tf.constant([5, 9], tf.int64)
    fast = np.asarray(augment_batch(images, seed, engine="opencv"), np.float32)
    reference = np.asarray(augment_batch(images, seed, engine="keras"), np.float32)
    assert fast.dtype == np.float32 and not np.allclose(fast, images)
    # Same matrices; OpenCV's 5-bit interpolation weights and border blending differ slightly.
    np.testing.assert_allclose(fast[:, 2:-2, 2:-2], reference[:, 2:-2, 2:-2], atol=4)
    with pytest.raises(ValueError, match="engine"):
        augment_batch(images, seed, engine="torch")


def test_no_intensity_changes():
    # A constant image stays constant wherever no border pixel is pulled in.
    images = np.full((64, 16, 16, 1), 100, np.float32)
    out = np.asarray(augment_batch(images, [1, 2], AugmentConfig(translation_range=(0.0, 0.0), scale_range=(1, 1))))
    assert np.allclose(out[:, 7:9, 7:9], 100)


def test_random_affine_layer(tmp_path, rng):
    images = (rng.random((2, 24, 24, 1)) * 255).astype("float32")
    layer = RandomAffine(seed=1)
    np.testing.assert_array_equal(layer(images), images)  # inference: identity
    trained = np.asarray(layer(images, training=True))
    assert trained.shape == images.shape and not np.allclose(trained, images)
    model = keras.Sequential([keras.Input((None, None, 1)), RandomAffine(max_rotation_degrees=10, seed=3)])
    model.save(tmp_path / "aug.keras")
    loaded = keras.saving.load_model(tmp_path / "aug.keras", safe_mode=True)
    assert loaded.layers[0].config == AugmentConfig(max_rotation_degrees=10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_rotation_degrees": 200}, "max_rotation_degrees"),
        ({"flip_probability": 1.5}, "flip_probability"),
        ({"scale_range": (1.2, 0.9)}, "scale_range"),
        ({"translation_range": (0.2, 0.1)}, "translation_range"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**kwargs)
