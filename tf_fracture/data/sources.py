"""Where an experiment's images come from: TFDS splits, their store keys and their metadata.

    ds = load_split(config.data, config.data.train_split)      # examples as dicts (image, label, ...)
    meta = split_metadata("fracatlas", load_split("fracatlas", "test", manual_dir=..., decode_images=False))

The datasets are the TFDS builders of ``datasets/``, registered with TFDS by ``import tf_fracture.datasets``.
Entry points (the command lines) do that import; the library never does (the builders import
tf_fracture, so the library importing them would make a cycle): a script that calls these functions
imports ``tf_fracture.datasets`` once first.
Data that must be downloaded by hand (MURA, the elbow set, and FracAtlas where there is no network)
is prepared from ``manual_dir`` once, into ``data_dir``; later loads read the prepared files.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_fracture.configs.datasets import get_dataset_spec
from tf_fracture.configs.experiment import DataConfig

__all__ = ["load_split", "source_name", "split_metadata", "tfds_builder"]


def tfds_builder(
    data: DataConfig | str, *, builder_config: str | None = None, data_dir: str | None = None
) -> tfds.core.DatasetBuilder:
    """The TFDS builder of ``data`` (a :class:`DataConfig` or a dataset name); keywords win over the config."""
    name, builder_config, data_dir, _ = _resolve(data, builder_config, data_dir, None)
    _check_registered(name)
    return tfds.builder(f"{name}/{builder_config}", data_dir=data_dir)


def load_split(
    data: DataConfig | str,
    split: str,
    *,
    builder_config: str | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    decode_images: bool = True,
) -> tf.data.Dataset:
    """One split as a ``tf.data.Dataset`` of example dicts, in the dataset's fixed order.

    Prepares the dataset first if ``data_dir`` does not hold it yet (from ``manual_dir`` for the
    datasets that need one).

    Args:
        data: a :class:`DataConfig`, or a dataset name in ``tf_fracture.configs.datasets.DATASETS``.
        split: the split's name (e.g. ``data.validation_split``); TFDS slicing (``"train[:10%]"``) works.
        builder_config, data_dir, manual_dir: override the config's fields (or give them with a name).
        decode_images: False leaves ``image`` as encoded PNG bytes (fast, for metadata only).

    Raises:
        FileNotFoundError: the dataset is not prepared and its manual data is missing; the message says to
            pass ``--manual-dir`` (``data.manual_dir``).
        ValueError: an unknown dataset, builder config or split (the valid ones listed).
    """
    name, builder_config, data_dir, manual_dir = _resolve(data, builder_config, data_dir, manual_dir)
    spec = get_dataset_spec(name)
    _check_registered(name)
    configs = [config.name for config in tfds.builder_cls(name).BUILDER_CONFIGS]
    if configs and builder_config not in configs:
        raise ValueError(
            f"Unknown builder config {builder_config!r} of {name}. Valid configs: {', '.join(configs)} "
            "(data.builder_config, or --builder-config)."
        )
    builder = tfds.builder(f"{name}/{builder_config}", data_dir=data_dir)
    if not builder.is_prepared():
        if spec.manual:
            _check_manual_dir(name, manual_dir, builder.data_dir)
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        try:
            builder.download_and_prepare(download_config=download_config)
        except AssertionError as error:  # TFDS' own "manual directory ... does not exist or is empty"
            raise FileNotFoundError(f"{name}: {error} {_manual_hint(name)}") from error
    splits = tuple(builder.info.splits)
    if split.split("[")[0] not in splits:
        raise ValueError(f"Unknown split {split!r} of {name}/{builder_config}. Valid splits: {', '.join(splits)}.")
    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    return builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)


def source_name(data: DataConfig | str, split: str, *, builder_config: str | None = None) -> str:
    """The identity of a split for the preprocessed store's key, e.g. ``"fracatlas/default/1.0.0/test"``."""
    name, builder_config, _, _ = _resolve(data, builder_config, None, None)
    _check_registered(name)
    version = tfds.builder_cls(name).VERSION
    return f"{name}/{builder_config}/{version}/{split}"


