"""tf_fracture.train.runtime: precision scopes, strategies from the config, TF_CONFIG checks, determinism, XLA.

The strategies that need a fresh process (two logical CPUs, two workers) are in tests/test_distribute.py.
"""

import json
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_fracture.models import build_classifier, build_fusion, load_model
from tf_fracture.train import runtime
from tf_fracture.train.runtime import (
    check_global_batch,
    enable_determinism,
    is_chief,
    keras_multi_worker_fixes,
    precision_scope,
    read_tf_config,
    strategy_for,
    worker_dir,
)

SIZE = 32


def _batch():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (4, SIZE, SIZE, 1)).astype("float32"), np.array([0, 1, 0, 1], "float32")


def _compile(model, **kwargs):
    model.compile(keras.optimizers.SGD(0.01), keras.losses.BinaryCrossentropy(from_logits=True), **kwargs)
    return model


# ---- precision ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "compute"), [(None, "float32"), ("bf16", "bfloat16"), ("fp16", "float16")], ids=["fp32", "bf16", "fp16"]
)
def test_a_model_built_in_a_precision_scope_computes_in_it_with_a_float32_logit(mode, compute):
    with precision_scope(mode) as policy:
        assert keras.config.dtype_policy().name == policy.name == runtime.PRECISION_POLICIES[mode]
        model = build_classifier("mobilenetv3", "small", weights=None, input_size=SIZE)
    assert keras.config.dtype_policy().name == "float32"
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {layer.compute_dtype for layer in convs} == {compute}
    assert {v.dtype for v in model.weights} == {"float32"}  # mixed policies keep float32 variables
    assert model.output.dtype == "float32" and model.get_layer("logit").compute_dtype == "float32"
    x, y = _batch()
    assert model(x).dtype == "float32"
    _compile(model)
    # Keras 3 compile wraps the optimiser for mixed_float16 itself (auto_scale_loss=True).
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (mode == "fp16")
    before = [w.numpy() for w in model.trainable_weights]
    # Dynamic loss scaling starts at 2**15: float16 gradients overflow, and the optimiser skips those steps
    # and halves the scale until they fit. The other policies move the weights at the first step.
    steps, moved = 0, False
    while not moved and steps < 20:
        steps += 1
        assert np.isfinite(model.train_on_batch(x, y))
        moved = any(not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights, strict=True))
    assert moved, f"{steps} steps left every weight unchanged"
    if mode == "fp16":
        assert float(model.optimizer.dynamic_scale.numpy()) == 2.0 ** (15 - (steps - 1))
    else:
        assert steps == 1


def test_a_fusion_model_built_in_bf16_keeps_a_float32_logit():
    members = [
        build_classifier("mobilenetv3", "small", weights=None, input_size=SIZE, attention=attention)
        for attention in (True, False)
    ]
    with precision_scope("bf16"):
        fusion = build_fusion(members, input_size=SIZE)
    x, y = _batch()
    assert fusion.output.dtype == "float32" and fusion(x).dtype == "float32"
    assert np.isfinite(_compile(fusion).train_on_batch(x, y))


def test_a_model_trained_in_mixed_precision_reloads_in_float32(tmp_path):
    # The models carry their build configuration, not their layers' policies: model.keras from a bf16 run
    # reloads as a float32 model (evaluate and explain run in float32) with the same weights.
    with precision_scope("bf16"):
        model = build_classifier("mobilenetv3", "small", weights=None, input_size=SIZE)
    model.save(tmp_path / "model.keras")
    reloaded = load_model(tmp_path / "model.keras")
    assert {layer.dtype_policy.name for layer in reloaded.layers} == {"float32"}
    for a, b in zip(model.get_weights(), reloaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_precision_scope_restores_the_policy_on_error_and_rejects_unknown_modes():
    keras.config.set_dtype_policy("float32")
    with pytest.raises(RuntimeError, match="boom"), precision_scope("fp16"):
        raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="mixed_precision"), precision_scope("fp8"):
        pass
    # Nested scopes put back the outer one.
    with precision_scope("bf16"):
        with precision_scope(None):
            assert keras.config.dtype_policy().name == "float32"
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"


# ---- strategies --------------------------------------------------------------------------------------------


