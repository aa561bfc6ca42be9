"""The auxiliary body-part head: shared layers, dict outputs, the loss, save/load, and the classifier alone."""

import harness
import keras
import numpy as np
import pytest

from tf_fracture.models import FractureClassifier, build_classifier, load_model
from tf_fracture.models.multitask import (
    BODY_PART,
    FRACTURE,
    MultiTaskClassifier,
    multitask_loss,
    with_body_part_head,
)

SIZE = 32


@pytest.fixture
def x(rng):
    return (rng.random((4, SIZE, SIZE, 1)) * 255).astype("float32")


@pytest.fixture
def model():
    classifier = build_classifier(
        "mobilenetv3", "small", weights=None, input_size=SIZE, dropout=0.2, preprocessing={"image_size": SIZE}
    )
    model = with_body_part_head(classifier, 4, part_names=["hand", "leg", "hip", "shoulder"])
    harness.randomise_weights(model, perturb=True, scale=0.01)
    return model


def test_outputs_and_shared_layers(model, x):
    out = model(x, training=False)
    assert set(out) == {FRACTURE, BODY_PART}
    assert tuple(out[FRACTURE].shape) == (4, 1) and tuple(out[BODY_PART].shape) == (4, 4)
    assert out[FRACTURE].dtype == "float32" and out[BODY_PART].dtype == "float32"
    classifier = model.classifier
    np.testing.assert_array_equal(harness.to_numpy(classifier(x, training=False)), harness.to_numpy(out[FRACTURE]))
    # Every classifier variable is the multi-task model's own (shared, not copied); the head adds two.
    shared = {id(v) for v in model.weights}
    assert all(id(v) in shared for v in classifier.weights)
    assert len(model.weights) == len(classifier.weights) + 2
    head = model.get_layer(f"{BODY_PART}_logits")
    assert head.input is model.get_layer("features").output  # on the pooled features, before dropout
    assert model.preprocessing == {"image_size": SIZE}


def test_training_the_multitask_model_trains_the_classifier_which_saves_alone(model, x, tmp_path):
    y = {FRACTURE: np.array([0, 1, 0, 1], "float32"), BODY_PART: np.array([0, 3, -1, 2], "int32")}
    before = harness.to_numpy(model.classifier(x, training=False))
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=False, **multitask_loss(0.3))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after = harness.to_numpy(model.classifier(x, training=False))
    assert np.abs(after - before).max() > 1e-4
    loaded = harness.run_model_saving_test(model.classifier, x, tmp_path)
    assert type(loaded) is FractureClassifier and loaded.output_shape == (None, 1)


def test_loss_is_fracture_plus_weighted_body_part_ignoring_unknown_parts(model, x):
    y = {FRACTURE: np.array([0, 1, 0, 1], "float32"), BODY_PART: np.array([0, 3, -1, 2], "int32")}
    model.compile(optimizer="sgd", jit_compile=False, **multitask_loss(0.3))
    loss = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    out = model(x, training=False)
    logit = harness.to_numpy(out[FRACTURE])[:, 0].astype(np.float64)
    p = 1 / (1 + np.exp(-logit))
    bce = -np.mean(y[FRACTURE] * np.log(p) + (1 - y[FRACTURE]) * np.log(1 - p))
    logits = harness.to_numpy(out[BODY_PART]).astype(np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    known = y[BODY_PART] >= 0
    ce = -np.mean(log_softmax[np.where(known)[0], y[BODY_PART][known]])
    np.testing.assert_allclose(loss["loss"], bce + 0.3 * ce, rtol=1e-4)
    np.testing.assert_allclose(loss[f"{BODY_PART}_loss"], ce, rtol=1e-4)


def test_serialisation_and_saving(model, x, tmp_path):
    revived = harness.run_serialization_test(model)  # config JSON round trip (outputs are a dict: compared below)
    revived.set_weights(model.get_weights())
    for key in (FRACTURE, BODY_PART):
        harness.assert_close_relative(revived(x, training=False)[key], model(x, training=False)[key], 1e-6, key)
    path = tmp_path / "multitask.keras"
    model.save(path)
    loaded = load_model(path, compile=False)
    assert type(loaded) is MultiTaskClassifier and type(loaded.classifier) is FractureClassifier
    assert (loaded.num_parts, loaded.part_names) == (4, ["hand", "leg", "hip", "shoulder"])
    expected, got = model(x, training=False), loaded(x, training=False)
    for key in (FRACTURE, BODY_PART):
        harness.assert_close_relative(got[key], expected[key], 1e-6, key)
    harness.assert_same_trainable_state(loaded, model)


@pytest.mark.parametrize(
    "args, message",
    [
        ((keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]), 4), "FractureClassifier"),
        ((None, 1), "num_parts"),
        ((None, 3, ["a"]), "Expected 3 `part_names`"),
    ],
)
def test_bad_arguments(args, message):
    if args[0] is None:
        args = (build_classifier("mobilenetv3", "small", weights=None, input_size=SIZE), *args[1:])
    with pytest.raises(ValueError, match=message):
        MultiTaskClassifier(*args)


def test_multitask_loss_checks_its_weight():
    with pytest.raises(ValueError, match="aux_loss_weight"):
        multitask_loss(-1.0)
