"""The backbone families a configuration may name, and what the presets and tests need to know of each.

TF-free: configurations are checked, and presets made, without building anything. Each family's
module in `tf_fracture.backbones` builds the networks and registers itself against its card here
(`tf_fracture.backbones.registry.register_backbone` refuses a family whose card disagrees), so a
new backbone is one module: its card, declared with `declare_backbone` (or passed to its
`BackboneFamily`), and its builder.

Example:
    >>> backbone_names()
    ('convnext', 'efficientnetv2', 'mobilenetv3')
    >>> backbone_card("mobilenetv3").learning_rate, backbone_card("mobilenetv3").test_variant
    (0.0001, 'small')
"""

from __future__ import annotations

from dataclasses import dataclass

from tf_fracture.validation import check_number, check_rate

__all__ = ["BackboneCard", "backbone_card", "backbone_names", "declare_backbone"]


@dataclass(frozen=True)
class BackboneCard:
    """What a configuration needs to know of a backbone family.

    Attributes:
        name: the family's name (``model.backbone``).
        variants: its variants (``model.variant``); ``default_variant`` is one of them.
        test_variant: the smallest variant: the one fast tests build.
        learning_rate: the method's learning rate for it (pretraining and fine-tuning presets).
        finetune_momentum: the method's SGD momentum for its fine-tuning.
    """

    name: str
    variants: tuple[str, ...]
    default_variant: str
    test_variant: str
    learning_rate: float
    finetune_momentum: float

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Expected a backbone name like 'mobilenetv3', but got {self.name!r}.")
        if not self.variants or not all(isinstance(v, str) and v for v in self.variants):
            raise ValueError(f"Expected `variants` of {self.name!r} to be a non-empty tuple of names.")
        for field in ("default_variant", "test_variant"):
            if getattr(self, field) not in self.variants:
                raise ValueError(
                    f"`{field}` of {self.name!r} is {getattr(self, field)!r}, not one of its variants {self.variants}."
                )
        check_number("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_rate("finetune_momentum", self.finetune_momentum)


_CARDS: dict[str, BackboneCard] = {}


def declare_backbone(card: BackboneCard) -> BackboneCard:
    """Makes ``card.name`` a backbone configurations may name; declaring the same card again is a no-op."""
    known = _CARDS.get(card.name)
    if known is not None and known != card:
        raise ValueError(f"A different backbone family named {card.name!r} is already declared: {known}.")
    _CARDS[card.name] = card
    return card


def backbone_names() -> tuple[str, ...]:
    """The declared family names, sorted."""
    return tuple(sorted(_CARDS))


def backbone_card(name: str) -> BackboneCard:
    try:
        return _CARDS[name]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}. Valid backbones: {', '.join(backbone_names())}.") from None


# The method's three families (Liu et al. 2022; Tan & Le 2021; Howard et al. 2019). The learning
# rates and fine-tuning momenta are the paper's (see `tf_fracture.configs.presets`).
declare_backbone(BackboneCard("convnext", ("tiny", "small"), "tiny", "tiny", 1.2e-3, 0.8))
declare_backbone(BackboneCard("efficientnetv2", ("s", "m"), "m", "s", 8e-4, 0.7))
declare_backbone(
    BackboneCard("mobilenetv3", ("large", "small", "large_minimal", "small_minimal"), "large", "small", 1e-4, 0.6)
)
