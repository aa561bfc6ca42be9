"""CBAM against an independent NumPy implementation of Woo et al.'s formula, and its freezing.

Config round trip, .keras reload, fit step and mixed precision: tests/test_layers.py (the harness).
"""

import harness
import keras
import numpy as np
import pytest

from tf_fracture.layers import CBAM, ChannelGate, SpatialGate


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def conv2d_same(x, kernel):
    """Stride-1 'same' convolution (cross-correlation) in NumPy: x (B,H,W,Ci), kernel (k,k,Ci,Co)."""
    k = kernel.shape[0]
    pad = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (pad, k - 1 - pad), (pad, k - 1 - pad), (0, 0)))
    b, h, w, _ = x.shape
    out = np.zeros((b, h, w, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            out += np.einsum("bhwc,co->bhwo", xp[:, i : i + h, j : j + w, :], kernel[i, j])
    return out


def numpy_cbam(x, w1, b1, w2, b2, conv_kernel, bn, training=False, eps=1e-5):
    """CBAM as written in the paper / reference code, in float64."""
    x = x.astype(np.float64)

    def mlp(v):
        return np.maximum(v @ w1 + b1, 0.0) @ w2 + b2

    channel = sigmoid(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))
    x = x * channel[:, None, None, :]
    pooled = np.concatenate([x.max(axis=-1, keepdims=True), x.mean(axis=-1, keepdims=True)], axis=-1)
    z = conv2d_same(pooled, conv_kernel)
    gamma, beta, mean, var = bn
    if training:
        mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
    z = (z - mean) / np.sqrt(var + eps) * gamma + beta
    return x * sigmoid(z)


def hand_set_weights(channels, reduction, kernel_size, seed=0):
    r = np.random.default_rng(seed)
    hidden = max(1, channels // reduction)
    w1 = r.normal(0, 0.5, (channels, hidden))
    b1 = r.normal(0, 0.1, hidden)
    w2 = r.normal(0, 0.5, (hidden, channels))
    b2 = r.normal(0, 0.1, channels)
    kernel = r.normal(0, 0.3, (kernel_size, kernel_size, 2, 1))
    bn = (np.array([1.3]), np.array([-0.2]), np.array([0.4]), np.array([2.5]))
    return w1, b1, w2, b2, kernel, bn


def set_cbam_weights(layer, w1, b1, w2, b2, kernel, bn):
    layer.channel_gate.mlp_hidden.set_weights([w1, b1])
    layer.channel_gate.mlp_out.set_weights([w2, b2])
    layer.spatial_gate.conv.set_weights([kernel])
    layer.spatial_gate.bn.set_weights(list(bn))


@pytest.mark.parametrize("shape", [(2, 9, 11, 32), (1, 4, 4, 64), (3, 16, 8, 48)])
def test_cbam_matches_numpy_reference(rng, shape):
    x = rng.normal(0, 1, shape).astype("float32")
    layer = CBAM(reduction=16, kernel_size=7)
    layer.build(shape)
    weights = hand_set_weights(shape[-1], 16, 7)
    set_cbam_weights(layer, *weights)
    np.testing.assert_allclose(np.asarray(layer(x)), numpy_cbam(x, *weights), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(layer(x, training=True)), numpy_cbam(x, *weights, training=True), rtol=1e-4, atol=1e-5
    )


def test_spatial_gate_pools_max_first(rng):
    # A kernel that only sees input channel 0 turns the gate into sigmoid(max over channels).
    x = rng.normal(0, 1, (2, 6, 6, 8)).astype("float32")
    gate = SpatialGate(kernel_size=3)
    gate.build(x.shape)
    kernel = np.zeros((3, 3, 2, 1))
    kernel[1, 1, 0, 0] = 1.0
    gate.conv.set_weights([kernel])
    gate.bn.set_weights([np.ones(1), np.zeros(1), np.zeros(1), np.ones(1) - 1e-5])
    expected = x * sigmoid(x.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(gate(x)), expected, rtol=1e-5, atol=1e-6)
    mean_first = x * sigmoid(x.mean(axis=-1, keepdims=True))
    assert not np.allclose(np.asarray(gate(x)), mean_first, atol=1e-3)


def test_channel_gate_shares_one_mlp_with_bias(rng):
    gate = ChannelGate(reduction=4)
    gate.build((None, 5, 5, 16))
    assert [tuple(w.shape) for w in gate.weights] == [(16, 4), (4,), (4, 16), (16,)]
    x = rng.normal(0, 1, (2, 5, 5, 16)).astype("float32")
    w1, b1, w2, b2, *_ = hand_set_weights(16, 4, 7)
    gate.mlp_hidden.set_weights([w1, b1])
    gate.mlp_out.set_weights([w2, b2])

    def mlp(v):
        return np.maximum(v @ w1 + b1, 0) @ w2 + b2

    expected = x * sigmoid(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))[:, None, None, :]
    np.testing.assert_allclose(np.asarray(gate(x)), expected, rtol=1e-5, atol=1e-6)


def test_hidden_width_is_at_least_one():
    gate = ChannelGate(reduction=16)
    gate.build((None, 4, 4, 8))
    assert gate.mlp_hidden.units == 1


def test_cbam_any_spatial_size_and_batch_in_a_model(rng):
    inputs = keras.Input((None, None, 24))
    model = keras.Model(inputs, CBAM(reduction=8)(inputs))
    for shape in [(1, 3, 5, 24), (4, 17, 9, 24)]:
        assert model(rng.normal(size=shape).astype("float32")).shape == shape


@pytest.mark.parametrize(
    "kwargs, message",
    [({"reduction": 0}, "reduction"), ({"kernel_size": 2.5}, "kernel_size"), ({"reduction": True}, "reduction")],
)
def test_cbam_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CBAM(**kwargs)


def test_cbam_rejects_non_image_input():
    with pytest.raises(ValueError, match="4-D channels-last"):
        CBAM()(keras.Input((10, 16)))


# --- item 8: `trainable=False` must reach every sub-layer and variable ---------------------------


def _sublayers(layer):
    """Every layer below ``layer`` (Keras' own recursive walk, excluding ``layer`` itself)."""
    return [sub for sub in layer._flatten_layers(include_self=False, recursive=True)]


def assert_fully_frozen(layer):
    assert layer.trainable is False
    subs = _sublayers(layer)
    assert {s.name for s in subs} >= {"channel_gate", "spatial_gate", "mlp_hidden", "mlp_out", "conv", "bn"}
    assert [s.name for s in subs if s.trainable] == []
    assert [v.path for v in layer.weights if v.trainable] == []


@pytest.mark.parametrize("when", ["constructor", "from_config", "set_before_build", "set_after_build"])
def test_frozen_cbam_freezes_every_sub_layer_and_variable(when):
    if when == "constructor":
        layer = CBAM(reduction=4, trainable=False)
    elif when == "from_config":
        layer = CBAM.from_config(CBAM(reduction=4, trainable=False).get_config())
    elif when == "set_before_build":
        layer = CBAM(reduction=4)
        layer.trainable = False
    else:
        layer = CBAM(reduction=4)
        layer.build((None, 5, 5, 16))
        layer.trainable = False
    if not layer.built:
        layer.build((None, 5, 5, 16))
    assert_fully_frozen(layer)
    layer.trainable = True  # and thawing reaches them all again
    assert all(s.trainable for s in _sublayers(layer))
    assert len(layer.trainable_weights) == 7  # 2 Dense kernels and biases, the conv kernel, BN gamma and beta


def _model_with_frozen_cbam():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv_in")(inputs)
    x = CBAM(reduction=4, kernel_size=3, trainable=False, name="frozen_cbam")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(x))


def test_frozen_cbam_stays_frozen_after_keras_reload_and_one_fit_step(tmp_path, rng):
    model = _model_with_frozen_cbam()
    harness.randomise_weights(model)  # non-trivial BN statistics, so drift would show
    loaded = harness.run_model_saving_test(model, rng.normal(0, 1, (2, 8, 8, 3)).astype("float32"), tmp_path)

    cbam = loaded.get_layer("frozen_cbam")
    assert_fully_frozen(cbam)
    # conv_in (kernel, bias) + head (kernel, bias): nothing of the CBAM.
    assert len(loaded.trainable_weights) == 4

    before = harness.weight_values(cbam)
    x = rng.normal(0, 1, (4, 8, 8, 3)).astype("float32")
    changed = harness.run_fit_step_test(loaded, x, rng.normal(0, 1, (4, 1)).astype("float32"), learning_rate=0.5)
    # Neither its weights nor the spatial gate's BN moving statistics moved; the rest all did.
    assert sorted(changed & set(before)) == []
    assert changed == {v.path for v in loaded.trainable_weights}
