"""The shared test harness for every custom layer and model (import as ``import harness``).

Modelled on keras-hub's ``TestCase`` (``keras_hub/src/tests/test_case.py``): one call,
`run_layer_test`, checks a layer class end to end; the pieces it is made of
(`run_serialization_test`, `run_model_saving_test`, `run_fit_step_test`,
`run_frozen_fit_step_test`, `run_mixed_precision_test`) serve models as well.

Each check moves the weights off their initial values first (`randomise_weights`): at
initialisation BatchNorm is the identity, biases are zero and LayerScale is 1e-6, so a
reload or a copy that skipped a weight would otherwise still give equal outputs.

Model tests compile with ``jit_compile=False``: XLA compilation would take most of each
test's time on CPU, and what is checked here (gradients reach the right variables) does not
depend on it.
"""

from __future__ import annotations

import json
import os
import warnings

import keras
import numpy as np

__all__ = [
    "assert_close_relative",
    "assert_same_trainable_state",
    "randomise_weights",
    "run_fit_step_test",
    "run_frozen_fit_step_test",
    "run_layer_test",
    "run_mixed_precision_test",
    "run_model_saving_test",
    "run_serialization_test",
    "trainable_state",
    "weight_values",
]


# --- small helpers -----------------------------------------------------------------------------


def to_numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def weight_values(layer_or_model) -> dict[str, np.ndarray]:
    """Every weight (trainable or not, BatchNorm statistics included) by its path."""
    return {w.path: to_numpy(w).copy() for w in layer_or_model.weights}


def randomise_weights(layer_or_model, seed: int = 0, scale: float = 0.3, perturb: bool = False) -> None:
    """Moves every float weight off its initial value (variances to [0.5, 1.5], so they stay valid).

    For a whole backbone whose every weight must leave its initial value in a controlled way (BN
    statistics, LayerNorm and LayerScale included), use `randomise_network_weights`.
    ``perturb=False`` draws each weight from N(0, scale), for a single layer; ``perturb=True``
    adds N(0, scale) noise to the initial value, which keeps a deep network's activations at
    the scale its initialiser chose (pass a small ``scale`` such as 0.01 then).
    """
    r = np.random.default_rng(seed)
    for w in layer_or_model.weights:
        dtype = keras.backend.standardize_dtype(w.dtype)
        if "float" not in dtype:
            continue
        if "variance" in w.path:
            value = r.uniform(0.5, 1.5, w.shape)
        elif perturb:
            value = to_numpy(w) + r.normal(0.0, scale, w.shape)
        else:
            value = r.normal(0.0, scale, w.shape)
        w.assign(value.astype(dtype))


def randomise_network_weights(model, seed: int = 0) -> None:
    """Moves every float weight of ``model`` well off its initial value.

    At Keras' initial weights BatchNorm is the identity, biases are zero and LayerScale is 1e-6,
    so a weight transfer that skipped them would go unseen. Here kernels are scaled elementwise
    by U(0.5, 1), scales (BN/LayerNorm/LayerScale ``gamma``) drawn from U(0.5, 1), offsets, biases
    and moving means from N(0, 0.1), moving variances from U(1, 2) (positive). Every factor is at
    most 1 so that a deep network (EfficientNetV2-M) stays stable instead of amplifying rounding
    differences chaotically.
    """
    r = np.random.default_rng(seed)
    for weight in model.weights:
        value = np.asarray(weight)
        if not np.issubdtype(value.dtype, np.floating):
            continue
        constant = value.size > 0 and np.all(value == value.flat[0])  # a constant initialiser
        if "variance" in weight.path.rsplit("/", 1)[-1]:
            new = r.uniform(1.0, 2.0, value.shape)
        elif constant and value.flat[0] != 0:  # scales: BN/LayerNorm gamma, LayerScale (whatever its name)
            new = r.uniform(0.5, 1.0, value.shape)
        elif constant:  # offsets, biases, moving means
            new = r.normal(0.0, 0.1, value.shape)
        else:  # randomly initialised kernels
            new = value * r.uniform(0.5, 1.0, value.shape)
        weight.assign(new.astype(value.dtype))


def neighbours(layer):
    """The names of the layers feeding ``layer`` and of those it feeds, in its (single) graph."""
    (node,) = layer._inbound_nodes
    inbound = [tensor._keras_history.operation.name for tensor in node.input_tensors]
    outbound = [node.operation.name for node in layer._outbound_nodes]
    return inbound, outbound


def assert_close_relative(
    actual, expected, rtol: float = 1e-5, what: str = "outputs", require_variation: bool = False
) -> None:
    """Equal to within ``rtol`` of the expected values' scale, which must not be negligible.

    An absolute tolerance proves nothing about outputs of 1e-11: the scale guard fails a test
    whose reference is (near) zero instead of letting it pass whatever the code does.
    """
    actual, expected = to_numpy(actual).astype(np.float64), to_numpy(expected).astype(np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    assert scale > 1e-6, f"{what}: the reference is (near) zero, so the comparison would prove nothing"
    if require_variation:  # a constant reference (e.g. a dead network) would prove little either
        assert np.std(expected) > 1e-3 * scale, f"{what}: the reference barely varies"
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale, err_msg=what)


