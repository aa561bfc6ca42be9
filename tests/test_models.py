"""Classifiers and the fusion ensemble: shapes, save/load round trips, a training step, errors."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import randomise_network_weights as randomise_weights
from helpers import images

from tf_fracture.backbones import Backbone, available_backbones, build_backbone
from tf_fracture.configs import backbone_card, backbone_names
from tf_fracture.models import (
    FractureClassifier,
    FusionConfig,
    FusionModel,
    build_classifier,
    build_fusion,
    feature_extractor,
    feature_map_model,
    load_model,
)


@pytest.fixture(scope="module")
def classifiers():
    """The method's three single models (default variants), randomly initialised."""
    keras.utils.set_random_seed(7)
    return {name: build_classifier(name, weights=None) for name in available_backbones()}


@pytest.fixture(scope="module")
def small_classifiers():
    """The smallest variant of each family: the fusion is family-agnostic, and these keep tests fast."""
    keras.utils.set_random_seed(8)
    variants = {name: backbone_card(name).test_variant for name in backbone_names()}
    models = {name: build_classifier(name, variant, weights=None) for name, variant in variants.items()}
    for seed, model in enumerate(models.values()):
        randomise_weights(model, seed)  # a fusion that failed to copy a member's weights would show
    return models


@pytest.fixture(scope="module")
def fusion(small_classifiers):
    return build_fusion(list(small_classifiers.values()))


@pytest.mark.parametrize("name", available_backbones())
def test_classifier_outputs_one_logit_at_two_sizes(classifiers, name, rng):
    model = classifiers[name]
    assert model.output_shape == (None, 1)
    assert feature_extractor(model).output.shape == (None, 768)
    for size in (64, 96):
        logits = model(images(rng, size=size))
        assert logits.shape == (2, 1) and keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_fusion_concatenates_three_768d_heads(fusion, small_classifiers, rng):
    assert fusion.get_layer("fused_features").output.shape == (None, 2304)
    assert fusion.get_layer("fusion_dropout").rate == 0.3
    assert fusion.output_shape == (None, 1)
    assert fusion(images(rng, size=64)).shape == (2, 1)
    assert_fused_features_are_the_members(fusion, small_classifiers.values(), images(rng, size=64))


def assert_fused_features_are_the_members(fusion, members, x):
    """Each member's slice of the fused features equals its own features, to within 1e-5 of *its* scale."""
    fused = np.asarray(keras.Model(fusion.input, fusion.get_layer("fused_features").output)(x))
    start = 0
    for model in members:
        expected = np.asarray(feature_extractor(model)(x, training=False))
        scale = np.abs(expected).max()
        assert np.std(expected) > 1e-3 * scale > 0, f"{model.name}'s features are degenerate: the check proves nothing"
        got = fused[:, start : start + expected.shape[-1]]
        np.testing.assert_allclose(got, expected, atol=1e-5 * scale, rtol=0, err_msg=model.name)
        start += expected.shape[-1]
    assert start == fused.shape[-1]


def test_fusion_freezes_or_trains_its_members(small_classifiers):
    frozen = build_fusion(list(small_classifiers.values()), FusionConfig(hidden_units=(64,)))
    head = {"fusion_norm", "fusion_dense_0", "logit"}
    trainable_layers = {w.path.split("/")[0] for w in frozen.trainable_weights}
    assert trainable_layers == head
    trained = build_fusion(list(small_classifiers.values()), FusionConfig(train_backbones=True))
    assert len(trained.trainable_weights) > len(frozen.trainable_weights) + 100
    # The members are copied: freezing them in a fusion leaves the originals trainable.
    assert all(model.trainable for model in small_classifiers.values())


# EfficientNetV2's save/load (about 40 s) runs with -m large; test_backbones' keras-file round trip and
# test_model_families' reload cover EfficientNetV2-S by default.
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.large) if n == "efficientnetv2" else n for n in available_backbones()],
)
def test_classifier_save_load_round_trip(classifiers, name, tmp_path, rng):
    model = classifiers[name]
    randomise_weights(model)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = load_model(path)
    x = images(rng, size=64)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert loaded.name == model.name


