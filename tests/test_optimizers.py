"""TorchSGD and GroupedOptimizer against a NumPy transcription of PyTorch's SGD."""

import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_fracture.train.optimizers import GroupedOptimizer, TorchSGD, optimizer_for_groups
from tf_fracture.train.schedules import CosineAnnealingWarmRestarts

SHAPES = [(3,), (2, 4), (2, 3, 5), ()]


def pytorch_sgd(weights, grads, lrs, momentum, weight_decay, nesterov=False):
    """torch.optim.SGD (dampening 0), `_single_tensor_sgd` transcribed: one list of gradients per step."""
    weights = [np.array(w, dtype=np.float64) for w in weights]
    buffers = [None] * len(weights)
    for step_grads, lr in zip(grads, lrs, strict=True):
        for i, (w, grad) in enumerate(zip(weights, step_grads, strict=True)):
            g = grad + weight_decay * w
            if momentum != 0:
                buffers[i] = g.copy() if buffers[i] is None else momentum * buffers[i] + g
                g = g + momentum * buffers[i] if nesterov else buffers[i]
            weights[i] = w - lr * g
    return weights


def pytorch_warm_restart_lrs(base_lr, T_0, T_mult, steps_per_epoch, steps):
    """CosineAnnealingWarmRestarts stepped once per epoch, as a learning rate per batch."""
    lrs, t_cur, t_i = [], 0, T_0
    while len(lrs) < steps:
        lrs += [base_lr * (1 + math.cos(math.pi * t_cur / t_i)) / 2] * steps_per_epoch
        t_cur += 1
        if t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * T_mult
    return lrs[:steps]


def random_problem(rng, steps=20):
    weights = [rng.normal(size=s) for s in SHAPES]
    grads = [[rng.normal(size=s) for s in SHAPES] for _ in range(steps)]
    return weights, grads


def run_keras(optimizer, weights, grads, dtype="float32"):
    variables = [keras.Variable(w.astype(dtype), dtype=dtype) for w in weights]
    for step_grads in grads:
        optimizer.apply([g.astype(dtype) for g in step_grads], variables)
    return [v.numpy() for v in variables]


def max_abs_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - y))) for x, y in zip(a, b, strict=True))


# 20 steps at 3 batches per epoch, T_0=2, T_mult=2: restarts at steps 6 and 18 (epochs 2 and 6).
SCHEDULE = {"initial_learning_rate": 0.1, "T_0": 2, "steps_per_epoch": 3, "T_mult": 2}
LRS = pytorch_warm_restart_lrs(0.1, T_0=2, T_mult=2, steps_per_epoch=3, steps=20)


def test_the_reference_schedule_restarts_inside_the_run():
    assert LRS[5] < LRS[6] == 0.1 and LRS[17] < LRS[18] == 0.1


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_pytorch_step_by_step_over_a_warm_restart(rng, nesterov, dtype):
    weights, grads = random_problem(rng)
    optimizer = TorchSGD(CosineAnnealingWarmRestarts(**SCHEDULE), momentum=0.7, weight_decay=1e-3, nesterov=nesterov)
    variables = [keras.Variable(w.astype(dtype), dtype=dtype) for w in weights]
    for step in range(len(grads)):
        optimizer.apply([g.astype(dtype) for g in grads[step]], variables)
        expected = pytorch_sgd(weights, grads[: step + 1], LRS[: step + 1], 0.7, 1e-3, nesterov)
        # float32 weights of size ~2 carry rounding of ~2e-7 per step; float64 are exact to 1e-6 absolute.
        tolerance = {"rtol": 1e-6, "atol": 1e-6} if dtype == "float32" else {"rtol": 0, "atol": 1e-6}
        for variable, want in zip(variables, expected, strict=True):
            np.testing.assert_allclose(variable.numpy(), want, **tolerance, err_msg=f"step {step}")


def test_plain_sgd_without_momentum_keeps_no_buffer(rng):
    weights, grads = random_problem(rng, steps=5)
    optimizer = TorchSGD(0.0625, momentum=0.0, weight_decay=1e-2)
    got = run_keras(optimizer, weights, grads, dtype="float64")
    np.testing.assert_allclose(got[2], pytorch_sgd(weights, grads, [0.0625] * 5, 0.0, 1e-2)[2], atol=1e-9)
    assert len(optimizer.variables) == 2  # iteration + learning rate: no momentum buffers


