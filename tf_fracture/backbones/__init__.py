"""Backbones: ConvNeXt, EfficientNetV2 and MobileNetV3 with CBAM and greyscale stems.

Each family lives in its own module and registers itself; `build_backbone` is the one
entry point. Every backbone maps an image of raw pixel values in [0, 255], shaped
``(batch, height, width, 1)`` (greyscale stem) or ``(..., 3)`` (RGB stem), to a feature
vector whose layer is named ``"features"``, with the last spatial map before pooling on a
layer named ``"feature_map"`` (for Grad-CAM). Each is a `Backbone` that carries its build
configuration in its ``.keras`` file; ImageNet weights are loaded by a separate step.
"""

from __future__ import annotations

import keras

from tf_fracture.backbones import convnext, efficientnetv2, mobilenetv3  # noqa: F401  (registers the families)
from tf_fracture.backbones.backbone import Backbone, load_application_weights, load_imagenet_weights
from tf_fracture.backbones.config import BackboneConfig
from tf_fracture.backbones.registry import FEATURE_MAP, FEATURES, available_backbones, get_family, resolve_variant
from tf_fracture.backbones.weights import WeightsUnavailableError

__all__ = [
    "FEATURES",
    "FEATURE_MAP",
    "Backbone",
    "BackboneConfig",
    "WeightsUnavailableError",
    "available_backbones",
    "available_variants",
    "build_backbone",
    "build_backbone_from_config",
    "get_family",
    "load_application_weights",
    "load_imagenet_weights",
]


def available_variants(name: str) -> tuple[str, ...]:
    """The variants of backbone family ``name``, e.g. ``('tiny', 'small')`` for ConvNeXt."""
    return get_family(name).variants


def build_backbone_from_config(config: BackboneConfig, keras_application: keras.Model | None = None) -> Backbone:
    """Builds the backbone ``config`` describes, then loads its weights (see `build_backbone`)."""
    backbone = Backbone(
        config.name,
        resolve_variant(get_family(config.name), config.variant),
        attention=config.attention,
        stem=config.stem,
        feature_dim=config.feature_dim,
        input_size=config.input_size,
        cbam_reduction=config.cbam_reduction,
        cbam_kernel_size=config.cbam_kernel_size,
        feature_stride=config.feature_stride,
    )
    if keras_application is not None:
        return load_application_weights(backbone, keras_application)
    if config.weights == "imagenet":
        return load_imagenet_weights(backbone)
    return backbone


def build_backbone(
    name: str, variant: str | None = None, *, keras_application: keras.Model | None = None, **options
) -> Backbone:
    """Builds a backbone feature extractor and loads its weights.

    Args:
        name: a family from `available_backbones()`: ``"convnext"``, ``"efficientnetv2"``
            or ``"mobilenetv3"``.
        variant: ``"tiny"``/``"small"`` (ConvNeXt), ``"s"``/``"m"`` (EfficientNetV2),
            ``"large"``/``"small"`` (MobileNetV3); ``None`` for the method's choice
            (tiny, m, large).
        **options: the other fields of `BackboneConfig`: ``weights`` ("imagenet" or
            None), ``attention``, ``stem`` ("grey" or "rgb"), ``feature_dim``,
            ``input_size``, ``cbam_reduction``, ``cbam_kernel_size``.
        keras_application: initialise from this already-built ``keras.applications``
            network of the same family and variant (``include_top=False``, RGB input;
            ConvNeXt with ``pooling="avg"``) instead of constructing one, e.g. one whose
            weights you loaded from a local file. ``weights`` is then not used.

    Returns:
        A `Backbone` (a functional ``keras.Model``) from the image to the feature vector. Its
        saved ``.keras`` file carries the build configuration (not the weights' origin: reloading
        never downloads).

    Example:
        >>> backbone = build_backbone("mobilenetv3", weights=None, input_size=224)
        >>> backbone.output_shape
        (None, 768)
    """
    return build_backbone_from_config(BackboneConfig(name=name, variant=variant, **options), keras_application)
