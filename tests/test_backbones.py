"""Backbones: greyscale-stem equivalence, CBAM placement, shapes and argument errors."""

import functools
import json
import urllib.error

import keras
import numpy as np
import pytest
from harness import assert_close_relative, neighbours
from harness import randomise_network_weights as randomise_weights
from helpers import images

from tf_fracture.backbones import (
    Backbone,
    BackboneConfig,
    WeightsUnavailableError,
    available_backbones,
    available_variants,
    build_backbone,
    get_family,
    load_application_weights,
)
from tf_fracture.backbones.weights import transfer_weights
from tf_fracture.layers import CBAM
from tf_fracture.models import load_model

KERAS_APPLICATIONS = {
    ("convnext", "tiny"): keras.applications.ConvNeXtTiny,
    ("convnext", "small"): keras.applications.ConvNeXtSmall,
    ("efficientnetv2", "s"): keras.applications.EfficientNetV2S,
    ("efficientnetv2", "m"): keras.applications.EfficientNetV2M,
    ("mobilenetv3", "large"): keras.applications.MobileNetV3Large,
    ("mobilenetv3", "small"): keras.applications.MobileNetV3Small,
    ("mobilenetv3", "large_minimal"): functools.partial(keras.applications.MobileNetV3Large, minimalistic=True),
    ("mobilenetv3", "small_minimal"): functools.partial(keras.applications.MobileNetV3Small, minimalistic=True),
}
ALL_VARIANTS = [(name, variant) for name in available_backbones() for variant in available_variants(name)]
# EfficientNetV2-M is the -S builder at a larger size: the two slowest whole-network comparisons run it only with
# -m large (about 70 s in CI); -S runs them by default, and -M's CBAM placement and config tests stay default.
SLOW_VARIANTS = {("efficientnetv2", "m")}
WHOLE_NETWORK_VARIANTS = [
    pytest.param(*pair, marks=pytest.mark.large) if pair in SLOW_VARIANTS else pair for pair in ALL_VARIANTS
]
NATIVE_WIDTH = {
    ("convnext", "tiny"): 768,
    ("convnext", "small"): 768,
    ("efficientnetv2", "s"): 1280,
    ("efficientnetv2", "m"): 1280,
    ("mobilenetv3", "large"): 960,
    ("mobilenetv3", "small"): 576,
    ("mobilenetv3", "large_minimal"): 960,
    ("mobilenetv3", "small_minimal"): 576,
}


@pytest.fixture(scope="module")
def default_backbone():
    """``build_backbone(name, variant, weights=None)``, built once per module for the tests that only inspect
    or call it (a build of the larger variants takes seconds); released after the module."""
    cache = {}

    def get(name, variant):
        if (name, variant) not in cache:
            cache[name, variant] = build_backbone(name, variant, weights=None)
        return cache[name, variant]

    yield get
    cache.clear()


def test_registry_lists_every_family_and_variant():
    assert available_backbones() == ("convnext", "efficientnetv2", "mobilenetv3")
    assert set(ALL_VARIANTS) == set(KERAS_APPLICATIONS)


@pytest.mark.parametrize("name, variant", WHOLE_NETWORK_VARIANTS)
def test_public_architecture_and_grey_stem_match_keras_application(name, variant, rng, float64):
    """Our RGB rebuild equals Keras' network, and our 1-channel stem equals it on x replicated to RGB."""
    reference = KERAS_APPLICATIONS[name, variant](
        include_top=False, weights=None, input_shape=(None, None, 3), pooling="avg"
    )
    randomise_weights(reference)  # BN statistics, LayerNorm and LayerScale included
    public = dict(attention=False, feature_dim=None, keras_application=reference)
    rgb = build_backbone(name, variant, stem="rgb", **public)
    grey = build_backbone(name, variant, stem="grey", **public)
    assert grey.input_shape == (None, None, None, 1) and rgb.input_shape == (None, None, None, 3)

    # Eager calls, not `predict`: tracing three deep graphs per variant cost more than running them.
    x = images(rng, size=64).astype("float64")
    expected = np.asarray(reference(np.repeat(x, 3, axis=-1)))
    assert expected.shape == (2, NATIVE_WIDTH[name, variant])
    assert_close_relative(rgb(np.repeat(x, 3, axis=-1)), expected, 1e-6, require_variation=True)
    assert_close_relative(grey(x), expected, 1e-6, require_variation=True)