def test_fusion_save_load_round_trip_and_build_from_saved_members(small_classifiers, fusion, tmp_path, rng):
    randomise_weights(fusion, seed=3)
    path = tmp_path / "fusion.keras"
    fusion.save(path)
    loaded = load_model(path)
    x = images(rng, size=64)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), fusion.predict(x, verbose=0), rtol=1e-5, atol=1e-5)

    paths = []
    for name, model in small_classifiers.items():
        paths.append(tmp_path / f"member_{name}.keras")
        model.save(paths[-1])
    assert_fused_features_are_the_members(build_fusion(paths), small_classifiers.values(), x)


@pytest.mark.parametrize("name", [*available_backbones(), "fusion"])
def test_one_training_step_changes_the_weights(classifiers, fusion, name, rng):
    model = fusion if name == "fusion" else classifiers[name]
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        jit_compile=False,  # XLA compilation would take most of the test's time
    )
    before = [np.asarray(w).copy() for w in model.trainable_weights]
    history = model.fit(images(rng, batch=4, size=64), np.array([0, 1, 1, 0], "float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, np.asarray(w)) for b, w in zip(before, model.trainable_weights, strict=True)]
    assert changed[-1], "the logit layer did not move"
    assert sum(changed) >= 0.9 * len(changed), f"only {sum(changed)} of {len(changed)} trainable weights moved"


def test_classifier_dropout_and_model_input(rng):
    backbone = build_backbone("mobilenetv3", "small", weights=None, input_size=64)
    model = build_classifier(backbone, dropout=0.2)
    assert model.get_layer("head_dropout").rate == 0.2
    assert model.input_shape == (None, 64, 64, 1)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: build_classifier("vgg16"), ValueError, "Valid backbones"),
        (lambda: build_classifier("mobilenetv3", weights=None, dropout=1.5), ValueError, "`dropout`"),
        (lambda: build_classifier(3), ValueError, "Expected `backbone`"),
        (lambda: build_classifier(Backbone("mobilenetv3", "small"), "s"), ValueError, "only apply"),
        (lambda: build_classifier(keras.Sequential([keras.layers.Dense(1)])), ValueError, "Expected `backbone`"),
        (lambda: build_classifier("mobilenetv3", weights=None, preprocessing=[1]), ValueError, "`preprocessing`"),
        (lambda: build_classifier("mobilenetv3", weights=None, preprocessing={"f": len}), ValueError, "JSON"),
        (lambda: FusionConfig(normalization="group"), ValueError, "`normalization`"),
        (lambda: FusionConfig(hidden_units=(0,)), ValueError, r"`hidden_units\[0\]` to be a positive integer"),
        (lambda: build_fusion([]), ValueError, "at least two"),
        (lambda: load_model("missing/model.keras"), FileNotFoundError, "missing/model.keras"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_fusion_rejects_repeated_or_incompatible_members(classifiers):
    convnext = classifiers["convnext"]
    with pytest.raises(ValueError, match="names repeat"):
        build_fusion([convnext, convnext])
    rgb = build_classifier("mobilenetv3", "small", weights=None, stem="rgb")
    with pytest.raises(ValueError, match="input channels"):
        build_fusion([convnext, rgb])
    plain = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="Expected a fusion member to be a FractureClassifier"):
        build_fusion([convnext, plain])


def test_mixed_precision_classifier_computes_in_float16_and_returns_float32(rng):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_classifier("mobilenetv3", "small", weights=None)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("top_cbam").compute_dtype == "float16"
    assert model.get_layer("feature_map").output.dtype == "float16"
    assert model.get_layer("cam").compute_dtype == "float32" and model.cam.dtype == "float32"
    logits = model(images(rng, size=64))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32" and np.isfinite(np.asarray(logits)).all()


def test_frozen_members_run_in_inference_mode_and_trained_members_train(small_classifiers, rng):
    """Two training-mode calls of a frozen fusion give the same fused features (EfficientNetV2's
    stochastic depth and BatchNorm off); with train_backbones the members are in training mode."""
    x = images(rng, batch=4, size=64)
    members = list(small_classifiers.values())
    frozen = build_fusion(members, FusionConfig(hidden_units=(8,)))
    fused = keras.Model(frozen.input, frozen.get_layer("fused_features").output)
    first, second = np.asarray(fused(x, training=True)), np.asarray(fused(x, training=True))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, np.asarray(fused(x, training=False)))

    trained = build_fusion(members, FusionConfig(hidden_units=(8,), train_backbones=True))
    fused = keras.Model(trained.input, trained.get_layer("fused_features").output)
    first, second = np.asarray(fused(x, training=True)), np.asarray(fused(x, training=True))
    inference = np.asarray(fused(x, training=False))
    efficientnet = slice(768, 2 * 768)  # stochastic depth: two training calls differ
    assert np.abs(first[:, efficientnet] - second[:, efficientnet]).max() > 1e-3 * np.abs(inference).max()
    assert np.abs(first - inference).max() > 1e-3 * np.abs(inference).max()  # batch statistics in training


