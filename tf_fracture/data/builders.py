"""What the TFDS builders in ``datasets/`` share: the features every radiograph has, and their info.

Every builder's examples carry a greyscale PNG ``"image"`` ``(H, W, 1)`` uint8, its ``"label"`` (0 no
fracture or abnormality, 1 one), the ``"patient_id"`` ("" where the source has none) and the source
``"filename"``; a builder adds its own (FracAtlas' regions and boxes, MURA's body part, ...). The read
loop that skips and lists unreadable files is `tf_fracture.data.io.read_each`.

Imports TensorFlow Datasets: for the builders, not for the training code.

Example:
    >>> def _info(self):
    ...     return radiograph_info(self, ["negative", "positive"], {"body_part": tfds.features.ClassLabel(...)})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["grey_png", "radiograph_features", "radiograph_info"]


def grey_png() -> tfds.features.Image:
    """A greyscale uint8 image of any size, stored as PNG (lossless)."""
    return tfds.features.Image(shape=(None, None, 1), dtype=np.uint8, encoding_format="png")


def radiograph_features(label_names: Sequence[str], extra: Mapping | None = None) -> tfds.features.FeaturesDict:
    """``image``, ``label`` (named ``label_names``, negative first), ``patient_id``, ``filename``, then ``extra``.

    Raises:
        ValueError: for other than two label names, or an extra feature named like a shared one.
    """
    if len(label_names) != 2:
        raise ValueError(f"Expected two label names (negative, positive), but got {list(label_names)}.")
    features = {
        "image": grey_png(),
        "label": tfds.features.ClassLabel(names=list(label_names)),
        "patient_id": tfds.features.Text(),  # "" where the source has none
        "filename": tfds.features.Text(),
    }
    clash = sorted(set(features) & set(extra or {}))
    if clash:
        raise ValueError(f"Extra features {clash} would replace the shared features of the same name: rename them.")
    return tfds.features.FeaturesDict({**features, **dict(extra or {})})


def radiograph_info(
    builder: tfds.core.DatasetBuilder, label_names: Sequence[str], extra: Mapping | None = None, **info
) -> tfds.core.DatasetInfo:
    """The builder's `DatasetInfo`: `radiograph_features`, ``(image, label)`` as supervised keys, and ``info``
    (``homepage``, ``license``, ...)."""
    return builder.dataset_info_from_configs(
        features=radiograph_features(label_names, extra),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict(),
        **info,
    )
