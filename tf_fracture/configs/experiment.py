"""One experiment, defined once: the data, the model and the training, as frozen dataclasses.

TF-free (the CLI parses and checks a config before TensorFlow loads). Every field carries a
``help`` text; ``__post_init__`` checks each value with :mod:`tf_fracture.validation`. The JSON form
is nested: ``{"name": ..., "data": {...}, "model": {...}, "train": {...}}``; a run folder's
``config.json`` repeats the run on its own:

    tf-fracture train --config RUN/config.json --run-dir NEW

Example:
    >>> config = ExperimentConfig().override(["train.epochs=3", "data.image_size=224"])
    >>> config.data.preprocess_config().image_size
    224
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tf_fracture.configs.backbones import BackboneConfig, backbone_card, backbone_names
from tf_fracture.configs.datasets import DATASETS, get_dataset_spec
from tf_fracture.validation import check_choice, check_int, check_number, check_rate

__all__ = [
    "DISTRIBUTE",
    "FUSION",
    "MIXED_PRECISION",
    "OPTIMIZERS",
    "SCHEDULES",
    "STAGES",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "TrainConfig",
]

FUSION = "fusion"  # the ensemble of fine-tuned members (tf_fracture.models.build_fusion)
RESIZE_MODES = ("stretch", "pad")
STAGES = ("pretrain", "finetune", "ensemble", "train")
OPTIMIZERS = ("torch_sgd", "sgd", "adamw")
SCHEDULES = ("cosine_restarts", "constant")
CLASS_WEIGHTS = ("none", "balanced")
MIXED_PRECISION = (None, "bf16", "fp16")
DISTRIBUTE = ("auto", "none", "mirrored", "multi_worker")
LOCALIZATION_LOSSES = ("none", "energy", "bce")  # tf_fracture.train.losses.LOCALIZATION_LOSSES
LOCALIZATION_MAPS = ("cam", "cbam_gate")  # tf_fracture.models.multitask.LOCALIZATION_MAPS
LOCALIZATION_CELLS = ("touch", "coverage")  # tf_fracture.train.losses.CELLS


def _help(text: str, default=dataclasses.MISSING, **kwargs):
    return field(default=default, metadata={"help": text}, **kwargs)


def _backbone_field(name: str, **changes):
    """A `ModelConfig` field that is `BackboneConfig`'s own: its default and help unless ``changes`` says otherwise."""
    source = next(f for f in dataclasses.fields(BackboneConfig) if f.name == name)
    return _help(changes.get("help", source.metadata["help"]), changes.get("default", source.default))


# The fields of BackboneConfig a run chooses (the input size is the data's; CBAM's sizes are the method's).
BACKBONE_FIELDS = ("variant", "attention", "stem", "feature_dim", "feature_stride", "weights")


def _check_str(name: str, value, allow_none: bool = False, allow_empty: bool = False):
    if value is None and allow_none:
        return
    if not isinstance(value, str) or (not value and not allow_empty):
        expected = "a non-empty string" if not allow_empty else "a string"
        raise ValueError(
            f"Expected `{name}` to be {expected}{' or None' if allow_none else ''}, but got `{name}={value!r}`."
        )


def _check_bool(name: str, value):
    if not isinstance(value, bool):
        raise ValueError(f"Expected `{name}` to be True or False, but got `{name}={value!r}`.")


# The range of ``data.image_size``: each backbone's feature map is 1/32 of the image (the model-build
# check refuses sizes a given model cannot take), and beyond 4096 px a single image fills gigabytes.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 4096


