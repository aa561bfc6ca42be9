"""FracAtlas (Abedeen et al. 2023): musculoskeletal radiographs labelled fractured / non-fractured.

The published archive is downloaded where there is network access, or read from
``manual_dir`` (``FracAtlas/`` as extracted, or ``FracAtlas.zip``). FracAtlas has no
classification split, so one is made here: deterministic, stratified 80/10/10, with
near-duplicate images kept in one split, and with the images the audit says must not be
trusted left out (unreadable files, a folder label that contradicts ``dataset.csv``,
exact duplicates beyond the first copy, and duplicate groups whose labels disagree).
Every exclusion is listed in the dataset's metadata (``builder.info.metadata``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from tf_fracture.audit.duplicates import find_duplicates
from tf_fracture.audit.records import AuditRecord
from tf_fracture.data.builders import radiograph_info
from tf_fracture.data.io import decode_image, read_each
from tf_fracture.data.splits import grouped_stratified_split

_URL = "https://figshare.com/ndownloader/files/43283628"  # FracAtlas.zip, figshare article 22363012
_FOLDERS = {"Non_fractured": 0, "Fractured": 1}
_REGIONS = ("hand", "leg", "hip", "shoulder")
_VIEWS = ("frontal", "lateral", "oblique")

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FracAtlasConfig(tfds.core.BuilderConfig):
    """Split fractions, seed and the near-duplicate threshold (pHash Hamming distance)."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    seed: int = 0
    near_threshold: int = 4


