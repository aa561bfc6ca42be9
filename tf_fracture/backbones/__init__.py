"""Backbones: ConvNeXt, EfficientNetV2 and MobileNetV3 with CBAM and greyscale stems.

Each family lives in its own module and registers itself; `build_backbone` is the one
entry point. Every backbone maps an image of raw pixel values in [0, 255], shaped
``(batch, height, width, 1)`` (greyscale stem) or ``(..., 3)`` (RGB stem), to a feature
vector whose layer is named ``"features"``.
"""

from __future__ import annotations

import keras

from tf_fracture.backbones import convnext, efficientnetv2, mobilenetv3  # noqa: F401  (registers the families)
from tf_fracture.backbones.config import BackboneConfig
from tf_fracture.backbones.registry import available_backbones, get_family, resolve_variant
from tf_fracture.backbones.weights import WeightsUnavailableError

__all__ = [
    "BackboneConfig",
    "WeightsUnavailableError",
    "available_backbones",
    "available_variants",
    "build_backbone",
    "build_backbone_from_config",
]


def available_variants(name: str) -> tuple[str, ...]:
    """The variants of backbone family ``name``, e.g. ``('tiny', 'small')`` for ConvNeXt."""
    return get_family(name).variants


def build_backbone_from_config(config: BackboneConfig, keras_application: keras.Model | None = None) -> keras.Model:
    """Builds the feature extractor that ``config`` describes (see `build_backbone`)."""
    family = get_family(config.name)
    return family.build(config, resolve_variant(family, config.variant), keras_application)


def build_backbone(
    name: str, variant: str | None = None, *, keras_application: keras.Model | None = None, **options
) -> keras.Model:
    """Builds a backbone feature extractor.

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
        A functional ``keras.Model`` from the image to the feature vector.

    Example:
        >>> backbone = build_backbone("mobilenetv3", weights=None, input_size=224)
        >>> backbone.output_shape
        (None, 768)
    """
    return build_backbone_from_config(BackboneConfig(name=name, variant=variant, **options), keras_application)
