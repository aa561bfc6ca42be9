"""Classifiers and the fusion ensemble built on the backbones; each carries its build configuration.

Every model takes raw pixel values in [0, 255] and returns one fracture *logit*. A saved
``.keras`` file reloads (safe mode) as the same class with the same configuration:
``load_model(path).backbone.family``, ``.preprocessing``, ``.fusion_config``.
"""

from tf_fracture.models.classifier import (
    CAM_LAYER,
    LOGIT_LAYER,
    FractureClassifier,
    build_classifier,
    cam_model,
    feature_extractor,
    feature_map_model,
)
from tf_fracture.models.fusion import FusionConfig, FusionModel, InferenceMode, build_fusion
from tf_fracture.models.multitask import BODY_PART, FRACTURE, MultiTaskClassifier, multitask_loss, with_body_part_head
from tf_fracture.models.saving import load_model

__all__ = [
    "BODY_PART",
    "CAM_LAYER",
    "FRACTURE",
    "LOGIT_LAYER",
    "FractureClassifier",
    "FusionConfig",
    "FusionModel",
    "InferenceMode",
    "MultiTaskClassifier",
    "build_classifier",
    "build_fusion",
    "cam_model",
    "feature_extractor",
    "feature_map_model",
    "load_model",
    "multitask_loss",
    "with_body_part_head",
]