def test_strategy_for_names_and_configs_on_one_cpu():
    default = tf.distribute.get_strategy()
    assert strategy_for("none") is default
    assert strategy_for(types.SimpleNamespace(distribute="auto")) is default  # no GPU here
    mirrored = strategy_for("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy) and mirrored.num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="distribute"):
        strategy_for("horovod")
    with pytest.raises(ValueError, match="devices"):
        strategy_for("none", devices=["/cpu:0"])
    assert is_chief(default) and worker_dir("RUN", default).as_posix() == "RUN"


def test_multi_worker_without_tf_config_fails_before_starting_anything(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG environment variable"):
        strategy_for("multi_worker")


WORKERS = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"cluster": WORKERS}), "a 'cluster' and a 'task'"),
        (json.dumps({"cluster": {**WORKERS, "ps": ["h:1"]}, "task": {"type": "worker", "index": 0}}), "'ps'"),
        (json.dumps({"cluster": {"worker": ["no-port"]}, "task": {"type": "worker", "index": 0}}), "host:port"),
        (json.dumps({"cluster": WORKERS, "task": {"type": "worker", "index": 2}}), "index within it"),
        (json.dumps({"cluster": WORKERS, "task": {"type": "chief", "index": 0}}), "must name a job"),
    ],
)
def test_an_invalid_tf_config_says_what_is_wrong(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        strategy_for("multi_worker")


def test_read_tf_config_accepts_a_chief_and_workers():
    config = {"cluster": {"chief": ["a:1"], **WORKERS}, "task": {"type": "worker", "index": 1}}
    assert read_tf_config({"TF_CONFIG": json.dumps(config)}) == config["cluster"]


def test_the_global_batch_must_split_evenly_over_the_replicas():
    two = types.SimpleNamespace(num_replicas_in_sync=2)
    assert check_global_batch(32, two) == 16
    with pytest.raises(ValueError, match="multiple of 2"):
        check_global_batch(33, two)


def test_keras_multi_worker_fixes_leave_keras_as_they_found_it_and_single_device_fit_unchanged():
    from keras.src.backend.tensorflow import trainer as tf_trainer

    build, reduce = tf_trainer.TensorFlowTrainer._maybe_symbolic_build, tf_trainer.reduce_per_replica
    x, y = np.random.default_rng(0).normal(size=(8, 3)).astype("float32"), np.ones(8, "float32")
    losses = []
    for fixes in (False, True):
        keras.utils.set_random_seed(0)
        with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
            model.compile("sgd", "mse")
        with keras_multi_worker_fixes() if fixes else tf.init_scope():
            assert (tf_trainer.reduce_per_replica is reduce) != fixes
            losses.append(model.fit(x, y, batch_size=4, epochs=2, verbose=0).history["loss"])
    assert losses[0] == losses[1]
    assert tf_trainer.TensorFlowTrainer._maybe_symbolic_build is build and tf_trainer.reduce_per_replica is reduce


# ---- determinism and XLA -----------------------------------------------------------------------------------


def test_enable_determinism_seeds_and_makes_ops_deterministic():
    from tensorflow.python.framework import config as tf_framework_config  # the query and the switch off

    try:
        values = []
        for _ in range(2):
            enable_determinism(5)
            values.append(
                (
                    np.random.rand(),  # noqa: NPY002 (the global generator is what it seeds)
                    keras.random.normal((3,)).numpy(),
                    tf.random.uniform((2,)).numpy(),
                )
            )
            assert tf_framework_config.is_op_determinism_enabled()
        assert values[0][0] == values[1][0]
        np.testing.assert_array_equal(values[0][1], values[1][1])
        np.testing.assert_array_equal(values[0][2], values[1][2])
        with pytest.raises(ValueError, match="seed"):
            enable_determinism(-1)
    finally:  # op determinism is process-wide: put it back
        tf_framework_config.disable_op_determinism()


def _xla_step(family, variant):
    model = _compile(build_classifier(family, variant, weights=None, input_size=SIZE), jit_compile=True)
    assert model.jit_compile is True  # Keras turns it off (with a warning) for models it cannot compile
    before = [w.numpy() for w in model.trainable_weights]
    x, y = _batch()
    assert np.isfinite(model.train_on_batch(x, y))
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights, strict=True))


@pytest.mark.large
def test_a_cbam_grey_mobilenetv3_trains_a_step_under_xla():
    _xla_step("mobilenetv3", "small")


@pytest.mark.large
@pytest.mark.parametrize(("family", "variant"), [("convnext", "tiny"), ("efficientnetv2", "s")])
def test_the_larger_families_train_a_step_under_xla(family, variant):
    _xla_step(family, variant)
