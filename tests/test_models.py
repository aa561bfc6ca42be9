"""Classifiers and the fusion ensemble: shapes, save/load round trips, a training step, errors."""

import keras
import numpy as np
import pytest
from helpers import images

from tf_fracture.backbones import available_backbones, build_backbone
from tf_fracture.models import FusionConfig, build_classifier, build_fusion, feature_extractor, load_model


@pytest.fixture(scope="module")
def classifiers():
    """The method's three single models (default variants), randomly initialised."""
    keras.utils.set_random_seed(7)
    return {name: build_classifier(name, weights=None) for name in available_backbones()}


@pytest.fixture(scope="module")
def small_classifiers():
    """The smallest variant of each family: the fusion is family-agnostic, and these keep tests fast."""
    keras.utils.set_random_seed(8)
    variants = {"convnext": "tiny", "efficientnetv2": "s", "mobilenetv3": "small"}
    return {name: build_classifier(name, variant, weights=None) for name, variant in variants.items()}


@pytest.fixture(scope="module")
def fusion(small_classifiers):
    return build_fusion(list(small_classifiers.values()))


def randomise(model, seed=0):
    """Moves every weight off its initial value, so a reload that silently skipped one would show."""
    r = np.random.default_rng(seed)
    for weight in model.weights:
        value = np.asarray(weight)
        if "variance" in weight.path:
            weight.assign(r.uniform(0.5, 1.5, value.shape).astype(value.dtype))
        else:
            weight.assign((value + r.normal(0, 0.01, value.shape)).astype(value.dtype))


@pytest.mark.parametrize("name", available_backbones())
def test_classifier_outputs_one_logit_at_two_sizes(classifiers, name, rng):
    model = classifiers[name]
    assert model.output_shape == (None, 1)
    assert model.get_layer("features").output.shape == (None, 768)
    for size in (64, 96):
        logits = model(images(rng, size=size))
        assert logits.shape == (2, 1) and keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_fusion_concatenates_three_768d_heads(fusion, small_classifiers, rng):
    assert fusion.get_layer("fused_features").output.shape == (None, 2304)
    assert fusion.get_layer("fusion_dropout").rate == 0.3
    assert fusion.output_shape == (None, 1)
    assert fusion(images(rng, size=64)).shape == (2, 1)
    # The fused features are exactly the members' features side by side.
    x = images(rng, size=64)
    fused = keras.Model(fusion.input, fusion.get_layer("fused_features").output)(x)
    members = [feature_extractor(model)(x) for model in small_classifiers.values()]
    np.testing.assert_allclose(np.asarray(fused), np.concatenate([np.asarray(m) for m in members], -1), atol=1e-5)


def test_fusion_freezes_or_trains_its_members(small_classifiers):
    frozen = build_fusion(list(small_classifiers.values()), FusionConfig(hidden_units=(64,)))
    head = {"fusion_norm", "fusion_dense_0", "logit"}
    trainable_layers = {w.path.split("/")[0] for w in frozen.trainable_weights}
    assert trainable_layers == head
    trained = build_fusion(list(small_classifiers.values()), FusionConfig(train_backbones=True))
    assert len(trained.trainable_weights) > len(frozen.trainable_weights) + 100
    # The members are copied: freezing them in a fusion leaves the originals trainable.
    assert all(model.trainable for model in small_classifiers.values())


@pytest.mark.parametrize("name", available_backbones())
def test_classifier_save_load_round_trip(classifiers, name, tmp_path, rng):
    model = classifiers[name]
    randomise(model)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = load_model(path)
    x = images(rng, size=64)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert loaded.name == model.name


def test_fusion_save_load_round_trip_and_build_from_saved_members(small_classifiers, fusion, tmp_path, rng):
    randomise(fusion, seed=3)
    path = tmp_path / "fusion.keras"
    fusion.save(path)
    loaded = load_model(path)
    x = images(rng, size=64)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), fusion.predict(x, verbose=0), rtol=1e-5, atol=1e-5)

    paths = []
    for name, model in small_classifiers.items():
        paths.append(tmp_path / f"member_{name}.keras")
        model.save(paths[-1])
    from_files = build_fusion(paths)
    expected = np.concatenate([feature_extractor(m).predict(x, verbose=0) for m in small_classifiers.values()], -1)
    fused = keras.Model(from_files.input, from_files.get_layer("fused_features").output)
    np.testing.assert_allclose(fused.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)


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
        (lambda: build_classifier(keras.Sequential([keras.layers.Dense(1)]), "s"), ValueError, "only apply"),
        (lambda: FusionConfig(normalization="group"), ValueError, "`normalization`"),
        (lambda: FusionConfig(hidden_units=(0,)), ValueError, "`hidden_units`"),
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
    with pytest.raises(ValueError, match="no layer named 'features'"):
        build_fusion([convnext, plain])


def test_mixed_precision_classifier_computes_in_float16_and_returns_float32(rng):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_classifier("mobilenetv3", "small", weights=None)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("top_cbam").compute_dtype == "float16"
    assert model.get_layer("features").output.dtype == "float16"
    logits = model(images(rng, size=64))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32" and np.isfinite(np.asarray(logits)).all()
