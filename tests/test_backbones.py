"""Backbones: greyscale-stem equivalence, CBAM placement, shapes and argument errors."""

import urllib.error

import keras
import numpy as np
import pytest
from helpers import images

from tf_fracture.backbones import (
    BackboneConfig,
    WeightsUnavailableError,
    available_backbones,
    available_variants,
    build_backbone,
)
from tf_fracture.backbones.weights import transfer_weights
from tf_fracture.layers import CBAM

KERAS_APPLICATIONS = {
    ("convnext", "tiny"): keras.applications.ConvNeXtTiny,
    ("convnext", "small"): keras.applications.ConvNeXtSmall,
    ("efficientnetv2", "s"): keras.applications.EfficientNetV2S,
    ("efficientnetv2", "m"): keras.applications.EfficientNetV2M,
    ("mobilenetv3", "large"): keras.applications.MobileNetV3Large,
    ("mobilenetv3", "small"): keras.applications.MobileNetV3Small,
}
ALL_VARIANTS = [(name, variant) for name in available_backbones() for variant in available_variants(name)]
NATIVE_WIDTH = {
    ("convnext", "tiny"): 768,
    ("convnext", "small"): 768,
    ("efficientnetv2", "s"): 1280,
    ("efficientnetv2", "m"): 1280,
    ("mobilenetv3", "large"): 960,
    ("mobilenetv3", "small"): 576,
}


@pytest.fixture
def float64():
    """Exact-equivalence tests run in float64: a deep random-init net can amplify float32 rounding."""
    # Both: Keras pins its global dtype policy to floatx at the first layer built, so a float64 floatx
    # alone would leave a float64 policy behind for every later test.
    previous_floatx, previous_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(previous_floatx)
    keras.config.set_dtype_policy(previous_policy)


def assert_close_relative(actual, expected, rtol=1e-6):
    """Equal to within 1e-6 of the output's scale (Keras keeps ImageNet mean/std as float32 constants)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.abs(expected).max()
    assert scale > 0 and np.std(expected) > 1e-3 * scale, "degenerate reference output: the test would prove nothing"
    np.testing.assert_allclose(actual, expected, atol=rtol * scale, rtol=0)


def test_registry_lists_every_family_and_variant():
    assert available_backbones() == ("convnext", "efficientnetv2", "mobilenetv3")
    assert set(ALL_VARIANTS) == set(KERAS_APPLICATIONS)


@pytest.mark.parametrize("name, variant", ALL_VARIANTS)
def test_public_architecture_and_grey_stem_match_keras_application(name, variant, rng, float64):
    """Our RGB rebuild equals Keras' network, and our 1-channel stem equals it on x replicated to RGB."""
    reference = KERAS_APPLICATIONS[name, variant](
        include_top=False, weights=None, input_shape=(None, None, 3), pooling="avg"
    )
    public = dict(attention=False, feature_dim=None, keras_application=reference)
    rgb = build_backbone(name, variant, stem="rgb", **public)
    grey = build_backbone(name, variant, stem="grey", **public)
    assert grey.input_shape == (None, None, None, 1) and rgb.input_shape == (None, None, None, 3)

    x = images(rng, size=64).astype("float64")
    expected = reference.predict(np.repeat(x, 3, axis=-1), verbose=0)
    assert expected.shape == (2, NATIVE_WIDTH[name, variant])
    assert_close_relative(rgb.predict(np.repeat(x, 3, axis=-1), verbose=0), expected)
    assert_close_relative(grey.predict(x, verbose=0), expected)


@pytest.mark.parametrize("name", available_backbones())
def test_method_model_grey_stem_equals_rgb_stem_on_replicated_input(name, rng, float64):
    rgb = build_backbone(name, weights=None, stem="rgb")
    grey = build_backbone(name, weights=None, stem="grey")
    stem = next(layer.name for layer in rgb.layers if isinstance(layer, keras.layers.Conv2D))

    def sum_rgb_kernels(values):
        return [values[0].sum(axis=2, keepdims=True), *values[1:]]

    transfer_weights(rgb, grey, transforms={stem: sum_rgb_kernels})
    x = images(rng, size=64).astype("float64")
    assert_close_relative(grey.predict(x, verbose=0), rgb.predict(np.repeat(x, 3, axis=-1), verbose=0))


