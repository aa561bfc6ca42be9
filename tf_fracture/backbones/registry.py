"""One registry of backbone families; the CLI, the presets and the tests all read it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import keras

from tf_fracture.backbones.config import BackboneConfig

FEATURE_MAP = "feature_map"  # the last spatial map before pooling (Grad-CAM reads it)
FEATURES = "features"  # the pooled feature vector


@dataclass(frozen=True)
class BackboneFamily:
    """A family of backbones: how to build its graph and how to fill it from a Keras application.

    Attributes:
        build_graph: ``(config, variant) -> (inputs, features)``: the functional graph, freshly
            initialised, with an identity layer named ``FEATURE_MAP`` on the last spatial map and one
            named ``FEATURES`` on the pooled vector. Never downloads anything.
        keras_application: ``(variant, weights) -> keras.Model``: Keras' network this family rebuilds.
        transfer: ``(application, backbone) -> None``: copies the application's weights into a
            backbone of this family (greyscale stem, renamed and transposed layers handled).
        native_width: the network's own feature width per variant; ``feature_dim`` equal to it (or
            None) keeps the network's own head unchanged.
        taps: finer feature maps the family offers: ``{stride: {variant: layer name}}``, the layer of
            Keras' network whose output becomes the feature map when ``feature_stride`` asks for that
            stride (the network's own is 32).
    """

    name: str
    variants: tuple[str, ...]
    default_variant: str
    build_graph: Callable[[BackboneConfig, str], tuple[keras.KerasTensor, keras.KerasTensor]]
    keras_application: Callable[[str, str | None], keras.Model]
    transfer: Callable[[keras.Model, keras.Model], None]
    native_width: Mapping[str, int]
    summary: str
    taps: Mapping[int, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))

    def tap(self, config: BackboneConfig, variant: str) -> str | None:
        """The layer to cut Keras' network at for ``config.feature_stride``, or None for the whole network."""
        if config.feature_stride in (None, 32):
            return None
        if config.feature_stride not in self.taps:
            offered = ", ".join(str(s) for s in (32, *sorted(self.taps)))
            raise ValueError(
                f"Backbone {self.name!r} offers feature_stride {offered} (None = 32), but got "
                f"`feature_stride={config.feature_stride}`."
            )
        return self.taps[config.feature_stride][variant]

    def projects(self, config: BackboneConfig, variant: str) -> bool:
        """Whether ``config.feature_dim`` asks for a width other than the network's own."""
        return config.feature_dim is not None and config.feature_dim != self.native_width[variant]


_FAMILIES: dict[str, BackboneFamily] = {}


def register_backbone(family: BackboneFamily) -> BackboneFamily:
    if family.name in _FAMILIES:
        raise ValueError(f"A backbone family named {family.name!r} is already registered.")
    if family.default_variant not in family.variants:
        raise ValueError(f"Default variant {family.default_variant!r} of {family.name!r} is not in {family.variants}.")
    if set(family.native_width) != set(family.variants):
        raise ValueError(f"`native_width` of {family.name!r} must name every variant in {family.variants}.")
    _FAMILIES[family.name] = family
    return family


def available_backbones() -> tuple[str, ...]:
    """The registered family names, e.g. ``('convnext', 'efficientnetv2', 'mobilenetv3')``."""
    return tuple(sorted(_FAMILIES))


def get_family(name: str) -> BackboneFamily:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}. Valid backbones: {', '.join(available_backbones())}.") from None


def resolve_variant(family: BackboneFamily, variant: str | None) -> str:
    if variant is None:
        return family.default_variant
    if variant not in family.variants:
        raise ValueError(
            f"Unknown variant {variant!r} of backbone {family.name!r}. Valid variants: {', '.join(family.variants)}."
        )
    return variant