@dataclass(frozen=True)
class DataConfig:
    """Which data, how it is preprocessed, and how the batches are assembled."""

    dataset: str = _help("A dataset in tf_fracture.configs.datasets.DATASETS.", "synthetic_xray")
    builder_config: str | None = _help(
        "TFDS builder config ('tiny', 'grouped_val'); None = the dataset's default (DatasetSpec).", None
    )
    data_dir: str | None = _help("TFDS data directory; None = TFDS' default (~/tensorflow_datasets).", None)
    manual_dir: str | None = _help(
        "Where manually downloaded data lies (FracAtlas/ folder, MURA-v1.1/, the elbow images).", None
    )
    train_split: str = _help("Split to train on.", "train")
    validation_split: str = _help("Split that chooses the best epoch and the thresholds.", "validation")
    test_split: str = _help("Split the evaluation reports on.", "test")
    image_size: int = _help("THE image size: preprocessing, model input and export, in pixels.", 384)
    clahe_clip_limit: float = _help("CLAHE contrast limit.", 2.5)
    clahe_grid: int = _help("CLAHE tiles per side.", 4)
    unsharp_kernel: int = _help("Unsharp-mask Gaussian kernel side (odd): 5 for MURA, 7 for the elbow set.", 5)
    unsharp_amount: float = _help("Weight of the unsharp mask's detail layer.", 2.0)
    resize_mode: str = _help("'stretch' to a square, or 'pad' to a square keeping the aspect ratio.", "stretch")
    batch_size: int = _help("Images per batch (global, over all replicas).", 32)
    augmented_copies: int = _help(
        "Augmented copies per original per epoch (method: 1 MURA, 2 elbow); 0 = each image once, augmented.", 1
    )
    augment: bool = _help("Augment the training images (False: originals only).", True)
    localization_target: str = _help(
        "Guided training's target: 'box' (the fracture boxes) or 'mask' (synthetic_xray's pixel mask; its boxes "
        "where an image has none). Boxes train faster (measured on the demo; see the README).",
        "box",
    )
    cache: str = _help("'' keeps preprocessed images in memory; a directory keeps them on disk (reused).", "")

    def __post_init__(self):
        check_choice("dataset", self.dataset, tuple(DATASETS))
        for name in ("builder_config", "data_dir", "manual_dir"):
            _check_str(name, getattr(self, name), allow_none=True)
        for name in ("train_split", "validation_split", "test_split"):
            _check_str(name, getattr(self, name))
        _check_str("cache", self.cache, allow_empty=True)
        _check_bool("augment", self.augment)
        check_choice("localization_target", self.localization_target, ("box", "mask"))
        check_int("batch_size", self.batch_size)
        # Every backbone downsamples 32 times; beyond 4096 px one image alone fills gigabytes.
        check_int("image_size", self.image_size, minimum=MIN_IMAGE_SIZE, maximum=MAX_IMAGE_SIZE)
        check_int("augmented_copies", self.augmented_copies, minimum=0)
        # The preprocessing checks its own fields (odd kernel, ranges): build it once to fail here.
        self.preprocess_config()

    def resolved_builder_config(self) -> str:
        """``builder_config``, or the dataset's default one when it is None."""
        return (
            self.builder_config
            if self.builder_config is not None
            else get_dataset_spec(self.dataset).default_builder_config
        )

    def preprocess_config(self):
        """The :class:`~tf_fracture.data.preprocess.PreprocessConfig` of this data (``image_size`` included)."""
        from tf_fracture.data.preprocess import PreprocessConfig

        return PreprocessConfig(
            self.image_size,
            clahe_clip_limit=self.clahe_clip_limit,
            clahe_grid=self.clahe_grid,
            unsharp_kernel=self.unsharp_kernel,
            unsharp_amount=self.unsharp_amount,
            resize_mode=self.resize_mode,
        )

    def pipeline_config(self, seed: int, *, deterministic: bool = True):
        """The :class:`~tf_fracture.data.pipeline.PipelineConfig` (imports TensorFlow)."""
        from tf_fracture.data.pipeline import PipelineConfig

        return PipelineConfig(
            batch_size=self.batch_size,
            augmented_copies=self.augmented_copies,
            cache=self.cache,
            seed=seed,
            deterministic=deterministic,
        )


