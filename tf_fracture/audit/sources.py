"""Where audit records come from: a folder of image files, or a prepared TFDS dataset.

Each reader returns an `AuditSource`: the hashed records and what the report needs to name their
labels. Neither imports the project's dataset registry: `records_from_tfds` takes a builder, or
the name of a dataset already registered (the command line registers tf-fracture's builders first).
TensorFlow and TFDS are imported only inside `records_from_tfds`, when it runs.

Example:
    >>> source = records_from_folder("FracAtlas/images", labels_from_parent=True)  # Fractured = 1
    >>> report = audit(source.records, label_names=source.label_names, positive_label=source.positive_label)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tf_fracture.audit.labels import binary_label_names, match_class, positive_index
from tf_fracture.audit.records import AuditRecord
from tf_fracture.data.io import ImageReadError, read_image

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

__all__ = ["IMAGE_EXTENSIONS", "AuditSource", "records_from_folder", "records_from_tfds"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


@dataclass(frozen=True)
class AuditSource:
    """Hashed records read from one source, with the names of their labels.

    Args:
        name: what was read, for the report's title (e.g. `"folder FracAtlas/images"`).
        records: one hashed record per file, sorted by key.
        label_names: the name of each label index, or None when unknown (or unlabelled).
        positive_label: the index of the positive class, or None when no class is the positive one.
        ignored_files: files that were not read (not images by their extension).
    """

    name: str
    records: tuple[AuditRecord, ...]
    label_names: tuple[str, ...] | None = None
    positive_label: int | None = None
    ignored_files: tuple[str, ...] = ()


def records_from_folder(
    root: str | os.PathLike,
    labels_from_parent: bool = False,
    positive: str | None = None,
    workers: int | None = None,
) -> AuditSource:
    """Reads and hashes every image file under `root` (recursively), in parallel threads.

    Files are found by extension (`IMAGE_EXTENSIONS`, any case) and read with
    `tf_fracture.data.io.read_image`; an unreadable file becomes a record with `error`.

    With `labels_from_parent`, each file is labelled by the name of the folder that holds it (files
    directly in `root` are unlabelled). Two class folders are numbered `(negative, positive)`: the
    positive one is label 1, named by `positive` or recognised by its name
    (`tf_fracture.audit.labels`); FracAtlas's `Non_fractured` is 0 and `Fractured` 1. Any other number
    of folders is numbered in sorted order, and only `positive` makes one of them the positive class.

    Args:
        root: the folder.
        labels_from_parent: label each file by its parent folder's name.
        positive: the name of the positive class's folder (exact, or ignoring case).
        workers: reading threads (default: the number of CPUs, at most 8).

    Returns:
        An `AuditSource` whose keys are paths relative to `root`, with `/`.

    Raises:
        ValueError: `positive` without `labels_from_parent`, `positive` naming no folder, or two
            folders of which none is recognised as the positive one (the message lists them).
    """
    root = os.fspath(root)
    keys, ignored = [], []
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            key = os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")
            if name.startswith("."):
                continue
            (keys if name.lower().endswith(IMAGE_EXTENSIONS) else ignored).append(key)
    parents = {key: key.rpartition("/")[0].rpartition("/")[2] or None for key in keys}
    label_names, positive_label = _folder_classes(
        sorted({p for p in parents.values() if p}), labels_from_parent, positive
    )
    index = {name: i for i, name in enumerate(label_names or ())}

    def load(key: str) -> AuditRecord:
        label = index.get(parents[key]) if labels_from_parent else None
        try:
            image = read_image(os.path.join(root, key))
        except ImageReadError as e:
            return AuditRecord(key, label, error=e.reason)
        return AuditRecord(key, label, image=image).hashed()

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # decoding and hashing release the GIL
        records = tuple(pool.map(load, sorted(keys)))
    return AuditSource(f"folder {root}", records, label_names, positive_label, tuple(sorted(ignored)))


def _folder_classes(
    folders: list[str], labels_from_parent: bool, positive: str | None
) -> tuple[tuple[str, ...] | None, int | None]:
    """`(label_names, positive_label)` for the class folders (see `records_from_folder`)."""
    if not labels_from_parent:
        if positive is not None:
            raise ValueError("A positive class needs labels: pass labels_from_parent=True (--labels-from-parent).")
        return None, None
    if len(folders) == 2:
        try:
            return binary_label_names(folders, positive), 1
        except ValueError as e:
            raise ValueError(f"Class folders {folders}: {e}") from None
    if positive is None:
        return tuple(folders), None
    return tuple(folders), match_class(folders, positive)


def records_from_tfds(
    dataset: str | tfds.core.DatasetBuilder, data_dir: str | None = None, positive: str | None = None
) -> AuditSource:
    """Reads and hashes every example of every split of a prepared TFDS dataset.

    Uses the features `image`, `label` (a `ClassLabel`, whose names are returned), and where the
    dataset has them `patient_id` and `filename` (the record's key; without it `<split>/<index>`).
    Images are decoded here rather than by TFDS, so that one undecodable example becomes a record
    with `error` instead of stopping the audit.

    Args:
        dataset: a builder, or the name of a registered dataset (import `tf_fracture.datasets`
            first to find tf-fracture's).
        data_dir: the TFDS data directory the dataset was built in (with a name only).
        positive: the positive class's name; None to recognise it among two label names (see
            `tf_fracture.audit.labels.positive_index`; without a match there is no positive class).

    Raises:
        ValueError: the dataset is unknown, not prepared in `data_dir`, has no `image` feature, or
            `positive` names none of its labels.
    """
    import tensorflow_datasets as tfds

    from tf_fracture.data.io import ImageReadError, decode_image

    if isinstance(dataset, str):
        try:
            builder = tfds.builder(dataset, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise ValueError(f"Unknown TFDS dataset {dataset!r}: {e}") from None
        name = dataset
    else:
        builder, name = dataset, dataset.name
    if not builder.is_prepared():
        raise ValueError(
            f"Dataset {name!r} is not prepared in {builder.data_dir!r}. Build it first (`tfds build`, or "
            f"`tfds.builder({name!r}).download_and_prepare()`), or pass the --data-dir it was built in."
        )
    features = builder.info.features
    if "image" not in features:
        raise ValueError(f"Expected dataset {name!r} to have an `image` feature, but it has {sorted(features.keys())}.")
    encoded = isinstance(features["image"], tfds.features.Image)
    label_names = (
        tuple(features["label"].names) if "label" in features and hasattr(features["label"], "names") else None
    )
    if label_names is None and positive is not None:
        raise ValueError(f"Dataset {name!r} has no class names, so --positive {positive!r} names no class.")
    positive_label = positive_index(label_names, positive) if label_names is not None else None
    decoders = {"image": tfds.decode.SkipDecoding()} if encoded else None

    records = []
    for split in builder.info.splits:
        examples = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
        for index, example in enumerate(tfds.as_numpy(examples)):
            key = _text(example.get("filename")) or f"{split}/{index}"
            label = int(example["label"]) if "label" in example else None
            patient = _text(example.get("patient_id")) or None
            if encoded:
                try:
                    image = decode_image(bytes(example["image"]), key)
                except ImageReadError as e:
                    records.append(AuditRecord(key, label, split, patient, error=e.reason))
                    continue
            else:
                image = np.asarray(example["image"])
            records.append(AuditRecord(key, label, split, patient, image=image).hashed())
    return AuditSource(f"TFDS dataset {name}", tuple(records), label_names, positive_label)


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
