"""One registry of backbone families; the CLI, the presets and the tests all read it.

A family's names (its variants, default and test variant) and the method's training values for it
live on its `~tf_fracture.configs.backbones.BackboneCard` (TF-free, so that configurations are
checked without TensorFlow); `register_backbone` ties the builder to that card.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import keras

from tf_fracture.backbones.config import BackboneConfig
from tf_fracture.configs.backbones import BackboneCard, declare_backbone

FEATURE_MAP = "feature_map"  # the last spatial map before pooling (Grad-CAM reads it)
FEATURES = "features"  # the pooled feature vector


@dataclass(frozen=True)
class BackboneFamily:
    """A family of backbones: how to build its graph and how to fill it from a Keras application.

    Attributes:
        card: the family's `BackboneCard` (name, variants, default and test variant, learning rate).
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

    card: BackboneCard
    build_graph: Callable[[BackboneConfig, str], tuple[keras.KerasTensor, keras.KerasTensor]]
    keras_application: Callable[[str, str | None], keras.Model]
    transfer: Callable[[keras.Model, keras.Model], None]
    native_width: Mapping[str, int]
    summary: str
    taps: Mapping[int, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def variants(self) -> tuple[str, ...]:
        return self.card.variants

    @property
    def default_variant(self) -> str:
        return self.card.default_variant

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
_BUILT_IN = ("convnext", "efficientnetv2", "mobilenetv3")


def register_backbone(family: BackboneFamily) -> BackboneFamily:
    """Adds ``family`` to the registry, and declares its card (configurations may then name it)."""
    if family.name in _FAMILIES:
        raise ValueError(f"A backbone family named {family.name!r} is already registered.")
    if set(family.native_width) != set(family.variants):
        raise ValueError(f"`native_width` of {family.name!r} must name every variant in {family.variants}.")
    declare_backbone(family.card)  # refuses a card other than the one already declared under this name
    _FAMILIES[family.name] = family
    return family


def unregister_backbone(name: str) -> None:
    """Removes a family registered at run time (a plug-in, a test's toy family); built-ins stay declared."""
    from tf_fracture.configs import backbones as cards

    _FAMILIES.pop(name, None)
    if name not in _BUILT_IN:
        cards._CARDS.pop(name, None)


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