def test_keras_sgd_is_a_different_algorithm_under_a_schedule(rng):
    """Why TorchSGD exists: on the same schedule, Keras' SGD ends far from PyTorch's."""
    weights, grads = random_problem(rng)
    expected = pytorch_sgd(weights, grads, LRS, 0.7, 1e-3)
    ours = run_keras(TorchSGD(CosineAnnealingWarmRestarts(**SCHEDULE), momentum=0.7, weight_decay=1e-3), weights, grads)
    theirs = run_keras(
        keras.optimizers.SGD(CosineAnnealingWarmRestarts(**SCHEDULE), momentum=0.7, weight_decay=1e-3), weights, grads
    )
    moved = max_abs_diff(expected, weights)
    assert max_abs_diff(ours, expected) < 2e-6
    # Measured: Keras' SGD is 0.82 away from PyTorch's after 20 steps (weights moved by 2.2).
    assert max_abs_diff(theirs, expected) > 0.2 * moved


def test_keras_sgd_agrees_only_at_a_constant_rate_without_decay(rng):
    """The reference is PyTorch's rule: where the two algorithms coincide, Keras' SGD matches it."""
    weights, grads = random_problem(rng)
    # 1/16 and 3/4: exact in float32 (Keras casts both through float32), so the float64 runs agree to 1e-9.
    keras_sgd = run_keras(keras.optimizers.SGD(0.0625, momentum=0.75), weights, grads, dtype="float64")
    np.testing.assert_allclose(keras_sgd[2], pytorch_sgd(weights, grads, [0.0625] * 20, 0.75, 0.0)[2], atol=1e-9)


def test_weight_decay_is_applied_once_inside_the_step():
    """Keras' base optimiser must not add its decoupled decay (w -= lr * wd * w) on top."""
    optimizer = TorchSGD(0.5, momentum=0.9, weight_decay=0.2)
    variable = keras.Variable(np.array([1.0, -2.0]), dtype="float64")
    step = tf.function(lambda: optimizer.apply([tf.zeros(2, "float64")], [variable]))
    step()
    np.testing.assert_allclose(variable.numpy(), [1.0 - 0.5 * 0.2, -2.0 + 0.5 * 0.4], atol=1e-12)  # 0.9, -1.8
    step()  # buffer = 0.9 * 0.2 * w0 + 0.2 * w1
    buffer = 0.9 * 0.2 * np.array([1.0, -2.0]) + 0.2 * np.array([0.9, -1.8])
    np.testing.assert_allclose(variable.numpy(), np.array([0.9, -1.8]) - 0.5 * buffer, atol=1e-12)
    assert optimizer.weight_decay == 0.2 and optimizer.get_config()["weight_decay"] == 0.2


def test_exclude_from_weight_decay_skips_those_variables():
    optimizer = TorchSGD(0.5, weight_decay=0.2)
    kernel = keras.Variable(np.ones(2), dtype="float64", name="kernel")
    bias = keras.Variable(np.ones(2), dtype="float64", name="bias")
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.apply([tf.zeros(2, "float64"), tf.zeros(2, "float64")], [kernel, bias])
    np.testing.assert_allclose(kernel.numpy(), [0.9, 0.9])
    np.testing.assert_allclose(bias.numpy(), [1.0, 1.0])


def tiny_model(rng, dtype=None):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh", name="hidden", dtype=dtype)(inputs)
    outputs = keras.layers.Dense(1, name="out", dtype="float32")(hidden)
    model = keras.Model(inputs, outputs)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])  # biases too
    return model