@dataclass(frozen=True)
class ModelConfig:
    """The network: a backbone family + classifier head, or the fusion of fine-tuned members.

    The backbone's fields (``variant``, ``attention``, ``stem``, ``feature_dim``, ``feature_stride``,
    ``weights``) are `BackboneConfig`'s own, defaults, help and checks included (`backbone_config`
    gives it); only ``weights`` starts elsewhere: None, random initialisation, as no download is
    assumed (the paper presets ask for ImageNet's).
    """

    backbone: str = _help("A backbone family (tf_fracture.backbones.available_backbones()) or 'fusion'.", "mobilenetv3")
    variant: str | None = _backbone_field("variant")
    attention: bool = _backbone_field("attention")
    stem: str = _backbone_field("stem")
    feature_dim: int | None = _backbone_field("feature_dim")
    feature_stride: int | None = _backbone_field("feature_stride")
    weights: str | None = _backbone_field(
        "weights", default=None, help="'imagenet' (needs the Keras weights file) or None (random initialisation)."
    )
    dropout: float = _help("Dropout rate before the logit.", 0.0)
    init_from: str | None = _help("A run folder (or .keras file) whose weights start this run.", None)
    members: tuple[str, ...] = _help("Fusion only: run folders of the fine-tuned members (comma-separated).", ())
    fusion_hidden_units: tuple[int, ...] = _help("Fusion only: hidden layer widths of the fusion head.", (256,))
    fusion_dropout: float = _help("Fusion only: dropout rate in the fusion head.", 0.3)
    aux_body_part: bool = _help("Add an auxiliary body-part head (multi-task) where the dataset has body parts.", False)
    aux_loss_weight: float = _help("Weight of the body-part loss beside the fracture loss.", 0.3)
    localization_loss: str = _help(
        "Guided training: 'energy' | 'bce' asks the class activation map to sit on the fracture box "
        "(only where the dataset has boxes; images without one add nothing) | 'none'.",
        "energy",
    )
    localization_weight: float = _help("Weight of the localisation loss beside the fracture loss.", 1.0)
    localization_cells: str = _help(
        "How the box becomes the map's target: 'touch' (a cell is in the box when any of its pixels is) or "
        "'coverage' (a cell counts by the share of its pixels in the box: the energy at the image's resolution).",
        "touch",
    )
    localization_map: str = _help(
        "What the localisation loss supervises: 'cam' (the classifier's own class activation map) or "
        "'cbam_gate' (the spatial gate of the last CBAM block; needs attention). 'cam' won on the demo (README).",
        "cam",
    )

    def backbone_config(self, input_size: int | None = None) -> BackboneConfig:
        """The `BackboneConfig` of this model's backbone at ``input_size`` (a fusion's members have their own).

        Example:
            >>> ModelConfig(variant="small").backbone_config(256).feature_dim
            768
        """
        options = {name: getattr(self, name) for name in BACKBONE_FIELDS}
        return BackboneConfig(name=self.backbone, input_size=input_size, **options)

    def __post_init__(self):
        check_choice("backbone", self.backbone, (*backbone_names(), FUSION))
        if self.backbone != FUSION and self.variant is not None:
            check_choice("variant", self.variant, backbone_card(self.backbone).variants)
        _check_str("variant", self.variant, allow_none=True)
        _check_bool("attention", self.attention)
        self.backbone_config()  # BackboneConfig's own checks of stem, feature_dim, feature_stride, weights
        check_rate("dropout", self.dropout)
        _check_str("init_from", self.init_from, allow_none=True)
        if not isinstance(self.members, tuple) or not all(isinstance(m, str) and m for m in self.members):
            raise ValueError(f"Expected `members` to be a tuple of run folders, but got `members={self.members!r}`.")
        if not isinstance(self.fusion_hidden_units, tuple):
            raise ValueError(
                f"Expected `fusion_hidden_units` to be a tuple of positive integers, "
                f"but got `fusion_hidden_units={self.fusion_hidden_units!r}`."
            )
        for units in self.fusion_hidden_units:
            check_int("fusion_hidden_units", units)
        check_rate("fusion_dropout", self.fusion_dropout)
        _check_bool("aux_body_part", self.aux_body_part)
        check_number("aux_loss_weight", self.aux_loss_weight, 0.0)
        check_choice("localization_loss", self.localization_loss, LOCALIZATION_LOSSES)
        check_number("localization_weight", self.localization_weight, 0.0)
        check_choice("localization_map", self.localization_map, LOCALIZATION_MAPS)
        check_choice("localization_cells", self.localization_cells, LOCALIZATION_CELLS)
        if self.localization_map == "cbam_gate" and self.localization_loss != "none":
            if not self.attention or self.backbone == FUSION:
                raise ValueError(
                    "`model.localization_map=cbam_gate` supervises a CBAM block's spatial gate, but this model has "
                    "none (attention off, or a fusion): set `model.attention=true` or `model.localization_map=cam`."
                )