@pytest.mark.parametrize("name", available_backbones())
def test_method_model_grey_stem_equals_rgb_stem_on_replicated_input(name, rng, float64):
    rgb = build_backbone(name, weights=None, stem="rgb")
    grey = build_backbone(name, weights=None, stem="grey")
    randomise_weights(rgb)
    stem = next(layer.name for layer in rgb.layers if isinstance(layer, keras.layers.Conv2D))

    def sum_rgb_kernels(values):
        return [values[0].sum(axis=2, keepdims=True), *values[1:]]

    transfer_weights(rgb, grey, transforms={stem: sum_rgb_kernels})
    x = images(rng, size=64).astype("float64")
    assert_close_relative(grey(x), rgb(np.repeat(x, 3, axis=-1)), 1e-6, require_variation=True)


def convnext_neighbours(variant, last_blocks):
    p = f"convnext_{variant}"
    after = [f"{p}_downsampling_layernorm_0", f"{p}_downsampling_layernorm_1", f"{p}_downsampling_layernorm_2"]
    return {
        f"{p}_stage_{stage}_cbam": ([f"{p}_stage_{stage}_block_{last}_add"], [nxt])
        for stage, (last, nxt) in enumerate(zip(last_blocks, [*after, "feature_map"], strict=True))
    }


EFFICIENTNETV2_TOP = {"top_cbam": (["top_activation"], ["feature_map"])}
MOBILENETV3_TOP = {"top_cbam": (["feature_activation"], ["feature_map"])}
CBAM_NEIGHBOURS = {  # each CBAM's input layer and the layer it feeds: the method's points
    ("convnext", "tiny"): convnext_neighbours("tiny", (2, 2, 8, 2)),  # after each stage's last block
    ("convnext", "small"): convnext_neighbours("small", (2, 2, 26, 2)),
    # between the last fused-MBConv block (stage 3) and the first MBConv block (4a); after the top conv
    ("efficientnetv2", "s"): {"fused_mbconv_cbam": (["block3d_add"], ["block4a_expand_conv"]), **EFFICIENTNETV2_TOP},
    ("efficientnetv2", "m"): {"fused_mbconv_cbam": (["block3e_add"], ["block4a_expand_conv"]), **EFFICIENTNETV2_TOP},
    ("mobilenetv3", "large"): MOBILENETV3_TOP,  # after the added 1x1 conv (+BN, hard-swish)
    ("mobilenetv3", "small"): MOBILENETV3_TOP,
    ("mobilenetv3", "large_minimal"): MOBILENETV3_TOP,  # after the added 1x1 conv (+BN, ReLU)
    ("mobilenetv3", "small_minimal"): MOBILENETV3_TOP,
}


@pytest.mark.parametrize("name, variant", ALL_VARIANTS)
def test_cbam_placement_by_graph_neighbours(name, variant, default_backbone):
    model = default_backbone(name, variant)
    cbams = {layer.name: neighbours(layer) for layer in model.layers if isinstance(layer, CBAM)}
    assert cbams == CBAM_NEIGHBOURS[name, variant]
    # The feature map is the last spatial map: the pooling layer's only input.
    (pooling,) = neighbours(model.get_layer("feature_map"))[1]
    assert isinstance(model.get_layer(pooling), keras.layers.GlobalAveragePooling2D)
    plain = build_backbone(name, variant, weights=None, attention=False)
    assert not [layer for layer in plain.layers if isinstance(layer, CBAM)]