class Builder(tfds.core.GeneratorBasedBuilder):
    """FracAtlas for fracture classification, with a trustworthy deterministic split."""

    # TFDS finds this file and its README/CITATIONS/dummy_data through the namespace package
    # `tf_fracture_datasets`, which importlib.resources cannot resolve under an editable install.
    code_path = epath.Path(__file__)
    pkg_dir_path = code_path.parent
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [FracAtlasConfig(name="default", description="80/10/10 stratified, duplicates grouped.")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Optional: without network access, download FracAtlas.zip from figshare
    (doi:10.6084/m9.figshare.22363012) elsewhere and place either the zip or the extracted
    `FracAtlas/` folder in `manual_dir`. With network access the archive is downloaded.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        extra = {
            "regions": tfds.features.Sequence(tfds.features.ClassLabel(names=list(_REGIONS))),
            "views": tfds.features.Sequence(tfds.features.ClassLabel(names=list(_VIEWS))),
            "mixed": np.bool_,
            "hardware": np.bool_,
            "multiscan": np.bool_,
            "fracture_count": np.int32,
            "fracture_boxes": tfds.features.Sequence(tfds.features.BBoxFeature()),
        }
        return radiograph_info(
            self,
            ["non_fractured", "fractured"],
            extra,
            homepage="https://doi.org/10.6084/m9.figshare.22363012",
            license="CC BY 4.0",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = _find_root(dl_manager)
        records, excluded = _scan(root)
        keep, duplicate_exclusions, groups = _deduplicate(root, records, self.builder_config.near_threshold)
        excluded.update(duplicate_exclusions)
        config = self.builder_config
        keys = sorted(keep)
        split_of = grouped_stratified_split(
            keys,
            [records[k]["label"] for k in keys],
            [groups.get(k) for k in keys],
            {"train": config.train, "validation": config.validation, "test": config.test},
            seed=config.seed,
        )
        self.info.metadata["excluded"] = dict(sorted(excluded.items()))
        self.info.metadata["near_duplicate_groups"] = sorted({tuple(sorted(v)) for v in _invert(groups).values()})
        for key, reason in sorted(excluded.items()):
            log.warning("FracAtlas: excluded %s: %s", key, reason)
        return {
            split: self._generate_examples(root, [records[k] for k in keys if split_of[k] == split])
            for split in ("train", "validation", "test")
        }

    def _generate_examples(self, root, records):
        for record in records:
            key = record["filename"]
            image = decode_image(_read(root, key), key)
            yield (
                key,
                {
                    "image": image[:, :, None],
                    "label": record["label"],
                    "patient_id": "",
                    "filename": key,
                    "regions": [r for r in _REGIONS if record["row"][r] == "1"],
                    "views": [v for v in _VIEWS if record["row"][v] == "1"],
                    "mixed": record["row"]["mixed"] == "1",
                    "hardware": record["row"]["hardware"] == "1",
                    "multiscan": record["row"]["multiscan"] == "1",
                    "fracture_count": int(record["row"]["fracture_count"]),
                    "fracture_boxes": _boxes(root, key),
                },
            )


def _find_root(dl_manager) -> str:
    try:
        manual = os.fspath(dl_manager.manual_dir)
    except Exception:  # TFDS raises when manual_dir is missing or empty: download instead.
        manual = None
    if manual is not None:
        for candidate in (os.path.join(manual, "FracAtlas"), manual):
            if tf.io.gfile.exists(os.path.join(candidate, "dataset.csv")):
                return candidate
        zipped = os.path.join(manual, "FracAtlas.zip")
        if tf.io.gfile.exists(zipped):
            return _root_in(os.fspath(dl_manager.extract(zipped)))
        raise FileNotFoundError(
            f"manual_dir {manual!r} holds neither FracAtlas/ (with dataset.csv) nor FracAtlas.zip. "
            "Put the extracted folder or the zip there, or remove manual_dir to download."
        )
    return _root_in(os.fspath(dl_manager.download_and_extract(_URL)))


def _root_in(extracted: str) -> str:
    for candidate in (os.path.join(extracted, "FracAtlas"), extracted):
        if tf.io.gfile.exists(os.path.join(candidate, "dataset.csv")):
            return candidate
    raise FileNotFoundError(f"No FracAtlas/dataset.csv in the archive extracted at {extracted!r}.")


def _read(root, key) -> bytes:
    with tf.io.gfile.GFile(os.path.join(root, key), "rb") as f:
        return f.read()


def _scan(root):
    """Rows of dataset.csv joined with the image folders; mismatches are excluded with a reason."""
    with tf.io.gfile.GFile(os.path.join(root, "dataset.csv")) as f:
        rows = {row["image_id"]: row for row in csv.DictReader(f)}
    records, excluded, seen = {}, {}, set()
    for folder, label in _FOLDERS.items():
        for name in sorted(tf.io.gfile.listdir(os.path.join(root, "images", folder))):
            key = f"images/{folder}/{name}"
            seen.add(name)
            row = rows.get(name)
            if row is None:
                excluded[key] = "no row in dataset.csv"
            elif int(row["fractured"]) != label:
                excluded[key] = f"dataset.csv says fractured={row['fractured']} but the file is in images/{folder}/"
            else:
                records[key] = {"filename": key, "label": label, "row": row}
    for name in sorted(set(rows) - seen):
        excluded[f"dataset.csv:{name}"] = "row without an image file"
    return records, excluded


def _deduplicate(root, records, near_threshold):
    """Drops unreadable files, extra exact copies and label-conflicting duplicate groups.

    Returns the kept keys, the exclusions, and a group id per key in a near-duplicate group
    (so that the split keeps such a group together).
    """
    unreadable: dict[str, str] = {}
    # Keep only the hashes and a thumbnail: memory stays flat over thousands of images.
    audit_records = [
        AuditRecord(key=key, label=records[key]["label"], image=image).hashed()
        for key, image in read_each(sorted(records), lambda key: decode_image(_read(root, key), key), unreadable)
    ]
    excluded = {key: f"unreadable: {reason}" for key, reason in unreadable.items()}
    parent: dict[str, str] = {}

    def root_of(key):
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for group in find_duplicates(audit_records, near_threshold=near_threshold):
        members = sorted(group.keys)
        if group.labels_conflict:
            for key in members:
                others = ", ".join(k for k in members if k != key)
                excluded[key] = f"{group.kind} duplicate of {others} with another label"
        elif group.kind == "exact":
            for key in members[1:]:
                excluded.setdefault(key, f"exact duplicate of {members[0]}")
        for key in members[1:]:  # union: every duplicate group lands in one split
            parent[root_of(key)] = root_of(members[0])
    keep = {k for k in records if k not in excluded}
    return keep, excluded, {k: root_of(k) for k in parent if k in keep}


def _invert(groups):
    out: dict[str, list[str]] = {}
    for key, group in groups.items():
        out.setdefault(group, []).append(key)
    return {g: keys for g, keys in out.items() if len(keys) > 1}


def _boxes(root, key):
    """YOLO boxes (class cx cy w h, relative) as TFDS BBoxes (ymin, xmin, ymax, xmax)."""
    path = os.path.join(root, "Annotations", "YOLO", os.path.splitext(os.path.basename(key))[0] + ".txt")
    if not tf.io.gfile.exists(path):
        return []
    boxes = []
    with tf.io.gfile.GFile(path) as f:
        for line in io.StringIO(f.read()):
            parts = line.split()
            if len(parts) != 5:
                continue
            cx, cy, w, h = (float(v) for v in parts[1:])
            ymin, xmin = max(0.0, cy - h / 2), max(0.0, cx - w / 2)
            ymax, xmax = min(1.0, cy + h / 2), min(1.0, cx + w / 2)
            boxes.append(tfds.features.BBox(ymin, xmin, ymax, xmax))
    return boxes