@dataclass(frozen=True)
class TrainConfig:
    """How the model is trained: optimiser, schedule, precision, distribution, seed."""

    stage: str = _help("'pretrain' | 'finetune' | 'ensemble' (the method's stages) | 'train' (free-form).", "train")
    epochs: int = _help("Epochs to train.", 35)
    optimizer: str = _help("'torch_sgd' (PyTorch's SGD, the paper's) | 'sgd' (Keras') | 'adamw'.", "torch_sgd")
    learning_rate: float = _help("Initial learning rate (the ensemble's fusion layers).", 1e-4)
    backbone_learning_rate: float | None = _help("Ensemble only: the members' learning rate.", None)
    momentum: float = _help("SGD momentum.", 0.6)
    weight_decay: float = _help("Weight decay (PyTorch's L2 in torch_sgd; decoupled in sgd and adamw).", 1e-3)
    schedule: str = _help("'cosine_restarts' (CosineAnnealingWarmRestarts) | 'constant'.", "cosine_restarts")
    t_0: int = _help("Epochs of the first cosine cycle.", 5)
    t_mult: int = _help("Growth factor of each following cycle.", 2)
    eta_min: float = _help("Lowest learning rate of a cosine cycle.", 0.0)
    per_batch_schedule: bool = _help(
        "Step the schedule every batch (True) or every epoch (False, PyTorch's usual).", False
    )
    class_weights: str = _help("'none' | 'balanced' (weights inverse to the class frequencies).", "none")
    target_sensitivity: float = _help("Sensitivity of the evaluation's screening threshold.", 0.9)
    mixed_precision: str | None = _help("None | 'bf16' | 'fp16' (the logit stays float32).", None)
    xla: bool = _help("Compile the training step with XLA.", False)
    distribute: str = _help(
        "'auto' (Mirrored over >1 GPU, else none) | 'none' | 'mirrored' | 'multi_worker' (TF_CONFIG).", "auto"
    )
    seed: int = _help("Seed of the initialisation, data order and augmentation.", 0)
    deterministic: bool = _help("Deterministic ops and data order (exact resume); slower.", True)

    def __post_init__(self):
        check_choice("stage", self.stage, STAGES)
        check_int("epochs", self.epochs)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_number("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        if self.backbone_learning_rate is not None:
            check_number("backbone_learning_rate", self.backbone_learning_rate, 0.0)
        check_rate("momentum", self.momentum)
        check_number("weight_decay", self.weight_decay, 0.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_int("t_0", self.t_0)
        check_int("t_mult", self.t_mult)
        check_number("eta_min", self.eta_min, 0.0, self.learning_rate)
        _check_bool("per_batch_schedule", self.per_batch_schedule)
        check_choice("class_weights", self.class_weights, CLASS_WEIGHTS)
        check_number("target_sensitivity", self.target_sensitivity, 0.0, 1.0, low_inclusive=False)
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _check_bool("xla", self.xla)
        check_choice("distribute", self.distribute, DISTRIBUTE)
        check_int("seed", self.seed, minimum=0)
        _check_bool("deterministic", self.deterministic)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class ExperimentConfig:
    """An experiment: its name and its data, model and training configs.

    Example:
        >>> from tf_fracture.configs import get_experiment
        >>> config = get_experiment("paper", stage="finetune", backbone="convnext")
        >>> config.train.momentum, config.data.image_size
        (0.8, 584)
        >>> ExperimentConfig.from_dict(config.to_dict()) == config
        True
    """

    name: str = _help("The experiment's name (the default run folder is runs/<name>).", "demo")
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "The data."})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The model."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "The training."})

    def __post_init__(self):
        _check_str("name", self.name)
        for section, cls in SECTIONS.items():
            if not isinstance(getattr(self, section), cls):
                raise ValueError(
                    f"Expected `{section}` to be a {cls.__name__}, but got `{section}={getattr(self, section)!r}`."
                )
        if self.model.backbone == FUSION and self.train.stage in ("pretrain", "finetune"):
            raise ValueError(f"The fusion model is trained in the 'ensemble' stage, not in {self.train.stage!r}.")
        if self.model.aux_body_part and get_dataset_spec(self.data.dataset).body_part_feature is None:
            with_parts = sorted(n for n, s in DATASETS.items() if s.body_part_feature)
            raise ValueError(
                f"`model.aux_body_part` needs a dataset with body parts ({', '.join(with_parts)}), "
                f"but `data.dataset={self.data.dataset!r}` has none."
            )

    @property
    def guided(self) -> bool:
        """Whether the training has a localisation loss: one is configured and the dataset has fracture boxes."""
        return (
            self.model.localization_loss != "none"
            and self.model.backbone != FUSION
            and get_dataset_spec(self.data.dataset).boxes_feature is not None
        )

    def to_dict(self) -> dict:
        """The nested plain-Python form (tuples become lists), as written to ``config.json``."""
        return {
            "name": self.name,
            **{section: _section_to_dict(getattr(self, section)) for section in SECTIONS},
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ExperimentConfig:
        """The config of :meth:`to_dict`'s form; missing fields take defaults, unknown keys raise ``ValueError``."""
        if not isinstance(d, Mapping):
            raise ValueError(f"Expected an experiment config to be a mapping, but got {type(d).__name__}.")
        _reject_unknown(d, ("name", *SECTIONS), "experiment config")
        sections = {}
        for section, section_cls in SECTIONS.items():
            values = d.get(section, {})
            if not isinstance(values, Mapping):
                raise ValueError(f"Expected `{section}` to be a mapping of fields, but got `{section}={values!r}`.")
            names = [f.name for f in dataclasses.fields(section_cls)]
            _reject_unknown(values, names, f"`{section}` config", prefix=f"{section}.")
            hints = typing.get_type_hints(section_cls)
            sections[section] = section_cls(**{k: _from_json_value(hints[k], v) for k, v in values.items()})
        return cls(**({"name": d["name"]} if "name" in d else {}), **sections)

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes :meth:`to_dict` as indented JSON to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ExperimentConfig:
        """The config written by :meth:`to_json`."""
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not a JSON experiment config: {error}") from None
        return cls.from_dict(d)

    def override(self, assignments: Sequence[str]) -> ExperimentConfig:
        """A copy with ``["section.field=value", ...]`` applied (see :func:`~tf_fracture.configs.apply_overrides`)."""
        from tf_fracture.configs.overrides import apply_overrides

        return apply_overrides(self, assignments)


def _section_to_dict(section) -> dict:
    return {f.name: _to_json_value(getattr(section, f.name)) for f in dataclasses.fields(section)}


def _to_json_value(value):
    return list(value) if isinstance(value, tuple) else value


def _from_json_value(hint, value):
    # JSON has no tuples: a list read back for a tuple field becomes a tuple again.
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    return value


def _reject_unknown(d: Mapping, valid: Sequence[str], what: str, prefix: str = "") -> None:
    unknown = sorted(str(k) for k in d if k not in valid)
    if unknown:
        raise ValueError(
            f"Unknown key(s) in the {what}: {', '.join(prefix + k for k in unknown)}. "
            f"Valid keys: {', '.join(prefix + k for k in valid)}."
        )
