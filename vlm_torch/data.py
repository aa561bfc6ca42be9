"""The VLM track's data: the CNN side's exported splits, read without TensorFlow.

The CNN side writes a prepared TFDS split once (``tf-fracture export-split``):

    OUT/dataset.json                     dataset, builder config and version, split sizes
    OUT/<split>/manifest.csv             id, file, label (+ filename, group, body part ... where there are)
    OUT/<split>/images/<id>.png          the original greyscale image, lossless

so that a CNN test image is a VLM test image. Here:

    records = read_split("exports/fracatlas", "test")
    skipped = {}
    for batch, images in iter_batches(records, 8, preprocess=False, skipped=skipped):
        ...                              # images: 2-D uint8 arrays, any size
    # skipped: {path: reason} of the unreadable images (listed once in the log as well)

Preprocessing (``preprocess=True``) is the CNN side's: resize to the model's image size, CLAHE (clip
2.5, 4x4 tiles), unsharp masking (5x5 Gaussian, amount 2), with ``tf_fracture.data.preprocess``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from tf_fracture.data.io import list_skipped, read_each, read_image
from tf_fracture.data.preprocess import PreprocessConfig, clahe, unsharp_mask
from tf_fracture.data.preprocess import preprocess as cnn_preprocess

MANIFEST = "manifest.csv"
DATASET_INFO = "dataset.json"
REQUIRED_COLUMNS = ("id", "file", "label")
# The CNN side's defaults (tf_fracture.configs.DataConfig): CLAHE 2.5 on 4x4 tiles, unsharp 5x5, amount 2.
DEFAULT_PREPROCESS = MappingProxyType(
    {"clahe_clip_limit": 2.5, "clahe_grid": 4, "unsharp_kernel": 5, "unsharp_amount": 2.0, "resize_mode": "stretch"}
)


@dataclass(frozen=True)
class Record:
    """One image of an exported split.

    Args:
        id: the image's id in the export (unique in the split; the PNG's name without ``.png``).
        path: the image file (absolute or relative to the working directory).
        label: 0 (no injury) or 1 (fracture or dislocation).
        extra: the manifest's other columns (original filename, patient / study group, body part, ...).
    """

    id: str
    path: str
    label: int
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)


def read_dataset_info(data_dir: str | os.PathLike) -> dict:
    """``dataset.json`` of an export: ``dataset``, ``builder_config``, ``version``, ``splits`` ({name: sizes})."""
    path = os.path.join(data_dir, DATASET_INFO)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No {DATASET_INFO} in {os.fspath(data_dir)!r}: is it an export? Write one with "
            "`tf-fracture export-split --dataset NAME --out DIR` (TensorFlow side)."
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def available_splits(data_dir: str | os.PathLike) -> list[str]:
    """The splits of an export that have a manifest, sorted."""
    if not os.path.isdir(data_dir):
        return []
    return sorted(s for s in os.listdir(data_dir) if os.path.isfile(os.path.join(data_dir, s, MANIFEST)))


def read_split(data_dir: str | os.PathLike, split: str) -> list[Record]:
    """The records of one exported split, in the manifest's order (the TFDS split's fixed order).

    Raises:
        FileNotFoundError: no manifest for ``split`` (the message lists the splits there are), or images the
            manifest names are missing (an interrupted export: rerun it, it resumes).
        ValueError: the manifest lacks a column, repeats an id, or has a label other than 0 / 1.
    """
    split_dir = os.path.join(data_dir, split)
    manifest = os.path.join(split_dir, MANIFEST)
    if not os.path.isfile(manifest):
        there = available_splits(data_dir)
        raise FileNotFoundError(
            f"No split {split!r} in {os.fspath(data_dir)!r} (no {os.path.join(split, MANIFEST)}); "
            + (f"the splits there: {', '.join(there)}. " if there else "it holds no exported split. ")
            + "Export it with `tf-fracture export-split --split "
            + f"{split} --out {os.fspath(data_dir)} ...`."
        )
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing_columns = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing_columns:
            raise ValueError(
                f"{manifest}: missing column(s) {', '.join(missing_columns)}; a manifest needs "
                f"{', '.join(REQUIRED_COLUMNS)}. Re-export the split."
            )
        rows = list(reader)
    records, seen, missing_files = [], set(), []
    for line, row in enumerate(rows, start=2):
        if row["label"] not in ("0", "1"):
            raise ValueError(
                f"{manifest}, line {line} (id {row['id']!r}): label {row['label']!r} is not 0 (no injury) or "
                "1 (fracture or dislocation). Fix the manifest or re-export the split."
            )
        if row["id"] in seen:
            raise ValueError(f"{manifest}, line {line}: id {row['id']!r} appears twice. Re-export the split.")
        seen.add(row["id"])
        path = os.path.join(split_dir, row["file"])
        if not os.path.isfile(path):
            missing_files.append(row["file"])
        extra = {k: v for k, v in row.items() if k not in REQUIRED_COLUMNS and k is not None}
        records.append(Record(id=row["id"], path=path, label=int(row["label"]), extra=MappingProxyType(extra)))
    if missing_files:
        shown = ", ".join(missing_files[:5]) + (f" and {len(missing_files) - 5} more" if len(missing_files) > 5 else "")
        raise FileNotFoundError(
            f"{manifest} names {len(missing_files)} image(s) missing from {split_dir!r}: {shown}. "
            "The export was interrupted or files were moved: rerun the export (it resumes)."
        )
    return records


def preprocess_config(image_size: int) -> PreprocessConfig:
    """The CNN side's preprocessing (`DEFAULT_PREPROCESS`) at ``image_size``."""
    return PreprocessConfig(image_size, **DEFAULT_PREPROCESS)