def test_efficientnetv2_and_mobilenetv3_reach_768_channels_before_cbam(default_backbone):
    model = default_backbone("efficientnetv2", "m")
    assert model.get_layer("fused_mbconv_cbam").input.shape[-1] == 80  # stage 3 of V2-M
    assert model.get_layer("top_conv").filters == 768
    model = default_backbone("mobilenetv3", "large")
    conv = model.get_layer("feature_conv")
    assert conv.input.shape[-1] == 960 and conv.filters == 768 and conv.kernel_size == (1, 1)


def test_convnext_has_no_grouped_convolutions():
    model = build_backbone("convnext", weights=None)
    assert not [layer.name for layer in model.layers if getattr(layer, "groups", 1) > 1]
    assert sum(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in model.layers) == 18


@pytest.mark.parametrize("name, variant", ALL_VARIANTS)
def test_feature_shapes_at_two_sizes(name, variant, rng, default_backbone):
    model = default_backbone(name, variant)
    assert model.input_shape == (None, None, None, 1)
    assert model.output_shape == (None, 768)
    for size in (64, 96):
        assert model(images(rng, batch=3, size=size)).shape == (3, 768)


def test_fixed_input_size(rng):
    model = build_backbone("mobilenetv3", "small", weights=None, input_size=96)
    assert model.input_shape == (None, 96, 96, 1)
    assert model(images(rng, size=96)).shape == (2, 768)