def numpy_mse_gradients(weights, x, y):
    """Gradients of mean((tanh(x W1 + b1) W2 + b2 - y)^2), by hand."""
    w1, b1, w2, b2 = weights
    h = np.tanh(x @ w1 + b1)
    dy = 2.0 * (h @ w2 + b2 - y) / len(x)
    dz = (dy @ w2.T) * (1.0 - h**2)
    return [x.T @ dz, dz.sum(0), h.T @ dy, dy.sum(0)]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_model_fit_matches_numpy(rng, jit_compile):
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    model = tiny_model(rng)
    start = [w.astype(np.float64) for w in model.get_weights()]
    # 2 batches per epoch, 3 epochs, T_0=2: epoch 0 at the base rate, epoch 1 at half, epoch 2 restarts.
    schedule = CosineAnnealingWarmRestarts(0.1, T_0=2, steps_per_epoch=2, T_mult=2)
    model.compile(optimizer=TorchSGD(schedule, momentum=0.7, weight_decay=1e-3), loss="mse", jit_compile=jit_compile)
    model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)

    weights, buffers = start, [None] * 4
    lrs = pytorch_warm_restart_lrs(0.1, T_0=2, T_mult=2, steps_per_epoch=2, steps=6)
    for step, lr in enumerate(lrs):
        batch = slice(4 * (step % 2), 4 * (step % 2) + 4)
        grads = numpy_mse_gradients(weights, x[batch].astype(np.float64), y[batch].astype(np.float64))
        for i, grad in enumerate(grads):
            g = grad + 1e-3 * weights[i]
            buffers[i] = g if buffers[i] is None else 0.7 * buffers[i] + g
            weights[i] = weights[i] - lr * buffers[i]
    assert lrs == [0.1, 0.1, 0.05, 0.05, 0.1, 0.1]
    for got, want in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert int(model.optimizer.iterations.numpy()) == 6


def test_loss_scale_optimizer_unscales_before_the_pytorch_rule(rng):
    weights, grads = random_problem(rng, steps=6)
    inner = TorchSGD(CosineAnnealingWarmRestarts(**SCHEDULE), momentum=0.7, weight_decay=1e-3)
    optimizer = keras.optimizers.LossScaleOptimizer(inner, initial_scale=1024.0)
    got = run_keras(optimizer, weights, [[1024.0 * g for g in step] for step in grads])
    expected = pytorch_sgd(weights, grads, LRS[:6], 0.7, 1e-3)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_mixed_precision_fit_keeps_float32_weights_and_state(rng):
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    model = tiny_model(rng, dtype="mixed_float16")
    before = model.get_weights()
    optimizer = keras.optimizers.LossScaleOptimizer(TorchSGD(0.05, momentum=0.7, weight_decay=1e-3))
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert all(v.dtype == "float32" for v in model.trainable_variables + optimizer.inner_optimizer.momentum_buffers)
    after = model.get_weights()
    assert all(np.all(np.isfinite(w)) for w in after)
    assert all(np.max(np.abs(a - b)) > 1e-4 for a, b in zip(after, before, strict=True))


def test_saved_model_restores_the_optimiser_and_continues_identically(rng, tmp_path):
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")

    def compiled():
        model = tiny_model(np.random.default_rng(1))
        schedule = CosineAnnealingWarmRestarts(0.1, T_0=1, steps_per_epoch=2, T_mult=2)
        model.compile(optimizer=TorchSGD(schedule, momentum=0.7, weight_decay=1e-3, nesterov=True), loss="mse")
        return model

    straight = compiled()
    straight.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
    resumed = compiled()
    resumed.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    resumed.save(tmp_path / "model.keras")
    resumed = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert isinstance(resumed.optimizer, TorchSGD) and resumed.optimizer.nesterov
    assert resumed.optimizer.get_config()["weight_decay"] == 1e-3
    resumed.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_config_round_trip():
    optimizer = TorchSGD(CosineAnnealingWarmRestarts(**SCHEDULE), momentum=0.6, weight_decay=1e-3, nesterov=True)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, TorchSGD)
    assert isinstance(restored._learning_rate, CosineAnnealingWarmRestarts)  # the schedule, not a frozen value
    config, restored_config = optimizer.get_config(), restored.get_config()
    assert restored_config == config
    assert (config["momentum"], config["weight_decay"], config["nesterov"]) == (0.6, 1e-3, True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"weight_decay": -1e-3}, "weight_decay"),
        ({"nesterov": True}, "Nesterov"),
        ({"nesterov": "yes", "momentum": 0.5}, "nesterov"),
    ],
)
def test_invalid_arguments_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TorchSGD(0.1, **kwargs)


# Groups: the method's ensemble trains its backbones and its fusion head at different rates.


def nested_model(rng):
    """A backbone (an inner functional model used as a layer) and a head, as in the fusion model."""
    inner_in = keras.Input((3,))
    inner_out = keras.layers.Dense(2, name="inner_b")(
        keras.layers.Dense(4, activation="tanh", name="inner_a")(inner_in)
    )
    backbone = keras.Model(inner_in, inner_out, name="backbone")
    inputs = keras.Input((3,))
    head = keras.layers.Dense(1, name="head")
    model = keras.Model(inputs, head(backbone(inputs)), name="outer")
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model, backbone, head


