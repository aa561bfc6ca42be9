"""The datasets an experiment can name, with what the training and evaluation read from each.

TF-free: a static description of the TFDS builders in ``datasets/`` (registered by
``import tf_fracture.datasets``). ``tests/test_configs.py`` checks it against the builders themselves,
so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["DATASETS", "DatasetSpec", "get_dataset_spec"]


@dataclass(frozen=True)
class DatasetSpec:
    """What the experiment code needs to know about one TFDS dataset.

    Args:
        name: the TFDS name (``tfds.load(name)``).
        default_builder_config: the builder config used when an experiment names none. For MURA it is
            ``"grouped_val"`` (train/validation/test), not TFDS' default ``"official"`` (train/valid).
        splits: the names of the (train, validation, test) splits of the default builder config.
        body_part_feature: the feature that says which body part an image shows (the auxiliary
            multi-task head's target), or None. FracAtlas' ``regions`` is a list: its first region is used.
        body_part_names: the class names of ``body_part_feature`` in label order (empty without one).
        group_feature: the feature whose images are scored together (MURA's studies), or None.
        boxes_feature: the feature holding fracture boxes (normalised ymin, xmin, ymax, xmax), or None.
        metadata_features: further per-image features kept beside the predictions (for reports and
            subgroup analyses; never model inputs: FracAtlas's ``fracture_count`` is the label itself).
        manual: whether the data must be downloaded by hand into ``manual_dir`` (where there is
            no network access, FracAtlas too).
    """

    name: str
    default_builder_config: str
    splits: tuple[str, str, str] = ("train", "validation", "test")
    body_part_feature: str | None = None
    body_part_names: tuple[str, ...] = ()
    group_feature: str | None = None
    boxes_feature: str | None = None
    metadata_features: tuple[str, ...] = field(default=())
    manual: bool = False

    def __post_init__(self):
        if (self.body_part_feature is None) != (not self.body_part_names):
            raise ValueError(f"Dataset {self.name!r}: give body_part_names exactly when body_part_feature is set.")


DATASETS = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            DatasetSpec(
                "synthetic_xray",
                "default",
                boxes_feature="fracture_boxes",
                metadata_features=("patient_id", "fracture_kind", "num_bones"),
            ),
            DatasetSpec(
                "fracatlas",
                "default",
                body_part_feature="regions",
                body_part_names=("hand", "leg", "hip", "shoulder"),
                boxes_feature="fracture_boxes",
                metadata_features=("regions", "views", "mixed", "hardware", "multiscan", "fracture_count"),
                manual=True,
            ),
            DatasetSpec(
                "mura",
                "grouped_val",
                body_part_feature="body_part",
                body_part_names=(
                    "XR_ELBOW",
                    "XR_FINGER",
                    "XR_FOREARM",
                    "XR_HAND",
                    "XR_HUMERUS",
                    "XR_SHOULDER",
                    "XR_WRIST",
                ),
                group_feature="study_id",
                metadata_features=("patient_id", "study_id", "body_part"),
                manual=True,
            ),
            DatasetSpec("elbow", "default", metadata_features=("patient_id", "view"), manual=True),
        )
    }
)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` named ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown dataset {name!r}. Valid datasets: {', '.join(sorted(DATASETS))}.") from None