def cbam_input_channels(model):
    return [layer.input.shape[-1] for layer in model.layers if isinstance(layer, CBAM)]


@pytest.mark.parametrize(
    "name, variant, channels",
    [
        ("convnext", "tiny", [96, 192, 384, 768]),
        ("efficientnetv2", "m", [80, 768]),
        ("efficientnetv2", "s", [64, 768]),
        ("mobilenetv3", "large", [768]),
        ("mobilenetv3", "small", [768]),
    ],
)
def test_cbam_placement(name, variant, channels):
    model = build_backbone(name, variant, weights=None)
    assert cbam_input_channels(model) == channels
    assert cbam_input_channels(build_backbone(name, variant, weights=None, attention=False)) == []


def test_efficientnetv2_cbam_sits_between_fused_and_mbconv_stages():
    model = build_backbone("efficientnetv2", "m", weights=None)
    gate = model.get_layer("fused_mbconv_cbam")
    assert gate.input.shape[-1] == 80  # stage 3, the last fused-MBConv stage of V2-M
    first_mbconv = model.get_layer("block4a_expand_conv")
    assert first_mbconv.input is gate.output
    assert model.get_layer("top_conv").filters == 768
    assert model.get_layer("top_cbam").input is model.get_layer("top_activation").output


def test_mobilenetv3_projects_960_to_768_before_cbam():
    model = build_backbone("mobilenetv3", "large", weights=None)
    conv = model.get_layer("feature_conv")
    assert conv.input.shape[-1] == 960 and conv.filters == 768 and conv.kernel_size == (1, 1)
    assert model.get_layer("top_cbam").input is model.get_layer("feature_activation").output


def test_convnext_has_no_grouped_convolutions():
    model = build_backbone("convnext", weights=None)
    assert not [layer.name for layer in model.layers if getattr(layer, "groups", 1) > 1]
    assert sum(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in model.layers) == 18


@pytest.mark.parametrize("name, variant", ALL_VARIANTS)
def test_feature_shapes_at_two_sizes(name, variant, rng):
    model = build_backbone(name, variant, weights=None)
    assert model.input_shape == (None, None, None, 1)
    assert model.output_shape == (None, 768)
    for size in (64, 96):
        assert model(images(rng, batch=3, size=size)).shape == (3, 768)


def test_fixed_input_size(rng):
    model = build_backbone("mobilenetv3", "small", weights=None, input_size=96)
    assert model.input_shape == (None, 96, 96, 1)
    assert model(images(rng, size=96)).shape == (2, 768)


def test_feature_dim_and_public_widths(rng):
    assert build_backbone("mobilenetv3", "small", weights=None, feature_dim=256).output_shape == (None, 256)
    assert build_backbone("convnext", weights=None, feature_dim=512).output_shape == (None, 512)
    public = BackboneConfig.public("efficientnetv2", "s", weights=None)
    assert (public.attention, public.stem, public.feature_dim) == (False, "rgb", None)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: build_backbone("resnet50"), "Unknown backbone 'resnet50'. Valid backbones: convnext, efficientnetv2"),
        (lambda: build_backbone("convnext", "huge"), "Valid variants: tiny, small"),
        (lambda: build_backbone("convnext", weights="imagenet21k"), "`weights`"),
        (lambda: build_backbone("convnext", weights=None, stem="rgba"), "`stem`"),
        (lambda: build_backbone("convnext", weights=None, input_size=16), "at least 32"),
        (lambda: build_backbone("convnext", weights=None, feature_dim=0), "`feature_dim`"),
        (lambda: build_backbone("convnext", weights=None, attention="yes"), "`attention`"),
        (lambda: build_backbone("convnext", weights=None, cbam_reduction=-1), "`cbam_reduction`"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        call()


def test_imagenet_weights_offline_fail_with_a_clear_message(monkeypatch, tmp_path):
    import keras.src.backend.config as keras_config
    import keras.src.utils.file_utils as file_utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))  # no cached weights
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    with pytest.raises(WeightsUnavailableError, match=r"weights=None") as info:
        build_backbone("mobilenetv3", "small", weights="imagenet")
    assert "MobileNetV3Small" in str(info.value) and "KERAS_HOME" in str(info.value)