GROUP_RULES = {"backbones": {"lr": 0.05, "momentum": 0.8, "wd": 1e-2}, "head": {"lr": 0.3, "momentum": 0.3, "wd": 0.0}}


def grouped_optimizer(backbone, head):
    return optimizer_for_groups(
        {
            group: (TorchSGD(r["lr"], momentum=r["momentum"], weight_decay=r["wd"]), layers)
            for (group, r), layers in zip(GROUP_RULES.items(), [backbone, [head]], strict=True)
        }
    )


def test_nested_paths_carry_no_prefix_so_a_regex_map_routes_nothing(rng):
    """The trap the issue warns of, kept as a test: if Keras ever prefixes paths, revisit the design."""
    model, backbone, _ = nested_model(rng)
    assert not any(v.path.startswith("backbone") for v in backbone.trainable_variables)
    opt_map = keras.optimizers.OptimizerMap(default_optimizer=keras.optimizers.SGD(0.3))
    opt_map["backbone/.*"] = keras.optimizers.SGD(0.05)
    assert all(opt_map(v) is opt_map.default_optimizer for v in model.trainable_variables)


def test_each_group_moves_by_its_own_rule(rng):
    model, backbone, head = nested_model(rng)
    optimizer = grouped_optimizer(backbone, head)
    x = rng.normal(size=(4, 3)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    variables = model.trainable_variables
    group_of = {id(v): "backbones" for v in backbone.trainable_variables} | {
        id(v): "head" for v in head.trainable_variables
    }
    weights = {id(v): v.numpy().astype(np.float64) for v in variables}
    buffers = {}
    for step in range(3):  # from the second step on, the momentum of each group matters too
        with tf.GradientTape() as tape:
            loss = keras.ops.mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        for variable, grad in zip(variables, grads, strict=True):
            rule = GROUP_RULES[group_of[id(variable)]]
            g = grad.numpy() + rule["wd"] * weights[id(variable)]
            buffers[id(variable)] = g if step == 0 else rule["momentum"] * buffers[id(variable)] + g
            weights[id(variable)] = weights[id(variable)] - rule["lr"] * buffers[id(variable)]
            np.testing.assert_allclose(
                variable.numpy(), weights[id(variable)], rtol=1e-6, atol=1e-6, err_msg=variable.path
            )
    assert [optimizer.group_of(v) for v in variables] == [group_of[id(v)] for v in variables]
    groups = optimizer.groups
    assert [int(groups[g].iterations.numpy()) for g in ("backbones", "head")] == [3, 3]
    assert len(groups["backbones"].momentum_buffers) == 4 and len(groups["head"].momentum_buffers) == 2


def test_grouped_optimizer_in_model_fit_with_a_frozen_rate(rng):
    """In fit (graph mode, loss scaling): a group at learning rate 0 stays put, the other trains."""
    model, backbone, head = nested_model(rng)
    optimizer = optimizer_for_groups(
        {"backbones": (TorchSGD(0.0, momentum=0.8), backbone), "head": (TorchSGD(0.1, momentum=0.8), head)}
    )
    before = {v.path: v.numpy() for v in model.trainable_variables}
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(optimizer), loss="mse")
    model.fit(rng.normal(size=(8, 3)), rng.normal(size=(8, 1)), batch_size=4, epochs=1, verbose=0)
    for v in backbone.trainable_variables:
        np.testing.assert_array_equal(v.numpy(), before[v.path])
    for v in head.trainable_variables:
        assert np.max(np.abs(v.numpy() - before[v.path])) > 1e-3


def test_grouped_optimizer_survives_save_and_load(rng, tmp_path):
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")

    def compiled():
        model, backbone, head = nested_model(np.random.default_rng(2))
        model.compile(optimizer=grouped_optimizer(backbone, head), loss="mse")
        return model

    straight = compiled()
    straight.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    resumed = compiled()
    resumed.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    resumed.save(tmp_path / "model.keras")
    resumed = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert isinstance(resumed.optimizer, GroupedOptimizer)
    assert [resumed.optimizer.group_of(v) for v in resumed.trainable_variables] == ["backbones"] * 4 + ["head"] * 2
    resumed.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_variable_in_no_group_fails_the_build(rng):
    model, backbone, _ = nested_model(rng)
    optimizer = optimizer_for_groups({"backbones": (TorchSGD(0.1), backbone)})
    with pytest.raises(ValueError, match=r"belong to no optimiser group.*head/kernel"):
        optimizer.build(model.trainable_variables)