def load_image(record: Record, *, preprocess: bool, image_size: int | None = None) -> np.ndarray:
    """A record's image as a 2-D uint8 array, optionally preprocessed as the CNN side does.

    Args:
        record: from :func:`read_split`.
        preprocess: apply CLAHE + unsharp masking (``DEFAULT_PREPROCESS``).
        image_size: with ``preprocess``, resize to ``(image_size, image_size)`` first, as the CNN side does (the
            model's image size: CLAHE's tiles and the unsharp kernel then act at the scale the model sees);
            None keeps the original size. Without ``preprocess`` the image is returned as stored.

    Raises:
        ImageReadError: the file is missing, truncated or not an image.
    """
    image = read_image(record.path)
    if not preprocess:
        return image
    if image_size is not None:
        return cnn_preprocess(image, preprocess_config(image_size))
    image = clahe(image, DEFAULT_PREPROCESS["clahe_clip_limit"], DEFAULT_PREPROCESS["clahe_grid"])
    return unsharp_mask(image, DEFAULT_PREPROCESS["unsharp_kernel"], DEFAULT_PREPROCESS["unsharp_amount"])


def iter_images(
    records: Iterable[Record],
    *,
    preprocess: bool,
    image_size: int | None = None,
    skipped: dict[str, str] | None = None,
) -> Iterator[tuple[Record, np.ndarray]]:
    """``(record, image)`` for every readable record; an unreadable image is skipped and recorded in ``skipped``
    as ``{path: reason}`` (and logged once at the end)."""
    skipped = {} if skipped is None else skipped
    before = set(skipped)
    yield from read_each(
        records,
        lambda r: load_image(r, preprocess=preprocess, image_size=image_size),
        skipped,
        key=lambda r: r.path,
    )
    new = {k: v for k, v in skipped.items() if k not in before}
    list_skipped("vlm_torch.data", "unreadable image(s), skipped", new)


def iter_batches(
    records: Iterable[Record],
    batch_size: int,
    *,
    preprocess: bool,
    image_size: int | None = None,
    skipped: dict[str, str] | None = None,
) -> Iterator[tuple[list[Record], list[np.ndarray]]]:
    """Batches of up to ``batch_size`` readable ``(records, images)``, in order; bad images are skipped
    (see :func:`iter_images`), so a batch is never short except the last one."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch: list[Record] = []
    images: list[np.ndarray] = []
    for record, image in iter_images(records, preprocess=preprocess, image_size=image_size, skipped=skipped):
        batch.append(record)
        images.append(image)
        if len(batch) == batch_size:
            yield batch, images
            batch, images = [], []
    if batch:
        yield batch, images


__all__ = [
    "DATASET_INFO",
    "DEFAULT_PREPROCESS",
    "MANIFEST",
    "Record",
    "available_splits",
    "iter_batches",
    "iter_images",
    "load_image",
    "preprocess_config",
    "read_dataset_info",
    "read_split",
]


def take(records: list, limit: int | None) -> list:
    """The first ``limit`` records (all of them for None)."""
    return list(records) if limit is None else list(records)[:limit]
