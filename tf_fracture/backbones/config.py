"""The typed configuration of a backbone, validated on construction (defined TF-free in `tf_fracture.configs`)."""

from tf_fracture.configs.backbones import STEMS, WEIGHTS, BackboneConfig

__all__ = ["STEMS", "WEIGHTS", "BackboneConfig"]
