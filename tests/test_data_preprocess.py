"""The method's preprocessing: parity with OpenCV and NumPy, presets, eager vs tf.data, bad configs."""

import dataclasses
import re

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tf_fracture.data.pipeline import tf_preprocess
from tf_fracture.data.preprocess import (
    PREPROCESS_PRESETS,
    PreprocessConfig,
    clahe,
    get_preprocess_config,
    preprocess,
    resize,
    unsharp_mask,
)

# OpenCV's fixed Gaussian tables for sigma=0 and kernel sizes up to 7 (imgproc, getGaussianKernel).
GAUSSIAN_TABLES = {
    3: np.array([1, 2, 1]) / 4,
    5: np.array([1, 4, 6, 4, 1]) / 16,
    7: np.array([2, 7, 14, 18, 14, 7, 2]) / 64,
}


def radiograph(rng, shape=(90, 70)):
    """Smooth shapes plus noise and hard edges, so that CLAHE and the unsharp mask both have work."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    image = 60 + 40 * np.sin(x / 9.0) + 30 * np.cos(y / 13.0) + rng.normal(0, 12, shape)
    image[shape[0] // 3 : shape[0] // 2, 5:-5] = 250
    image[:, :4] = 0
    return np.clip(image, 0, 255).astype(np.uint8)


def reference_unsharp(image, kernel, amount):
    """img + amount * (img - blur) in float64, blur = separable conv with BORDER_REFLECT_101 edges."""
    weights = GAUSSIAN_TABLES[kernel]
    radius = kernel // 2
    padded = np.pad(image.astype(np.float64), radius, mode="reflect")  # numpy 'reflect' == REFLECT_101
    rows = sum(w * padded[:, i : i + image.shape[1]] for i, w in enumerate(weights))
    blurred = sum(w * rows[i : i + image.shape[0], :] for i, w in enumerate(weights))
    return image + amount * (image - blurred)


def through_dataset(fn, image):
    ds = tf.data.Dataset.from_tensors(image).map(fn, num_parallel_calls=2)
    return next(iter(ds)).numpy()


# --- presets and config ----------------------------------------------------------------------------


def test_presets_have_the_papers_numbers():
    mura, elbow = get_preprocess_config("mura"), get_preprocess_config("elbow")
    assert (mura.image_size, mura.unsharp_kernel, elbow.image_size, elbow.unsharp_kernel) == (384, 5, 584, 7)
    for config in (mura, elbow):
        assert (config.clahe_clip_limit, config.clahe_grid, config.unsharp_amount) == (2.5, 4, 2.0)
        assert config.resize_mode == "stretch"
    assert sorted(PREPROCESS_PRESETS) == ["elbow", "mura"]


def test_presets_cannot_be_changed_in_place():
    with pytest.raises(TypeError):
        PREPROCESS_PRESETS["mura"] = PreprocessConfig(10, unsharp_kernel=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PREPROCESS_PRESETS["mura"].image_size = 10
    assert dataclasses.replace(PREPROCESS_PRESETS["mura"], image_size=256).unsharp_kernel == 5


def test_every_field_has_help():
    assert all(f.metadata.get("help") for f in dataclasses.fields(PreprocessConfig))


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'elbow', 'mura'.*name='wrist'"):
        get_preprocess_config("wrist")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"unsharp_kernel": 4}, "`unsharp_kernel` to be odd"),
        ({"unsharp_kernel": 1}, "`unsharp_kernel` to be an integer >= 3"),
        ({"unsharp_kernel": 5.0}, "`unsharp_kernel` to be an integer"),
        ({"image_size": 0}, "`image_size` to be a positive integer"),
        ({"image_size": True}, "`image_size` to be a positive integer, but got `image_size=True`"),
        ({"clahe_grid": 0}, "`clahe_grid` to be a positive integer"),
        ({"clahe_clip_limit": 0.0}, "`clahe_clip_limit` to be a finite number > 0"),
        ({"clahe_clip_limit": float("nan")}, "`clahe_clip_limit` to be a finite number"),
        ({"unsharp_amount": -1.0}, "`unsharp_amount` to be a finite number >= 0"),
        ({"resize_mode": "crop"}, "one of 'stretch', 'pad', but got `resize_mode='crop'`"),
    ],
)
def test_bad_configs_raise_clear_errors(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PreprocessConfig(**{"image_size": 64, "unsharp_kernel": 5, **changes})


def test_unsharp_kernel_is_required_and_keyword_only():
    with pytest.raises(TypeError):
        PreprocessConfig(64)
    with pytest.raises(TypeError):
        PreprocessConfig(64, 2.5, 4, 5)


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8, 1), np.uint8), np.zeros((8, 8), np.float32), np.zeros((0, 8), np.uint8)]
)
def test_functions_reject_anything_but_2d_uint8(bad):
    for fn in (lambda x: resize(x, 4), clahe, unsharp_mask):
        with pytest.raises(ValueError, match="Expected a"):
            fn(bad)


# --- the transforms --------------------------------------------------------------------------------


def test_clahe_matches_opencv(rng):
    image = radiograph(rng)
    expected = cv2.createCLAHE(clipLimit=2.5, tileGridSize=(4, 4)).apply(image)
    np.testing.assert_array_equal(clahe(image, 2.5, 4), expected)
    assert not np.array_equal(expected, image)
    # The parameters are passed through: another clip limit gives another image.
    assert not np.array_equal(clahe(image, 8.0, 4), expected)


def test_opencv_gaussian_tables_are_what_the_reference_uses():
    for kernel, weights in GAUSSIAN_TABLES.items():
        np.testing.assert_allclose(cv2.getGaussianKernel(kernel, 0).ravel(), weights, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kernel", [5, 7])
def test_unsharp_matches_numpy_formula_and_clips(rng, kernel):
    image = radiograph(rng)
    reference = reference_unsharp(image, kernel, 2.0)
    # The test image drives the formula out of range on both sides, so clipping is exercised.
    assert reference.min() < -20 and reference.max() > 275
    expected = np.clip(np.rint(reference), 0, 255)
    out = unsharp_mask(image, kernel, 2.0)
    assert out.dtype == np.uint8 and out.shape == image.shape
    # float32 (OpenCV) vs float64 (here) may round a value lying at .5 differently.
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert np.mean(out == expected) > 0.99
    assert (out == 0).any() and (out == 255).any()


def test_unsharp_amount_zero_is_identity_and_flat_is_unchanged(rng):
    image = radiograph(rng)
    np.testing.assert_array_equal(unsharp_mask(image, 5, 0.0), image)
    flat = np.full((20, 20), 77, np.uint8)
    np.testing.assert_array_equal(unsharp_mask(flat, 7, 2.0), flat)


def test_resize_stretch_uses_area_when_shrinking_and_linear_when_enlarging(rng):
    image = radiograph(rng, (90, 70))
    np.testing.assert_array_equal(resize(image, 35), cv2.resize(image, (35, 35), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(resize(image, 120), cv2.resize(image, (120, 120), interpolation=cv2.INTER_LINEAR))
    # 90x70 -> 80: rows shrink (area), columns grow (linear).
    rows = cv2.resize(image, (70, 80), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(resize(image, 80), cv2.resize(rows, (80, 80), interpolation=cv2.INTER_LINEAR))


def test_resize_area_is_block_mean():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    expected = np.rint(image.reshape(2, 2, 2, 2).mean(axis=(1, 3)))
    np.testing.assert_array_equal(resize(image, 2), expected)


@pytest.mark.parametrize(("shape", "box"), [((100, 50), (64, 32)), ((30, 120), (16, 64))])
def test_resize_pad_keeps_aspect_ratio(shape, box):
    image = np.full(shape, 200, np.uint8)
    out = resize(image, 64, "pad")
    assert out.shape == (64, 64)
    rows, cols = np.nonzero(out)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert abs(height - box[0]) <= 1 and abs(width - box[1]) <= 1
    # centred: as much padding on either side, to a pixel
    assert abs(rows.min() - (63 - rows.max())) <= 1 and abs(cols.min() - (63 - cols.max())) <= 1
    # stretch fills the square instead
    assert resize(image, 64, "stretch").min() == 200


def test_preprocess_is_resize_then_clahe_then_unsharp(rng):
    image = radiograph(rng, (150, 110))
    config = PreprocessConfig(64, unsharp_kernel=5)
    expected = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
    expected = cv2.createCLAHE(clipLimit=2.5, tileGridSize=(4, 4)).apply(expected)
    expected = unsharp_mask(expected, 5, 2.0)
    out = preprocess(image, config)
    assert out.dtype == np.uint8 and out.shape == (64, 64)
    np.testing.assert_array_equal(out, expected)


# --- eager vs tf.data ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "transform",
    [
        lambda x: resize(x, 48),
        lambda x: resize(x, 48, "pad"),
        lambda x: clahe(x, 2.5, 4),
        lambda x: unsharp_mask(x, 7, 2.0),
    ],
    ids=["resize_stretch", "resize_pad", "clahe", "unsharp"],
)
def test_each_transform_is_identical_inside_dataset_map(rng, transform):
    image = radiograph(rng)

    def wrapped(x):
        out = tf.numpy_function(transform, [x], tf.uint8, stateful=False)
        out.set_shape((None, None))
        return out

    eager = wrapped(tf.constant(image)).numpy()
    np.testing.assert_array_equal(eager, transform(image))
    np.testing.assert_array_equal(through_dataset(wrapped, image), eager)


@pytest.mark.parametrize("preset", ["mura", "elbow"])
@pytest.mark.parametrize("channel_axis", [False, True])
def test_tf_preprocess_eager_and_in_dataset_map(rng, preset, channel_axis):
    config = get_preprocess_config(preset)
    image = radiograph(rng, (300, 240))
    expected = preprocess(image, config)[..., None]
    tensor = image[..., None] if channel_axis else image
    eager = tf_preprocess(tf.constant(tensor), config)
    assert eager.dtype == tf.uint8 and eager.shape == (config.image_size, config.image_size, 1)
    np.testing.assert_array_equal(eager.numpy(), expected)

    ds = tf.data.Dataset.from_tensors(tensor).map(lambda x: tf_preprocess(x, config))
    assert ds.element_spec.shape == (config.image_size, config.image_size, 1)
    np.testing.assert_array_equal(next(iter(ds)).numpy(), expected)


def test_tf_preprocess_handles_images_of_different_sizes(rng):
    config = PreprocessConfig(32, unsharp_kernel=3, resize_mode="pad")
    images = [radiograph(rng, (50, 40)), radiograph(rng, (20, 70))]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec((None, None), tf.uint8)
    ).map(lambda x: tf_preprocess(x, config), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    assert ds.element_spec.shape == (32, 32, 1)
    for out, image in zip(ds, images, strict=True):
        np.testing.assert_array_equal(out.numpy()[..., 0], preprocess(image, config))


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (tf.zeros((8, 8), tf.float32), "uint8"),
        (tf.zeros((8, 8, 3), tf.uint8), "single-channel"),
        (tf.zeros((1, 8, 8, 1), tf.uint8), r"\(H, W\) or \(H, W, 1\)"),
    ],
)
def test_tf_preprocess_rejects_bad_inputs(tensor, message):
    with pytest.raises(ValueError, match=message):
        tf_preprocess(tensor, get_preprocess_config("mura"))
