"""Helpers for the model tests: weights moved off their initial values, and a layer's graph neighbours."""

import numpy as np


def randomise_weights(model, seed=0):
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
