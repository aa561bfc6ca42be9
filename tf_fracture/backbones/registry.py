"""One registry of backbone families; the CLI, the presets and the tests all read it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from tf_fracture.backbones.config import BackboneConfig


@dataclass(frozen=True)
class BackboneFamily:
    """A family of backbones and the function that builds one from a config."""

    name: str
    variants: tuple[str, ...]
    default_variant: str
    build: Callable[[BackboneConfig, str, keras.Model | None], keras.Model]
    summary: str


_FAMILIES: dict[str, BackboneFamily] = {}


def register_backbone(family: BackboneFamily) -> BackboneFamily:
    if family.name in _FAMILIES:
        raise ValueError(f"A backbone family named {family.name!r} is already registered.")
    if family.default_variant not in family.variants:
        raise ValueError(f"Default variant {family.default_variant!r} of {family.name!r} is not in {family.variants}.")
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