def test_reloaded_frozen_fusion_trains_only_its_head(small_classifiers, tmp_path, rng):
    """Issue 6, item 8 at the fusion level: after a .keras reload only the head's 6 variables train,
    and one fit step leaves every member weight (BatchNorm statistics included) unchanged."""
    fusion = build_fusion(list(small_classifiers.values()), FusionConfig(hidden_units=(8,)))
    fusion.save(tmp_path / "fusion.keras")
    loaded = load_model(tmp_path / "fusion.keras")
    assert len(loaded.trainable_variables) == 6, [v.path for v in loaded.trainable_variables]
    members = [v for member in loaded.members for v in member.weights]
    before = [np.asarray(v).copy() for v in members]
    head = [np.asarray(v).copy() for v in loaded.trainable_variables]
    loaded.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    loaded.fit(images(rng, batch=4, size=64), np.array([0, 1, 1, 0], "float32"), epochs=1, verbose=0)
    changed = [v.path for v, b in zip(members, before, strict=True) if not np.array_equal(b, np.asarray(v))]
    assert changed == []
    assert all(not np.array_equal(b, np.asarray(v)) for b, v in zip(head, loaded.trainable_variables, strict=True))


def test_classifier_carries_its_config_and_preprocessing(tmp_path, rng):
    preprocessing = {"preset": "mura", "size": 64, "clahe": {"clip_limit": 2.0, "tiles": (8, 8)}}
    model = build_classifier(
        "mobilenetv3", "small", weights=None, stem="rgb", input_size=64, dropout=0.2, preprocessing=preprocessing
    )
    randomise_weights(model, seed=5)
    assert model.preprocessing == json.loads(json.dumps(preprocessing))  # stored JSON-safe
    config = json.loads(json.dumps(model.get_config()))
    rebuilt = FractureClassifier.from_config(config)
    assert rebuilt.get_config() == model.get_config()
    model.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    assert type(loaded) is FractureClassifier and type(loaded.backbone) is Backbone
    assert loaded.get_config() == model.get_config()
    backbone = loaded.backbone
    assert (backbone.family, backbone.variant, backbone.stem, backbone.attention) == (
        "mobilenetv3",
        "small",
        "rgb",
        True,
    )
    assert (backbone.input_size, backbone.feature_dim, loaded.dropout) == (64, 768, 0.2)
    assert loaded.preprocessing["clahe"]["tiles"] == [8, 8]
    x = images(rng, size=64, channels=3)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5 * np.abs(expected).max(), rtol=0)


def test_fusion_carries_its_config(small_classifiers, tmp_path):
    config = FusionConfig(hidden_units=(16, 8), dropout=0.1, normalization="batch", train_backbones=True)
    fusion = build_fusion(list(small_classifiers.values()), config, input_size=64, preprocessing={"preset": "elbow"})
    fusion.save(tmp_path / "fusion.keras")
    loaded = load_model(tmp_path / "fusion.keras")
    assert type(loaded) is FusionModel and loaded.fusion_config == config
    assert (loaded.input_size, loaded.preprocessing) == (64, {"preset": "elbow"})
    assert [m.family for m in loaded.members] == ["convnext", "efficientnetv2", "mobilenetv3"]
    assert all(m.trainable for m in loaded.members)


@pytest.mark.parametrize("reload", [False, True])
def test_feature_map_model_gives_gradients_from_the_map_to_the_logit(small_classifiers, reload, tmp_path, rng):
    model = small_classifiers["efficientnetv2"]
    if reload:
        model.save(tmp_path / "model.keras")
        model = load_model(tmp_path / "model.keras")
    cam = feature_map_model(model)
    x = tf.constant(images(rng, size=64))
    with tf.GradientTape() as tape:
        feature_map, logit = cam(x)
    grads = tape.gradient(logit, feature_map)
    assert feature_map.shape == (2, 2, 2, 768) and grads is not None and np.abs(np.asarray(grads)).max() > 0
    np.testing.assert_allclose(np.asarray(logit), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