@pytest.mark.parametrize("name, variant", WHOLE_NETWORK_VARIANTS)
def test_feature_dim_equal_to_native_width_keeps_the_network_unchanged(name, variant):
    """feature_dim == the network's own width means what None means, in every family: no added or
    rebuilt layer, and every weight (EfficientNetV2's top conv included) comes from the application."""
    width = NATIVE_WIDTH[name, variant]
    assert get_family(name).native_width[variant] == width
    native = build_backbone(name, variant, weights=None, feature_dim=width)
    default = build_backbone(name, variant, weights=None, feature_dim=None)
    assert native.output_shape == (None, width)

    def layout(model):  # weightless layers may carry Keras' auto-numbered names
        return [
            (type(layer).__name__, layer.name if layer.weights else "", [tuple(w.shape) for w in layer.weights])
            for layer in model.layers
        ]

    assert layout(native) == layout(default)
    application = get_family(name).keras_application(variant)
    randomise_weights(application)
    load_application_weights(native, application)  # fails if any application weight is left unused
    top = {"convnext": f"convnext_{variant}_stage_3_block_2_pointwise_conv_2", "efficientnetv2": "top_conv"}
    top = top.get(name, "conv_1")  # the last weighted layer of the network's own head
    for got, expected in zip(native.get_layer(top).weights, application.get_layer(top).weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    other = build_backbone(name, variant, weights=None, feature_dim=width // 2)
    assert other.output_shape == (None, width // 2) and layout(other) != layout(default)


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
        (lambda: build_backbone("convnext", weights=None, input_size=16), "`input_size` to be an integer >= 32"),
        (lambda: build_backbone("convnext", weights=None, feature_dim=0), "`feature_dim`"),
        (lambda: build_backbone("convnext", weights=None, attention="yes"), "`attention`"),
        (lambda: build_backbone("convnext", weights=None, cbam_reduction=-1), "`cbam_reduction`"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        call()


def test_transfer_weights_refuses_to_drop_a_source_weight():
    def net(extra):
        x = inputs = keras.Input((4,))
        x = keras.layers.Dense(3, name="a")(x)
        if extra:
            x = keras.layers.Dense(3, name="extra")(x)
        return keras.Model(inputs, keras.layers.Dense(2, name="b")(x))

    source, target = net(extra=True), net(extra=False)
    before = [np.asarray(w).copy() for w in target.weights]
    with pytest.raises(ValueError, match=r"layers \['extra'\] .* no layer .* would be dropped"):
        transfer_weights(source, target)
    assert all(np.array_equal(b, np.asarray(w)) for b, w in zip(before, target.weights, strict=True))  # untouched
    assert transfer_weights(source, target, unused_source=["extra"]) == ["a", "b"]
    np.testing.assert_array_equal(np.asarray(target.get_layer("b").kernel), np.asarray(source.get_layer("b").kernel))


@pytest.mark.parametrize("name, variant", [("convnext", "tiny"), ("efficientnetv2", "s"), ("mobilenetv3", "small")])
def test_backbone_carries_its_config_through_json_and_keras_file(name, variant, tmp_path, rng):
    options = dict(attention=False, stem="rgb", feature_dim=256, input_size=64, cbam_reduction=8, cbam_kernel_size=5)
    backbone = build_backbone(name, variant, weights=None, **options)
    randomise_weights(backbone)
    config = backbone.get_config()
    expected = {
        "name": backbone.name,
        "trainable": True,
        "frozen_layers": [],
        "family": name,
        "variant": variant,
        "feature_stride": None,
    }
    assert config == {**expected, **options}
    rebuilt = Backbone.from_config(json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config and rebuilt.count_params() == backbone.count_params()
    backbone.save(tmp_path / "backbone.keras")
    loaded = load_model(tmp_path / "backbone.keras")
    assert type(loaded) is Backbone and loaded.get_config() == config
    assert loaded.build_config(weights="imagenet") == BackboneConfig(
        name=name, weights="imagenet", **config_fields(config)
    )
    x = images(rng, size=64, channels=3)
    expected = np.asarray(backbone(x))
    np.testing.assert_allclose(np.asarray(loaded(x)), expected, atol=1e-5 * np.abs(expected).max(), rtol=0)
    assert loaded.feature_map.shape == (None, 2, 2, loaded.get_layer("feature_map").output.shape[-1])


def config_fields(config):
    return {k: v for k, v in config.items() if k not in ("name", "trainable", "frozen_layers", "family")}


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
    # Building the graph and reloading a saved model never download: the weights are a separate step.
    backbone = Backbone("mobilenetv3", "small")
    backbone.save(tmp_path / "saved.keras")
    assert load_model(tmp_path / "saved.keras").get_config() == backbone.get_config()


@pytest.mark.parametrize("variant", ["small", "large_minimal"])
def test_a_stride_16_tap_is_keras_network_cut_before_its_last_stage(variant, rng):
    """feature_stride=16: the map is Keras' network cut at its last stride-16 block (weights transferred, the
    last stage's left unused), then the 768-d conv and CBAM; the map is twice as fine as the network's own."""
    tapped = build_backbone("mobilenetv3", variant, weights=None, feature_stride=16, input_size=64)
    whole = build_backbone("mobilenetv3", variant, weights=None, input_size=64)
    assert tapped.feature_map.shape[1:3] == (4, 4) and whole.feature_map.shape[1:3] == (2, 2)
    assert tapped.output_shape == (None, 768) and tapped.feature_stride == 16
    application = get_family("mobilenetv3").keras_application(variant)
    randomise_weights(application)
    load_application_weights(tapped, application)  # fails if a weight of the kept part finds no place
    tap = "expanded_conv_7_add" if variant.startswith("small") else "expanded_conv_11_add"
    cut = keras.Model(application.input, application.get_layer(tap).output)
    x = images(rng, size=64)
    ours = keras.Model(tapped.input, tapped.get_layer("feature_conv").input)(x)
    assert_close_relative(ours, cut(np.repeat(x, 3, axis=-1)), rtol=1e-4, what="map at the tap")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(tapped))
    assert again.feature_stride == 16 and again.feature_map.shape[1:3] == (4, 4)


def test_a_stride_a_family_does_not_offer_is_refused():
    with pytest.raises(ValueError, match="offers feature_stride 32"):
        build_backbone("convnext", "tiny", weights=None, feature_stride=16)
    with pytest.raises(ValueError, match="feature_stride"):
        BackboneConfig(name="mobilenetv3", feature_stride=8)
