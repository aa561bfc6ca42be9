"""Experiment configs: data + model + train dataclasses, the named presets and ``--set`` overrides.

TF-free: the CLI resolves and checks a config before TensorFlow loads.

    from tf_fracture.configs import get_experiment
    config = get_experiment("paper", stage="finetune", backbone="convnext").override(["train.epochs=3"])
    config.to_json("runs/x/config.json")
"""

from tf_fracture.configs.backbones import BackboneCard, backbone_card, backbone_names, declare_backbone
from tf_fracture.configs.datasets import DATASETS, DatasetSpec, get_dataset_spec
from tf_fracture.configs.experiment import (
    FUSION,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
)
from tf_fracture.configs.overrides import apply_overrides, valid_keys
from tf_fracture.configs.presets import DEFAULT_STAGES, PRESETS, get_experiment

__all__ = [
    "DATASETS",
    "DEFAULT_STAGES",
    "FUSION",
    "PRESETS",
    "BackboneCard",
    "DataConfig",
    "DatasetSpec",
    "ExperimentConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "backbone_card",
    "backbone_names",
    "declare_backbone",
    "get_dataset_spec",
    "get_experiment",
    "valid_keys",
]
