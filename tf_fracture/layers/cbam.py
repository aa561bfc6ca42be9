"""CBAM: Convolutional Block Attention Module (channel gate, then spatial gate).

Reference:
    Woo, Park, Lee, Kweon. "CBAM: Convolutional Block Attention Module", ECCV 2018.
    The layout follows the authors' reference code (Jongchan/attention-module,
    ``MODELS/cbam.py``): the channel gate shares one MLP between the average- and
    max-pooled descriptors; the spatial gate pools over channels as
    ``concat([max, mean])`` and runs a bias-free 7x7 conv with BatchNorm.
"""

from __future__ import annotations

import keras
from keras import ops

from tf_fracture.validation import check_int, check_number

_PACKAGE = "tf_fracture"


def _sublayer_kwargs(layer: keras.layers.Layer) -> dict:
    """What every sub-layer of ``layer`` inherits from it: its dtype policy and its ``trainable`` flag.

    Keras' ``trainable`` setter reaches the sub-layers that exist when it runs, but the
    constructor's ``trainable=False`` (which is how ``from_config`` and ``load_model`` freeze
    a layer) only sets the layer's own flag: a sub-layer made with the default
    ``trainable=True`` would keep trainable variables and, for BatchNorm, keep updating its
    moving statistics in ``fit``.
    """
    return {"dtype": layer.dtype_policy, "trainable": layer.trainable}


def _check_rank4(layer: keras.layers.Layer, input_shape) -> int:
    if len(input_shape) != 4:
        raise ValueError(
            f"{layer.__class__.__name__} expects a 4-D channels-last feature map "
            f"(batch, height, width, channels), but got shape {tuple(input_shape)}."
        )
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(
            f"{layer.__class__.__name__} needs a known channel count, but the input shape is {tuple(input_shape)}."
        )
    return int(channels)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelGate(keras.layers.Layer):
    """CBAM channel attention: ``x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``.

    The MLP is ``Dense(C // reduction) -> ReLU -> Dense(C)``, both with bias, and
    is shared by the two pooled descriptors.

    Args:
        reduction: ratio between the channel count and the MLP's hidden width
            (16 in the paper). The hidden width is at least 1.

    Example:
        >>> y = ChannelGate(reduction=16)(keras.ops.ones((2, 8, 8, 64)))
    """

    def __init__(self, reduction: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.reduction = check_int("reduction", reduction, minimum=1)

    def build(self, input_shape):
        channels = _check_rank4(self, input_shape)
        hidden = max(1, channels // self.reduction)
        self.mlp_hidden = keras.layers.Dense(hidden, activation="relu", name="mlp_hidden", **_sublayer_kwargs(self))
        self.mlp_out = keras.layers.Dense(channels, name="mlp_out", **_sublayer_kwargs(self))
        self.mlp_hidden.build((None, channels))
        self.mlp_out.build((None, hidden))

    def attention(self, x):
        """The per-channel gate in (0, 1), shape ``(batch, 1, 1, channels)``."""
        avg = ops.mean(x, axis=(1, 2))
        mx = ops.max(x, axis=(1, 2))
        logits = self.mlp_out(self.mlp_hidden(avg)) + self.mlp_out(self.mlp_hidden(mx))
        return ops.sigmoid(logits)[:, None, None, :]

    def call(self, x):
        return x * self.attention(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SpatialGate(keras.layers.Layer):
    """CBAM spatial attention.

    ``x * sigmoid(BN(conv_kxk(concat([max_c(x), mean_c(x)]))))``, the conv having one
    output channel, stride 1, same padding and no bias.

    Args:
        kernel_size: size of the square conv kernel (7 in the paper).
        epsilon: BatchNorm epsilon (1e-5, PyTorch's default in the reference).
        momentum: BatchNorm moving-average momentum (0.99 = PyTorch's 0.01).

    Example:
        >>> y = SpatialGate(kernel_size=7)(keras.ops.ones((2, 8, 8, 64)))
    """

    def __init__(self, kernel_size: int = 7, epsilon: float = 1e-5, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        self.epsilon = check_number("epsilon", epsilon, 0.0, low_inclusive=False)
        self.momentum = check_number("momentum", momentum, 0.0, 1.0)

    def build(self, input_shape):
        _check_rank4(self, input_shape)
        self.conv = keras.layers.Conv2D(
            1,
            self.kernel_size,
            strides=1,
            padding="same",
            use_bias=False,
            name="conv",
            **_sublayer_kwargs(self),
        )
        self.bn = keras.layers.BatchNormalization(
            epsilon=self.epsilon, momentum=self.momentum, name="bn", **_sublayer_kwargs(self)
        )
        self.conv.build((None, None, None, 2))
        self.bn.build((None, None, None, 1))

    def attention(self, x, training=None):
        """The per-position gate in (0, 1), shape ``(batch, height, width, 1)``."""
        pooled = ops.concatenate([ops.max(x, axis=-1, keepdims=True), ops.mean(x, axis=-1, keepdims=True)], axis=-1)
        return ops.sigmoid(self.bn(self.conv(pooled), training=training))

    def call(self, x, training=None):
        return x * self.attention(x, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "epsilon": self.epsilon,
            "momentum": self.momentum,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CBAM(keras.layers.Layer):
    """Convolutional Block Attention Module: a channel gate followed by a spatial gate.

    Works on any spatial size and batch size; the output has the input's shape.

    Args:
        reduction: channel-MLP reduction ratio (16 in the paper).
        kernel_size: spatial-gate conv size (7 in the paper).

    Example:
        >>> x = keras.Input((None, None, 96))
        >>> y = CBAM(name="stage_0_cbam")(x)

    Reference:
        Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018.
    """

    def __init__(self, reduction: int = 16, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.reduction = check_int("reduction", reduction, minimum=1)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        self.channel_gate = ChannelGate(reduction, name="channel_gate", **_sublayer_kwargs(self))
        self.spatial_gate = SpatialGate(kernel_size, name="spatial_gate", **_sublayer_kwargs(self))

    def build(self, input_shape):
        _check_rank4(self, input_shape)
        self.channel_gate.build(input_shape)
        self.spatial_gate.build(input_shape)

    def call(self, x, training=None):
        return self.spatial_gate(self.channel_gate(x), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SpatialGateLogits(keras.layers.Layer):
    """The logits ``(B, h, w, 1)`` of the spatial gate a CBAM block applied, read from its input and output.

    A `SpatialGate` returns ``y = x * gate`` with one gate per position, so at every position where the
    channel-gated input ``x`` is not all zero, ``gate = <y, x> / <x, x>`` exactly. Reading the gate this
    way, instead of running the gate again, gives the one the forward pass applied (BatchNorm's batch
    statistics in training included) without a second update of BatchNorm's moving statistics.
    Returns ``log(gate / (1 - gate))``, the gate clipped to ``[1e-6, 1 - 1e-6]``; float32. No weights.

    Example:
        >>> logits = SpatialGateLogits()([channel_gated, cbam_output])
    """

    def call(self, inputs):
        x, y = (ops.cast(t, "float32") for t in inputs)
        gate = ops.sum(x * y, axis=-1, keepdims=True) / (ops.sum(x * x, axis=-1, keepdims=True) + 1e-12)
        gate = ops.clip(gate, 1e-6, 1.0 - 1e-6)
        return ops.log(gate) - ops.log1p(-gate)

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], 1)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((*inputs[0].shape[:-1], 1), dtype="float32")