def trainable_state(layer_or_model) -> dict:
    """Every sub-layer's and every weight's ``trainable`` flag, and the trainable weights' paths."""
    layers = layer_or_model._flatten_layers(include_self=True, recursive=True)
    return {
        # By position and class, not name: Keras gives unnamed layers (activations of the Keras
        # applications) a fresh unique name each time a graph is rebuilt in the same process.
        "layers": [(type(layer).__name__, layer.trainable) for layer in layers],
        "weights": [(w.path, w.trainable) for w in layer_or_model.weights],
        "trainable_weights": sorted(w.path for w in layer_or_model.trainable_weights),
    }


def assert_same_trainable_state(actual, expected) -> None:
    a, e = trainable_state(actual), trainable_state(expected)
    for key in ("layers", "weights", "trainable_weights"):
        assert a[key] == e[key], f"trainable state differs in {key}"


def _output_target(model, x, seed=1) -> np.ndarray:
    out = to_numpy(model(x, training=False))
    return np.random.default_rng(seed).normal(0.0, 1.0, out.shape).astype("float32")


def _wrap(layer: keras.layers.Layer, input_shape) -> keras.Model:
    inputs = keras.Input(tuple(input_shape[1:]), batch_size=None)
    return keras.Model(inputs, layer(inputs))


# --- the checks ----------------------------------------------------------------------------------


def run_serialization_test(instance, input_data=None):
    """Config JSON round trip: ``get_config -> json -> from_config`` gives an equal config.

    With ``input_data``, the revived object, given a copy of the weights, must also give the
    original's outputs (in inference mode). Works for layers and functional models.
    Returns the revived object.
    """
    cls = instance.__class__
    if not cls.__module__.startswith("keras."):  # Keras' own classes (Functional) need no registration
        name = keras.saving.get_registered_name(cls)
        assert keras.saving.get_registered_object(name) is cls, f"{cls.__name__} is not registered for load_model"

    config = instance.get_config()
    text = json.dumps(config, sort_keys=True)  # fails here if the config holds something JSON cannot
    revived = cls.from_config(json.loads(text))
    assert json.dumps(revived.get_config(), sort_keys=True) == text, "from_config(get_config()) changed the config"

    # The full serialisation, the form a .keras file stores.
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(instance)))
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is cls and json.dumps(again.get_config(), sort_keys=True) == text

    if input_data is not None:
        expected = instance(input_data, training=False)
        if not revived.built:
            revived(input_data, training=False)
        revived.set_weights(instance.get_weights())
        assert_close_relative(revived(input_data, training=False), expected, 1e-6, "outputs after from_config")
    return revived


