"""The typed configuration of a backbone, validated on construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tf_fracture.validation import check_choice, check_int

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
