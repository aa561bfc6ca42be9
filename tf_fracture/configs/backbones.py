"""The backbone families a configuration may name, what the presets and tests need to know of each,
and `BackboneConfig`, everything that decides how one backbone is built (which `ModelConfig` holds).

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

import dataclasses
from dataclasses import dataclass, field

from tf_fracture.validation import check_choice, check_int, check_number, check_rate

__all__ = ["STEMS", "WEIGHTS", "BackboneCard", "BackboneConfig", "backbone_card", "backbone_names", "declare_backbone"]


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
        for key in ("default_variant", "test_variant"):
            if getattr(self, key) not in self.variants:
                raise ValueError(
                    f"`{key}` of {self.name!r} is {getattr(self, key)!r}, not one of its variants {self.variants}."
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


STEMS = ("grey", "rgb")
WEIGHTS = ("imagenet", None)


@dataclass(frozen=True)
class BackboneConfig:
    """Everything that decides how a backbone is built.

    The defaults are the method's: CBAM on, a greyscale stem, 768-d features and
    ImageNet initialisation. ``BackboneConfig.public(...)`` gives the publicly available
    architecture (RGB stem, no attention, the network's own feature width).
    """

    name: str = field(metadata={"help": "Backbone family: see tf_fracture.backbones.available_backbones()."})
    variant: str | None = field(default=None, metadata={"help": "Family variant; None picks the family's default."})
    weights: str | None = field(
        default="imagenet", metadata={"help": "'imagenet' loads Keras' published weights; None is random init."}
    )
    attention: bool = field(default=True, metadata={"help": "Insert CBAM blocks at the method's fixed points."})
    stem: str = field(default="grey", metadata={"help": "'grey' (1-channel input, summed RGB kernels) or 'rgb'."})
    feature_dim: int | None = field(
        default=768,
        metadata={"help": "Feature width; None or the network's own width keeps its own head, unchanged."},
    )
    input_size: int | None = field(
        default=None, metadata={"help": "Square input size in pixels; None accepts any size."}
    )
    cbam_reduction: int = field(default=16, metadata={"help": "CBAM channel-MLP reduction ratio."})
    cbam_kernel_size: int = field(default=7, metadata={"help": "CBAM spatial-gate kernel size."})
    feature_stride: int | None = field(
        default=None,
        metadata={
            "help": "Stride of the feature map (and so of the CAM): None = the network's own (32); 16 taps the "
            "network before its last downsampling, for a finer map (families that list it in `taps`)."
        },
    )

    def __post_init__(self):
        check_choice("weights", self.weights, WEIGHTS)
        check_choice("stem", self.stem, STEMS)
        check_choice("attention", self.attention, (True, False))
        check_int("feature_dim", self.feature_dim, allow_none=True)
        # The networks downsample 32x: a smaller input leaves no spatial map.
        check_int("input_size", self.input_size, minimum=32, allow_none=True)
        check_int("cbam_reduction", self.cbam_reduction)
        check_int("cbam_kernel_size", self.cbam_kernel_size)
        check_choice("feature_stride", self.feature_stride, (None, 16, 32))

    @classmethod
    def public(cls, name: str, variant: str | None = None, **overrides) -> BackboneConfig:
        """The publicly available architecture: RGB stem, no CBAM, native feature width."""
        return cls(name=name, variant=variant, **{"attention": False, "stem": "rgb", "feature_dim": None, **overrides})

    def model_name(self, base: str) -> str:
        """``base`` plus ``_cbam`` and ``_grey`` where those apply, e.g. ``mobilenetv3_large_cbam_grey``."""
        return base + ("_cbam" if self.attention else "") + ("_grey" if self.stem == "grey" else "")

    @property
    def channels(self) -> int:
        return 1 if self.stem == "grey" else 3

    def replace(self, **changes) -> BackboneConfig:
        return dataclasses.replace(self, **changes)