def split_metadata(dataset_name: str, split_ds: tf.data.Dataset) -> dict[str, np.ndarray]:
    """Per-example metadata of a split, in the split's order (one pass over it).

    Load the split with ``decode_images=False`` to skip decoding the images.

    Returns:
        ``labels`` (int64), ``filenames`` (str), ``groups`` (str: the dataset's group feature such as MURA's
        study, else the patient id, else the file name), and where the dataset has them ``body_parts``
        (int64 class ids of ``DatasetSpec.body_part_names``; FracAtlas' first region, -1 where an image has
        none) and ``boxes`` (object array of float32 ``(k, 4)`` arrays, normalised ymin, xmin, ymax, xmax).
        Each of the spec's ``metadata_features`` is there too under its own name (object arrays for lists).
    """
    spec = get_dataset_spec(dataset_name)
    columns: dict[str, list] = {}
    for example in tfds.as_numpy(split_ds.map(_without_image)):
        for key, value in example.items():
            columns.setdefault(key, []).append(value)
    if not columns:
        raise ValueError(f"The {dataset_name} split is empty: no metadata to read.")
    count = len(columns["label"])
    out = {
        "labels": np.asarray(columns["label"], dtype=np.int64),
        "filenames": np.asarray([_text(v) for v in columns["filename"]], dtype=str),
    }
    group_feature = spec.group_feature or "patient_id"
    groups = [_text(v) for v in columns.get(group_feature, [b""] * count)]
    out["groups"] = np.asarray([g if g else f for g, f in zip(groups, out["filenames"], strict=True)], dtype=str)
    if spec.body_part_feature:
        parts = columns[spec.body_part_feature]
        out["body_parts"] = np.asarray([_first(p) for p in parts], dtype=np.int64)
    if spec.boxes_feature:
        out["boxes"] = _object_array(
            [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in columns[spec.boxes_feature]]
        )
    for feature in spec.metadata_features:
        values = columns[feature]
        if values and isinstance(values[0], np.ndarray) and values[0].ndim > 0:
            out[feature] = _object_array(values)
        elif values and isinstance(values[0], bytes):
            out[feature] = np.asarray([_text(v) for v in values], dtype=str)
        else:
            out[feature] = np.asarray(values)
    return out


def _resolve(data, builder_config, data_dir, manual_dir):
    if isinstance(data, DataConfig):
        name = data.dataset
        builder_config = builder_config or data.resolved_builder_config()
        data_dir = data_dir or data.data_dir
        manual_dir = manual_dir or data.manual_dir
    elif isinstance(data, str):
        name = data
        builder_config = builder_config or get_dataset_spec(name).default_builder_config
    else:
        raise ValueError(f"Expected `data` to be a DataConfig or a dataset name, but got `data={data!r}`.")
    get_dataset_spec(name)  # an unknown name lists the valid ones
    return name, builder_config, data_dir, manual_dir


def _check_manual_dir(name: str, manual_dir: str | None, prepared_dir) -> None:
    if manual_dir is None:
        raise FileNotFoundError(
            f"{name} is not prepared in {os.fspath(prepared_dir)!r} and no manual_dir is given. {_manual_hint(name)}"
        )
    if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
        raise FileNotFoundError(
            f"{name}: the manual_dir {manual_dir!r} does not exist or is empty. {_manual_hint(name)}"
        )


def _manual_hint(name: str) -> str:
    where = {
        "fracatlas": "the extracted FracAtlas/ folder (with dataset.csv) or FracAtlas.zip",
        "mura": "the extracted MURA-v1.1/ folder or MURA-v1.1.zip",
        "elbow": "the folder of elbow radiographs",
    }.get(name, "the manually downloaded data")
    return f"Pass --manual-dir DIR (or set data.manual_dir=DIR) to the folder holding {where}."


def _without_image(example):
    return {k: v for k, v in example.items() if k != "image"}


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _first(value) -> int:
    value = np.asarray(value).reshape(-1)
    return int(value[0]) if value.size else -1


def _object_array(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def _check_registered(name: str) -> None:
    if name not in tfds.list_builders(with_community_datasets=False):
        raise ValueError(
            f"The TFDS builder {name!r} is not registered: `import tf_fracture.datasets` once before loading "
            "tf-fracture's datasets from Python (the command lines do it for you)."
        )
