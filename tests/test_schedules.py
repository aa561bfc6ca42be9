"""CosineAnnealingWarmRestarts against PyTorch's definition, hand-computed values and Keras' SGDR."""

import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_fracture.train.schedules import CosineAnnealingWarmRestarts


def pytorch_epoch_lrs(base_lr, T_0, T_mult, eta_min, epochs):
    """The learning rate of each epoch under PyTorch's per-epoch `scheduler.step()` (its recursive form)."""
    lrs, t_cur, t_i = [], 0, T_0
    for _ in range(epochs):
        lrs.append(eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2)
        t_cur += 1
        if t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * T_mult
    return np.array(lrs)


def pytorch_closed_form_lr(base_lr, T_0, T_mult, eta_min, epoch):
    """PyTorch's `scheduler.step(epoch)` with a fractional epoch (its closed form), transcribed."""
    if epoch >= T_0:
        if T_mult == 1:
            t_cur, t_i = epoch % T_0, T_0
        else:
            n = int(math.log(epoch / T_0 * (T_mult - 1) + 1, T_mult))
            t_cur, t_i = epoch - T_0 * (T_mult**n - 1) / (T_mult - 1), T_0 * T_mult**n
    else:
        t_cur, t_i = epoch, T_0
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


def schedule_values(schedule, steps):
    """The schedule at many steps at once (both schedules are elementwise in the step)."""
    return keras.ops.convert_to_numpy(schedule(np.asarray(list(steps), dtype="int64")))


def test_hand_computed_restarts_of_the_pretrain_preset():
    # T_0=5, T_mult=2: cycles of 5, 10, 20 epochs; back to the base rate at epochs 5, 15, 35.
    base, spe = 1.2e-3, 7
    schedule = CosineAnnealingWarmRestarts(base, T_0=5, steps_per_epoch=spe, T_mult=2)
    epochs = [0, 1, 4, 5, 10, 14, 15, 25, 34, 35]
    expected = [
        base,
        base * (1 + math.cos(math.pi / 5)) / 2,
        base * (1 + math.cos(math.pi * 4 / 5)) / 2,
        base,  # restart 1
        base / 2,  # half way through the 10-epoch cycle
        base * (1 + math.cos(math.pi * 9 / 10)) / 2,
        base,  # restart 2
        base / 2,  # half way through the 20-epoch cycle
        base * (1 + math.cos(math.pi * 19 / 20)) / 2,
        base,  # restart 3
    ]
    np.testing.assert_allclose(schedule_values(schedule, [e * spe for e in epochs]), expected, rtol=1e-6)


@pytest.mark.parametrize(("T_0", "T_mult", "eta_min"), [(5, 2, 0.0), (4, 2, 1e-5), (3, 3, 0.0), (2, 1, 1e-4)])
def test_per_epoch_matches_pytorch_step_by_step(T_0, T_mult, eta_min):
    base, spe, epochs = 8e-4, 3, 80
    schedule = CosineAnnealingWarmRestarts(base, T_0=T_0, steps_per_epoch=spe, T_mult=T_mult, eta_min=eta_min)
    expected = np.repeat(pytorch_epoch_lrs(base, T_0, T_mult, eta_min, epochs), spe)  # constant within an epoch
    np.testing.assert_allclose(schedule_values(schedule, range(epochs * spe)), expected, rtol=1e-6, atol=1e-12)


def test_per_batch_matches_pytorch_fractional_epochs():
    base, spe, T_0, T_mult = 1e-3, 4, 2, 2
    schedule = CosineAnnealingWarmRestarts(base, T_0=T_0, steps_per_epoch=spe, T_mult=T_mult, per_batch=True)
    steps = range(30 * spe)
    expected = [pytorch_closed_form_lr(base, T_0, T_mult, 0.0, s / spe) for s in steps]
    np.testing.assert_allclose(schedule_values(schedule, steps), expected, rtol=1e-6, atol=1e-12)
    # Per batch, the rate moves within an epoch; per epoch it does not.
    assert schedule_values(schedule, [1])[0] < base


@pytest.mark.parametrize(("T_0", "T_mult", "eta_min"), [(5, 2, 0.0), (4, 2, 2e-5), (3, 1, 0.0)])
def test_agrees_with_keras_cosine_decay_restarts_where_the_formulas_agree(T_0, T_mult, eta_min):
    base, spe, steps = 1.2e-3, 5, range(0, 40 * 5)
    keras_sgdr = keras.optimizers.schedules.CosineDecayRestarts(
        base, first_decay_steps=T_0 * spe, t_mul=float(T_mult), m_mul=1.0, alpha=eta_min / base
    )
    ours = CosineAnnealingWarmRestarts(
        base, T_0=T_0, steps_per_epoch=spe, T_mult=T_mult, eta_min=eta_min, per_batch=True
    )
    # Keras computes in float32, hence rtol=1e-4.
    keras_values = schedule_values(keras_sgdr, steps)
    np.testing.assert_allclose(schedule_values(ours, steps), keras_values, rtol=1e-4, atol=1e-9)
    # Per epoch, ours is Keras' SGDR in epochs evaluated at the epoch's first step.
    keras_epochs = keras.optimizers.schedules.CosineDecayRestarts(
        base, first_decay_steps=T_0, t_mul=float(T_mult), alpha=eta_min / base
    )
    per_epoch = CosineAnnealingWarmRestarts(base, T_0=T_0, steps_per_epoch=spe, T_mult=T_mult, eta_min=eta_min)
    np.testing.assert_allclose(
        schedule_values(per_epoch, steps),
        schedule_values(keras_epochs, [s // spe for s in steps]),
        rtol=1e-4,
        atol=1e-9,
    )


def test_graph_and_xla_give_the_eager_values():
    schedule = CosineAnnealingWarmRestarts(1e-3, T_0=5, steps_per_epoch=10, T_mult=2)
    steps = tf.constant(np.arange(0, 400, 7), dtype="int64")
    eager = np.array([float(schedule(int(s))) for s in steps.numpy()])  # one Python int at a time, as in eager use
    compiled = tf.function(lambda s: tf.map_fn(schedule, s, fn_output_signature=tf.float32), jit_compile=True)
    np.testing.assert_allclose(compiled(steps).numpy(), eager, rtol=1e-6)


def test_config_round_trip_and_serialisation():
    schedule = CosineAnnealingWarmRestarts(2e-4, T_0=4, steps_per_epoch=9, T_mult=3, eta_min=1e-6, per_batch=True)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, CosineAnnealingWarmRestarts)
    assert restored.get_config() == schedule.get_config()
    np.testing.assert_array_equal(schedule_values(restored, range(200)), schedule_values(schedule, range(200)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"T_0": 0}, "T_0"),
        ({"T_0": 2.5}, "T_0"),
        ({"T_mult": 0}, "T_mult"),
        ({"T_mult": 1.5}, "T_mult"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"eta_min": -1e-3}, "eta_min"),
        ({"per_batch": "yes"}, "per_batch"),
    ],
)
def test_invalid_arguments_say_what_is_wrong(kwargs, message):
    args = {"initial_learning_rate": 1e-3, "T_0": 5, "steps_per_epoch": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        CosineAnnealingWarmRestarts(**args)


def test_the_train_package_imports_without_tensorflow():
    """`import tf_fracture.train` stays light (the CLI's --help); its names load on first use."""
    code = (
        "import sys, tf_fracture.train as t; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules;"
        "assert t.CosineAnnealingWarmRestarts.__name__ == 'CosineAnnealingWarmRestarts'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
