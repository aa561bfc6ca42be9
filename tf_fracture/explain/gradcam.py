"""Grad-CAM heatmaps from the feature map each backbone exposes, the fusion's members included.

Grad-CAM (Selvaraju et al., 2017): for a feature map ``A`` (``h x w x K``) and the model's fracture
logit ``y``, each channel's weight is the spatial mean of ``dy/dA_k``; the map is
``ReLU(sum_k w_k A_k)``, upsampled bilinearly to the input and scaled to [0, 1] per image.

Gradients need the feature map and the logit from ONE call of ONE graph. Two traps break that
silently: a nested model's tensors (``fusion.members[0].feature_map``) belong to the member's own
graph, not to the fusion's input; and calling a member again on the image makes a new node whose
feature map the fusion's logit does not depend on (the gradient is None). `cam_model` therefore
builds a new graph: image -> each member's (feature map, features) -> the fusion's own head
layers (the same weights) -> logit, so every feature map it returns is the one the logit was
computed from. Its logit equals the fusion's (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from tf_fracture.backbones import FEATURE_MAP, Backbone
from tf_fracture.models import FusionModel, InferenceMode, feature_map_model

FUSED_FEATURES = "fused_features"


@dataclass(frozen=True)
class CamModel:
    """image -> ``[logit, feature_map_1, ...]`` in one graph, and the name of each feature map.

    Attributes:
        model: a Keras model whose outputs are the logit then one feature map per name.
        names: the backbone each feature map belongs to (a classifier's backbone, or each
            fusion member), in output order.
    """

    model: keras.Model
    names: tuple[str, ...]


@dataclass(frozen=True)
class GradCamResult:
    """Grad-CAM of a batch.

    Attributes:
        heatmaps: ``{name: (B, H, W) float32 in [0, 1]}`` at the input's size, one per feature map.
        logits: ``(B,)`` float32, the model's fracture logits for the same images.
    """

    heatmaps: dict[str, np.ndarray]
    logits: np.ndarray

    @property
    def probabilities(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits.astype(np.float64)))


def cam_model(model: keras.Model) -> CamModel:
    """The graph Grad-CAM differentiates: image -> ``[logit, feature map per backbone]``.

    Args:
        model: a `FusionModel` (one feature map per member), or a classifier with a layer named
            ``"feature_map"`` and one logit output, e.g. a `FractureClassifier` (a multi-task
            model's fracture logit: its ``classifier``).

    Example:
        >>> cam = cam_model(fusion)
        >>> cam.names  # the members' names
        ('convnext_tiny', 'efficientnetv2_s', 'mobilenetv3_small')
    """
    from tf_fracture.models.multitask import MultiTaskClassifier

    if isinstance(model, MultiTaskClassifier):  # its fracture logit is its classifier's
        model = model.classifier
    if isinstance(model, FusionModel):
        return _fusion_cam_model(model)
    if isinstance(model, Backbone):
        raise ValueError(
            f"{model.name!r} is a bare Backbone: it has features but no fracture logit to explain. "
            "Explain a classifier (tf_fracture.models.build_classifier) or a fusion model."
        )
    fm_model = feature_map_model(model)  # image -> (feature_map, logit), one graph
    feature_map, logit = fm_model.outputs
    name = model.backbone.name if hasattr(model, "backbone") else model.name
    return CamModel(keras.Model(fm_model.input, [logit, feature_map], name=f"{model.name}_cam"), (name,))


def _fusion_cam_model(fusion: FusionModel) -> CamModel:
    # The head: from the members' outputs, as they enter "fused_features", to the logit. Keras builds
    # a model from these intermediate tensors by cloning the graph's nodes; the layers (weights) are
    # the fusion's own.
    member_outputs = fusion.get_layer(FUSED_FEATURES).input
    head = keras.Model(member_outputs, fusion.output, name=f"{fusion.name}_head")
    image = keras.Input(fusion.input_shape[1:], name="image")
    feature_maps, features, names = [], [], []
    for tensor in member_outputs:  # in the head's input order, whatever the order of `fusion.members`
        member = tensor._keras_history.operation
        if isinstance(member, InferenceMode):
            member = member.model
        if not isinstance(member, Backbone):
            raise ValueError(
                f"Expected every input of {fusion.name!r}'s {FUSED_FEATURES!r} to come from a member "
                f"Backbone, but one comes from {member.name!r} ({type(member).__name__})."
            )
        # A new node of the member's layers on the new image: its feature map and its features are
        # from the same call, so the head's logit below depends on this very feature map.
        inner = keras.Model(member.input, [member.get_layer(FEATURE_MAP).output, member.output])
        feature_map, feature = inner(image)
        feature_maps.append(feature_map)
        features.append(feature)
        names.append(member.name)
    logit = head(features)
    return CamModel(keras.Model(image, [logit, *feature_maps], name=f"{fusion.name}_cam"), tuple(names))


def grad_cam(model: keras.Model | CamModel, images, *, batch_size: int = 8) -> dict[str, np.ndarray]:
    """Grad-CAM heatmaps of ``images``: ``{backbone name: (B, H, W) float32 in [0, 1]}``.

    One map for a classifier, one per member for a fusion model (see `explain_batch` for the
    logits as well).

    Args:
        model: a classifier, a `FusionModel`, or a `CamModel` built once with `cam_model`.
        images: ``(B, H, W)`` or ``(B, H, W, C)`` model inputs (preprocessed, raw values in [0, 255]).
        batch_size: images per gradient computation.

    Returns:
        Per image: ``ReLU(sum_k w_k A_k)`` with ``w_k`` the spatial mean of ``d logit / d A_k``,
        upsampled bilinearly to ``(H, W)`` and min-max scaled to [0, 1]. A map that is constant
        (no part of the image raises the logit more than another, e.g. every ``w_k A_k`` sum
        negative) is all zeros.

    Example:
        >>> heatmaps = grad_cam(classifier, images)  # {"mobilenetv3_large": (B, H, W)}
    """
    return explain_batch(model, images, batch_size=batch_size).heatmaps


def explain_batch(model: keras.Model | CamModel, images, *, batch_size: int = 8) -> GradCamResult:
    """Grad-CAM heatmaps and the logits of ``images`` (see `grad_cam`)."""
    import tensorflow as tf

    cam = model if isinstance(model, CamModel) else cam_model(model)
    images = _as_batch(images, cam.model)
    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be a positive integer, but got {batch_size}.")
    heatmaps = {name: [] for name in cam.names}
    logits = []
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start : start + batch_size])
        with tf.GradientTape() as tape:
            # Watch the image: the tape records only what depends on a watched tensor, and by default
            # it watches trainable variables alone, so a frozen model (or one with no weights before
            # its feature map) would give None gradients.
            tape.watch(x)
            logit, *feature_maps = cam.model(x, training=False)
            # Each image's logit depends only on its own maps (inference mode: no batch statistics),
            # so the gradient of the sum is every image's own gradient.
            total = tf.reduce_sum(tf.cast(logit, tf.float32))
        gradients = tape.gradient(total, feature_maps)
        for name, feature_map, gradient in zip(cam.names, feature_maps, gradients, strict=True):
            if gradient is None:
                raise RuntimeError(
                    f"The logit does not depend on {name!r}'s feature map (its gradient is None): the "
                    "feature map came from another node of the graph than the one the logit was "
                    "computed from. Build the graph with tf_fracture.explain.cam_model."
                )
            maps = heatmap_from_gradients(np.asarray(feature_map, np.float32), np.asarray(gradient, np.float32))
            heatmaps[name].append(upsample_and_scale(maps, images.shape[1:3]))
        logits.append(np.asarray(tf.cast(logit, tf.float32)).reshape(-1))
    return GradCamResult({name: np.concatenate(maps) for name, maps in heatmaps.items()}, np.concatenate(logits))


def heatmap_from_gradients(feature_map: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """``ReLU(sum_k mean_ij(gradient[..., k]) * feature_map[..., k])``: ``(B, h, w, K)`` -> ``(B, h, w)``."""
    weights = gradient.mean(axis=(1, 2), keepdims=True)
    return np.maximum((weights * feature_map).sum(axis=-1), 0.0)


def upsample_and_scale(maps: np.ndarray, size) -> np.ndarray:
    """``(B, h, w)`` maps -> ``(B, H, W)`` float32: bilinear upsampling, then each map min-max to [0, 1].

    Bilinear interpolation with half-pixel centres (``tf.image.resize``, OpenCV's INTER_LINEAR); a
    constant map (range below 1e-6 of its peak, rounding) becomes all zeros, never a division by zero.
    """
    import tensorflow as tf

    maps = np.asarray(maps, np.float32)
    resized = tf.image.resize(maps[..., None], tuple(int(s) for s in size), method="bilinear").numpy()[..., 0]
    low = resized.min(axis=(1, 2), keepdims=True)
    high = resized.max(axis=(1, 2), keepdims=True)
    span = high - low
    flat = span <= 1e-6 * np.maximum(np.abs(high), np.finfo(np.float32).tiny)
    scaled = (resized - low) / np.where(flat, 1.0, span)
    return np.where(flat, 0.0, scaled).astype(np.float32)


def _as_batch(images, model: keras.Model) -> np.ndarray:
    images = np.asarray(images, np.float32)
    channels = model.input_shape[-1]
    if images.ndim == 3 and channels == 1:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] != channels:
        raise ValueError(
            f"Expected images of shape (batch, height, width, {channels}) or, for one channel, "
            f"(batch, height, width), but got {images.shape}."
        )
    expected = tuple(model.input_shape[1:3])
    if None not in expected and images.shape[1:3] != expected:
        raise ValueError(
            f"The model takes {expected[0]}x{expected[1]} images, but got {images.shape[1]}x{images.shape[2]}: "
            "preprocess them with the model's own preprocessing (PreprocessConfig(**model.preprocessing))."
        )
    return images
