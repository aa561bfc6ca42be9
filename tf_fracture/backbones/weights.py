"""Loading Keras' published networks and moving their weights into our rebuilds."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Mapping

import keras
import numpy as np


class WeightsUnavailableError(RuntimeError):
    """Keras' published ImageNet weights could not be fetched or read."""


def load_keras_application(constructor: Callable[..., keras.Model], weights: str | None, **kwargs) -> keras.Model:
    """Builds a ``keras.applications`` network without its classifier top, on RGB input of any size.

    A failed download becomes a `WeightsUnavailableError` that says how to proceed offline.
    """
    try:
        with warnings.catch_warnings():
            # MobileNetV3 warns that its weights were trained at 224 px; any size is intended here.
            warnings.filterwarnings("ignore", message=".*Weights for input shape", category=UserWarning)
            return constructor(include_top=False, weights=weights, input_shape=(None, None, 3), **kwargs)
    except Exception as error:  # Keras' get_file raises a bare Exception on network errors.
        if weights == "imagenet" and ("URL fetch failure" in str(error) or isinstance(error, OSError)):
            raise WeightsUnavailableError(
                f"Could not load Keras' ImageNet weights for {constructor.__name__} ({error}). "
                "This machine cannot download them: copy the weight file named above into "
                "$KERAS_HOME/models/ (default ~/.keras/models/) from a machine that can, "
                "or build the model with weights=None for a random initialisation."
            ) from error
        raise


def grey_kernel(kernel: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """Sums an RGB conv kernel ``(kh, kw, 3, out)`` over its input channels to ``(kh, kw, 1, out)``.

    With ``scale`` (one factor per input channel) each channel is scaled first, which folds
    a per-channel input normalisation ``x / std`` into the kernel.
    """
    if kernel.ndim != 4 or kernel.shape[2] != 3:
        raise ValueError(f"Expected an RGB conv kernel of shape (kh, kw, 3, out), but got {kernel.shape}.")
    if scale is not None:
        kernel = kernel * np.asarray(scale, kernel.dtype)[None, None, :, None]
    return kernel.sum(axis=2, keepdims=True)


def fold_normalisation(kernel: np.ndarray, bias: np.ndarray, mean, std, grey: bool) -> tuple[np.ndarray, np.ndarray]:
    """Folds ``(x - mean) / std`` (per RGB channel) into the *unpadded* conv that follows it.

    ``conv((x - m) / s) = conv_{W / s}(x) - sum(W * m / s)``; exact only when the conv has no
    zero padding (padding would be applied to the normalised image, not the raw one).
    """
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    scaled = kernel.astype(np.float64) / std[None, None, :, None]
    new_bias = bias.astype(np.float64) - np.einsum("hwco,c->o", scaled, mean)
    new_kernel = scaled.sum(axis=2, keepdims=True) if grey else scaled
    return new_kernel.astype(kernel.dtype), new_bias.astype(bias.dtype)


def transfer_weights(
    source: keras.Model,
    target: keras.Model,
    transforms: Mapping[str, Callable[[list[np.ndarray]], list[np.ndarray]]] | None = None,
    skip: Collection[str] = (),
    rename: Mapping[str, str] | None = None,
    unused_source: Collection[str] = (),
) -> list[str]:
    """Copies weights layer by layer, matched by name, from ``source`` into ``target``.

    ``rename[target_name]`` gives the source layer's name where the two differ, and
    ``transforms[target_name]`` maps the source layer's weights to the target's. Every
    target layer with weights must have a source unless it is named in ``skip``, and every
    source layer with weights must be used unless it is named in ``unused_source`` (so a
    weighted layer added to Keras' network is an error, not silently dropped); shapes must
    match. Nothing is assigned unless everything matches. Returns the target layers filled.
    """
    transforms = dict(transforms or {})
    rename = dict(rename or {})
    by_name = {layer.name: layer for layer in _flat_layers(source)}
    assignments, used = [], set()
    for layer in _flat_layers(target):
        if not layer.weights or layer.name in skip:
            continue
        source_name = rename.pop(layer.name, layer.name)
        if source_name not in by_name:
            raise ValueError(f"Cannot transfer weights: layer {layer.name!r} of {target.name!r} has no source.")
        used.add(source_name)
        values = [np.asarray(w) for w in by_name[source_name].get_weights()]
        if layer.name in transforms:
            values = transforms.pop(layer.name)(values)
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(
                f"Cannot transfer weights of layer {layer.name!r}: source shapes "
                f"{[v.shape for v in values]} differ from target shapes {expected}."
            )
        assignments.append((layer, values))
    if transforms or rename:
        unused = sorted(set(transforms) | set(rename))
        raise ValueError(f"Weight transfer named target layers that were not transferred: {unused}.")
    left = [name for name, layer in by_name.items() if layer.weights and name not in used | set(unused_source)]
    if left:
        raise ValueError(
            f"Cannot transfer weights: layers {left} of {source.name!r} have weights that no layer of "
            f"{target.name!r} takes, so they would be dropped. Keras' network has changed: map them to a "
            "layer of the rebuild (or name them in `unused_source` if dropping them is intended)."
        )
    for layer, values in assignments:
        layer.set_weights(values)
    return [layer.name for layer, _ in assignments]


def _flat_layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)
        else:
            yield layer