def test_a_variable_in_two_groups_is_refused(rng):
    _, backbone, head = nested_model(rng)
    with pytest.raises(ValueError, match=r"inner_a/kernel.*in two groups"):
        optimizer_for_groups(
            {"backbones": (TorchSGD(0.1), backbone), "head": (TorchSGD(0.2), [head, backbone.get_layer("inner_a")])}
        )


def test_misconfigured_groups_say_what_is_wrong(rng):
    _, backbone, head = nested_model(rng)
    shared = TorchSGD(0.1)
    with pytest.raises(ValueError, match="share one optimiser"):
        optimizer_for_groups({"a": (shared, backbone), "b": (shared, head)})
    backbone.trainable = False
    with pytest.raises(ValueError, match="no trainable variables"):
        optimizer_for_groups({"a": (TorchSGD(0.1), backbone), "b": (TorchSGD(0.1), head)})
    with pytest.raises(ValueError, match="LossScaleOptimizer"):
        optimizer_for_groups({"a": (keras.optimizers.LossScaleOptimizer(TorchSGD(0.1)), head)})
    with pytest.raises(ValueError, match="not a Keras layer"):
        optimizer_for_groups({"a": (TorchSGD(0.1), ["head"])})


def test_reloaded_groups_route_repeated_paths_by_position(tmp_path):
    """Two backbones with same-named layers (paths repeat) in different groups keep their groups after reload."""

    def member(name):
        inputs = keras.Input((3,))
        return keras.Model(inputs, keras.layers.Dense(2, name="proj")(inputs), name=name)

    first, second = member("first"), member("second")
    inputs = keras.Input((3,))
    head = keras.layers.Dense(1, name="head")
    model = keras.Model(inputs, head(keras.layers.Concatenate()([first(inputs), second(inputs)])))
    assert [v.path for v in first.trainable_variables] == [v.path for v in second.trainable_variables]
    # Groups listed in another order than the model's variables: routing is by identity, not by order.
    model.compile(
        optimizer=optimizer_for_groups(
            {"second": (TorchSGD(0.2), second), "head": (TorchSGD(0.3), head), "first": (TorchSGD(0.1), first)}
        ),
        loss="mse",
    )
    model.fit(np.ones((4, 3)), np.ones((4, 1)), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    expected = ["first"] * 2 + ["second"] * 2 + ["head"] * 2
    assert [reloaded.optimizer.group_of(v) for v in reloaded.trainable_variables] == expected
    # Without the recorded order, a repeated path cannot be routed: say so rather than guess.
    config = reloaded.optimizer.get_config()
    config["routing"] = config["routing"][::-1]
    with pytest.raises(ValueError, match="several groups"):
        GroupedOptimizer.from_config(config).build(reloaded.trainable_variables)


MIRRORED_SCRIPT = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from tf_fracture.train import CosineAnnealingWarmRestarts, TorchSGD, optimizer_for_groups
rng = np.random.default_rng(0)
x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
def build():
    inner_in = keras.Input((3,))
    backbone = keras.Model(inner_in, keras.layers.Dense(4, activation="tanh")(inner_in))
    inputs, head = keras.Input((3,)), keras.layers.Dense(1)
    model = keras.Model(inputs, head(backbone(inputs)))
    model.set_weights([np.random.default_rng(1).normal(size=w.shape).astype("float32") for w in model.get_weights()])
    s = lambda lr: CosineAnnealingWarmRestarts(lr, T_0=1, steps_per_epoch=2)
    model.compile(optimizer=optimizer_for_groups({
        "b": (TorchSGD(s(0.05), momentum=0.8, weight_decay=1e-3), backbone), "h": (TorchSGD(s(0.2), momentum=0.5), head)
    }), loss="mse")
    return model
single = build()
single.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    mirrored = build()
mirrored.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), mirrored.get_weights()))
print(strategy.num_replicas_in_sync, diff)
"""


@pytest.mark.large
def test_mirrored_over_two_cpu_devices_matches_one_device():
    """TorchSGD in groups under tf.distribute.MirroredStrategy (two logical CPUs) trains as on one device."""
    out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-3000:]
    replicas, diff = out.stdout.split()[-2:]
    assert int(replicas) == 2 and float(diff) < 1e-6