def run_model_saving_test(model: keras.Model, input_data, directory, rtol: float = 1e-6) -> keras.Model:
    """``.keras`` save and reload (``safe_mode=True``): equal outputs, weights and trainable flags.

    Call `randomise_weights` first when the model is freshly built. Returns the reloaded model.
    """
    path = os.path.join(os.fspath(directory), f"{model.name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    assert_same_trainable_state(loaded, model)
    expected, got = weight_values(model), weight_values(loaded)
    assert list(got) == list(expected), "the reloaded model's weights differ in name or order"
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert_close_relative(loaded(input_data, training=False), model(input_data, training=False), rtol, "reloaded")
    return loaded


def run_fit_step_test(model: keras.Model, input_data, target=None, learning_rate: float = 0.1, require_all=True):
    """One ``fit`` step runs, its loss is finite and it moves every trainable weight.

    With ``require_all=False`` most (90%) must move: a deep net may have a few weights whose
    gradient is exactly zero on a tiny batch. Also checks that a call in inference mode
    changes no weight at all (BatchNorm statistics included).
    """
    target = _output_target(model, input_data) if target is None else target
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse", jit_compile=False)

    before = weight_values(model)
    model(input_data, training=False)
    after_inference = weight_values(model)
    moved = [k for k in before if not np.array_equal(before[k], after_inference[k])]
    assert moved == [], f"a call in inference mode changed {moved}"

    trainable = {w.path for w in model.trainable_weights}
    with warnings.catch_warnings():  # a weightless layer (an augmentation) is still run through fit
        warnings.filterwarnings("ignore", "The model does not have any trainable weights")
        history = model.fit(input_data, target, batch_size=len(input_data), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    after = weight_values(model)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    unchanged = sorted(trainable - changed)
    if require_all:
        assert unchanged == [], f"one fit step did not move the trainable weights {unchanged}"
    else:
        assert len(unchanged) <= 0.1 * len(trainable), f"{len(unchanged)} of {len(trainable)} trainable weights idle"
    return changed


def run_frozen_fit_step_test(model: keras.Model, input_data, target=None):
    """With ``model.trainable = False``, one ``fit`` step changes no weight, BN statistics included."""
    model.trainable = False
    assert model.trainable_weights == []
    target = _output_target(model, input_data) if target is None else target
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse", jit_compile=False)
    before = weight_values(model)
    with warnings.catch_warnings():  # the point of this test
        warnings.filterwarnings("ignore", "The model does not have any trainable weights")
        model.fit(input_data, target, batch_size=len(input_data), epochs=1, verbose=0, shuffle=False)
    after = weight_values(model)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert changed == [], f"fit changed weights of a frozen model: {changed}"


def run_mixed_precision_test(build, input_data, expected_output_dtype: str = "float16", rtol: float = 2e-2):
    """Under ``mixed_float16``: output dtype as documented, every variable float32, same outputs.

    Args:
        build: a function of no argument returning a fresh layer or model; it is called once
            under the ``float32`` policy and once under ``mixed_float16``.
        expected_output_dtype: float16 for a layer (its compute dtype); float32 for a model
            whose last layer is pinned to float32 (our classifiers' logit layer).
        rtol: tolerance relative to the output's scale (float16 keeps about 3 digits).
    """
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("float32")
        full = build()
        keras.config.set_dtype_policy("mixed_float16")
        mixed = build()
    finally:
        keras.config.set_dtype_policy(previous)
    for model in (full, mixed):  # builds them
        model(input_data, training=False)
    randomise_weights(full)
    mixed.set_weights(full.get_weights())
    expected = full(input_data, training=False)
    got = mixed(input_data, training=False)
    assert keras.backend.standardize_dtype(got.dtype) == expected_output_dtype
    wrong = [(w.path, w.dtype) for w in mixed.weights if keras.backend.standardize_dtype(w.dtype) != "float32"]
    assert wrong == [], f"variables not kept in float32 under mixed precision: {wrong}"
    assert_close_relative(to_numpy(got).astype("float32"), expected, rtol, "mixed-precision outputs")


def run_layer_test(
    layer_cls,
    init_kwargs: dict,
    input_data,
    expected_output_shape,
    directory,
    *,
    expected_output_dtype: str = "float32",
    expected_num_trainable_weights: int | None = None,
    expected_num_non_trainable_weights: int | None = None,
    run_training_check: bool = True,
    run_mixed_precision_check: bool = True,
    inference_is_identity: bool = False,
):
    """Every check of the harness for one layer class.

    Args:
        layer_cls: the layer class (registered with Keras).
        init_kwargs: constructor arguments (not ``dtype``/``trainable``: the harness sets them).
        input_data: a NumPy batch.
        expected_output_shape: the eager output's shape.
        directory: where the ``.keras`` file goes (pytest's ``tmp_path``).
        expected_output_dtype: under the default float32 policy.
        expected_num_trainable_weights, expected_num_non_trainable_weights: counted once built.
        run_training_check: run one ``fit`` step, unfrozen and frozen.
        run_mixed_precision_check: run `run_mixed_precision_test` (output float16).
        inference_is_identity: an augmentation layer: ``training=False`` returns the input
            unchanged and ``training=True`` changes it.
    """
    input_data = np.asarray(input_data)

    # Shape and dtype, eager and symbolic.
    layer = layer_cls(**init_kwargs)
    output = layer(input_data)
    assert tuple(output.shape) == tuple(expected_output_shape)
    assert keras.backend.standardize_dtype(output.dtype) == expected_output_dtype
    symbolic = layer_cls(**init_kwargs)(keras.Input(input_data.shape[1:]))
    assert tuple(symbolic.shape) == (None, *expected_output_shape[1:])
    assert tuple(layer.compute_output_shape(input_data.shape)) == tuple(expected_output_shape)
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights

    if inference_is_identity:
        np.testing.assert_array_equal(to_numpy(layer(input_data, training=False)), input_data)
        assert not np.allclose(to_numpy(layer(input_data, training=True)), input_data), "training mode did nothing"

    # Config JSON round trip, with equal outputs once the weights are copied.
    randomise_weights(layer)
    run_serialization_test(layer, input_data)
    frozen = layer_cls(**init_kwargs, trainable=False)
    revived = run_serialization_test(frozen)
    revived(input_data)
    assert all(not w.trainable for w in revived.weights), "from_config(trainable=False) left trainable weights"

    # .keras save and reload, with a frozen copy beside a trainable one.
    inputs = keras.Input(input_data.shape[1:])
    outputs = layer_cls(**init_kwargs, name="trainable_copy")(inputs)
    outputs = layer_cls(**init_kwargs, trainable=False, name="frozen_copy")(outputs)
    model = keras.Model(inputs, outputs, name=f"{layer_cls.__name__.lower()}_harness")
    randomise_weights(model)
    loaded = run_model_saving_test(model, input_data, directory)

    if run_training_check:
        frozen_before = weight_values(loaded.get_layer("frozen_copy"))
        changed = run_fit_step_test(loaded, input_data)
        moved = sorted(k for k in changed if k in frozen_before)
        assert moved == [], f"fit changed the frozen layer's weights {moved}"
        run_frozen_fit_step_test(_wrap(layer_cls(**init_kwargs), input_data.shape), input_data)

    if run_mixed_precision_check:

        def build():
            built = layer_cls(**init_kwargs)
            built(input_data)
            return built

        run_mixed_precision_test(build, input_data, "float16")
