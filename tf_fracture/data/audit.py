"""Data audit: class balance, corrupt files, exact and near duplicates, label conflicts, patient leaks.

A test score means little when the same radiograph (or a resized copy of it) sits in both the
training and the test split, when one image carries two labels, or when a patient's images are on
both sides of the split. The audit finds these, names every flagged file, and reports; it never
changes the data. Dataset builders use `find_duplicates` to exclude what must not be trusted before
they split.

Command line (exit code 0 whatever the audit finds, 2 for bad arguments)::

    # a TFDS dataset registered by tf-fracture, every split
    python -m tf_fracture.data.audit fracatlas --data-dir ~/tensorflow_datasets --json audit.json
    # a folder of images, the label of each being its parent folder's name
    python -m tf_fracture.data.audit --folder FracAtlas/images --labels-from-parent --json audit.json

Example:
    >>> records = [AuditRecord("a.png", 0, "train", image=image), AuditRecord("b.png", 1, "test", image=image)]
    >>> report = audit(records)
    >>> print(report.to_text())
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from tf_fracture.data.hashing import (
    HASH_BITS,
    hamming,
    hashes_to_array,
    image_digest,
    near_pairs,
    perceptual_hash,
    popcount64,
)

__all__ = [
    "AuditRecord",
    "AuditReport",
    "ClassBalance",
    "DuplicateGroup",
    "audit",
    "find_duplicates",
    "hamming",
    "image_digest",
    "main",
    "perceptual_hash",
    "records_from_folder",
    "records_from_tfds",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
NO_SPLIT = "(no split)"  # how a record without a split is shown in text


@dataclass(frozen=True)
class AuditRecord:
    """One image of a dataset, as the audit sees it.

    Args:
        key: the file name relative to the dataset root (or the TFDS `filename` feature).
        label: the class index (1 = positive), or None when unlabelled.
        split: the split the image belongs to, or None before splitting.
        patient_id: the patient, or None when unknown.
        image: the decoded pixels, `(H, W)` or `(H, W, 1)` uint8 (colour and uint16 are reduced).
        error: why the file could not be read; such a record is reported as corrupt.
        digest: `image_digest` of the pixels, when already computed (see `hashed`).
        phash: `perceptual_hash` of the pixels, when already computed (see `hashed`).
        thumbnail: the normalised thumbnail that confirms near duplicates (see `thumbnail_vector`).

    Example:
        >>> AuditRecord("images/Fractured/IMG0000019.jpg", 1, split="train", image=read_image(path))
    """

    key: str
    label: int | None
    split: str | None = None
    patient_id: str | None = None
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    error: str | None = None
    digest: str | None = None
    phash: int | None = None
    thumbnail: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"Expected `key` to be a non-empty string (the file name), but got key={self.key!r}.")

    @property
    def hashable(self) -> bool:
        """Whether the record takes part in duplicate search (readable, with pixels or hashes)."""
        return self.error is None and (self.image is not None or (self.digest is not None and self.phash is not None))

    def hashed(self) -> AuditRecord:
        """The same record with `digest` and `phash` filled in and the pixels dropped.

        Keeps memory flat when auditing thousands of images: the audit needs only the hashes.
        """
        if self.error is not None or self.image is None:
            return self
        digest, phash = _hashes_of(self.image)
        thumbnail = thumbnail_vector(_grey_uint8(self.image))
        return dataclasses.replace(self, image=None, digest=digest, phash=phash, thumbnail=thumbnail)


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are copies of one another.

    Args:
        kind: `"exact"` (identical pixels) or `"near"` (perceptual hashes within the threshold,
            joined transitively; the pixels of at least two members differ).
        keys, labels, splits, patient_ids: one entry per member, sorted by key.
        max_distance: the largest pHash Hamming distance between two members (0 for exact groups).
    """

    kind: str
    keys: tuple[str, ...]
    labels: tuple[int | None, ...]
    splits: tuple[str | None, ...]
    patient_ids: tuple[str | None, ...] = ()
    max_distance: int = 0

    @property
    def labels_conflict(self) -> bool:
        """Whether the members carry more than one (known) label."""
        return len({label for label in self.labels if label is not None}) > 1

    @property
    def spans_splits(self) -> bool:
        """Whether the members lie in more than one split (a leak between splits)."""
        return len({split for split in self.splits if split is not None}) > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "spans_splits": self.spans_splits,
            "labels_conflict": self.labels_conflict,
            "max_distance": self.max_distance,
            "files": [
                {"key": k, "label": lab, "split": s, "patient_id": p}
                for k, lab, s, p in zip(self.keys, self.labels, self.splits, self._patients(), strict=True)
            ],
        }

    def _patients(self) -> tuple[str | None, ...]:
        return self.patient_ids or (None,) * len(self.keys)


@dataclass(frozen=True)
class ClassBalance:
    """Label counts of one split (or of all records without a split).

    `counts` maps each label to its number of records, corrupt ones included; `fraction_positive` is
    the share of label 1 among labelled records.
    """

    split: str | None
    total: int
    counts: dict[int, int]
    unlabelled: int = 0
    corrupt: int = 0

    @property
    def fraction_positive(self) -> float | None:
        labelled = sum(self.counts.values())
        return self.counts.get(1, 0) / labelled if labelled else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "total": self.total,
            "counts": {str(label): n for label, n in sorted(self.counts.items())},
            "unlabelled": self.unlabelled,
            "corrupt": self.corrupt,
            "fraction_positive": self.fraction_positive,
        }


@dataclass(frozen=True)
class PatientOverlap:
    """A patient whose images lie in more than one split: split -> the patient's files there."""

    patient_id: str
    files: dict[str, tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        return {"patient_id": self.patient_id, "files": {s: list(keys) for s, keys in self.files.items()}}


@dataclass(frozen=True)
class AuditReport:
    """What `audit` found. `to_text()` for people, `to_dict()` (JSON-serialisable) for programs.

    Args:
        source: what was audited (a dataset name or a folder).
        num_records: how many records (files) were audited.
        near_threshold: the pHash Hamming distance up to which images count as near duplicates.
        class_balance: one entry per split, in the order splits first appear.
        corrupt: `(key, split, error)` of every record that could not be read.
        duplicate_groups: exact groups first, then near groups.
        patient_overlap: patients with images in more than one split.
        label_names: the name of each label index, where known.
        ignored_files: files that were not audited (not images by their extension).
        min_correlation: the thumbnail correlation that confirmed near duplicates (None: unconfirmed).
    """

    source: str
    num_records: int
    near_threshold: int
    class_balance: tuple[ClassBalance, ...]
    corrupt: tuple[tuple[str, str | None, str], ...]
    duplicate_groups: tuple[DuplicateGroup, ...]
    patient_overlap: tuple[PatientOverlap, ...]
    label_names: tuple[str, ...] | None = None
    ignored_files: tuple[str, ...] = ()
    min_correlation: float | None = None

    @property
    def exact_groups(self) -> tuple[DuplicateGroup, ...]:
        return tuple(g for g in self.duplicate_groups if g.kind == "exact")

    @property
    def near_groups(self) -> tuple[DuplicateGroup, ...]:
        return tuple(g for g in self.duplicate_groups if g.kind == "near")

    @property
    def conflicting_groups(self) -> tuple[DuplicateGroup, ...]:
        return tuple(g for g in self.duplicate_groups if g.labels_conflict)

    @property
    def flagged_keys(self) -> tuple[str, ...]:
        """Every file named by a finding (corrupt, duplicate, or a patient in several splits), sorted."""
        keys = {key for key, _, _ in self.corrupt}
        keys.update(k for g in self.duplicate_groups for k in g.keys)
        keys.update(k for p in self.patient_overlap for ks in p.files.values() for k in ks)
        return tuple(sorted(keys))

    def summary(self) -> dict[str, int]:
        exact, near = self.exact_groups, self.near_groups
        return {
            "records": self.num_records,
            "corrupt_files": len(self.corrupt),
            "exact_duplicate_groups": len(exact),
            "exact_duplicate_groups_across_splits": sum(g.spans_splits for g in exact),
            "exact_duplicate_files": sum(len(g.keys) for g in exact),
            "near_duplicate_groups": len(near),
            "near_duplicate_groups_across_splits": sum(g.spans_splits for g in near),
            "near_duplicate_files": sum(len(g.keys) for g in near),
            "label_conflict_groups": len(self.conflicting_groups),
            "patients_in_several_splits": len(self.patient_overlap),
            "flagged_files": len(self.flagged_keys),
            "ignored_files": len(self.ignored_files),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "near_threshold": self.near_threshold,
            "min_correlation": self.min_correlation,
            "label_names": list(self.label_names) if self.label_names is not None else None,
            "summary": self.summary(),
            "class_balance": [b.to_dict() for b in self.class_balance],
            "corrupt_files": [{"key": k, "split": s, "error": e} for k, s, e in self.corrupt],
            "duplicates": {
                "exact": [g.to_dict() for g in self.exact_groups],
                "near": [g.to_dict() for g in self.near_groups],
            },
            "label_conflicts": [g.to_dict() for g in self.conflicting_groups],
            "patient_overlap": [p.to_dict() for p in self.patient_overlap],
            "flagged_files": list(self.flagged_keys),
            "ignored_files": list(self.ignored_files),
        }

    def to_text(self) -> str:
        s = self.summary()
        lines = [
            f"Data audit of {self.source}: {self.num_records} files, near duplicates up to "
            f"{self.near_threshold} of {HASH_BITS} pHash bits apart"
            + (f", confirmed by thumbnail correlation >= {self.min_correlation}" if self.min_correlation else ""),
            "",
            "Summary",
            f"  corrupt files                       {s['corrupt_files']}",
            f"  exact duplicate groups              {s['exact_duplicate_groups']} "
            f"({s['exact_duplicate_files']} files, {s['exact_duplicate_groups_across_splits']} groups across splits)",
            f"  near duplicate groups               {s['near_duplicate_groups']} "
            f"({s['near_duplicate_files']} files, {s['near_duplicate_groups_across_splits']} groups across splits)",
            f"  duplicate groups with label clashes {s['label_conflict_groups']}",
            f"  patients in several splits          {s['patients_in_several_splits']}",
            f"  flagged files                       {s['flagged_files']}",
        ]
        if self.ignored_files:
            lines.append(f"  ignored (not image) files           {s['ignored_files']}")
        lines += ["", *self._balance_lines()]
        if self.corrupt:
            lines += ["", f"Corrupt files ({len(self.corrupt)})"]
            lines += [f"  {_split_name(split):<12} {key}: {error}" for key, split, error in self.corrupt]
        numbers = {id(g): i for i, g in enumerate(self.duplicate_groups, 1)}
        for kind, groups in (("Exact", self.exact_groups), ("Near", self.near_groups)):
            if groups:
                lines += ["", f"{kind} duplicates ({len(groups)} groups)"]
                for g in groups:
                    lines += self._group_lines(numbers[id(g)], g)
        if self.conflicting_groups:
            lines += ["", f"Duplicate groups with label clashes ({len(self.conflicting_groups)})"]
            lines += [
                f"  #{numbers[id(g)]} ({g.kind}): "
                + ", ".join(f"{k} [{self._label_name(lab)}]" for k, lab in zip(g.keys, g.labels, strict=True))
                for g in self.conflicting_groups
            ]
        if self.patient_overlap:
            lines += ["", f"Patients in several splits ({len(self.patient_overlap)})"]
            for p in self.patient_overlap:
                lines.append(f"  patient {p.patient_id}")
                lines += [f"    {split:<12} {', '.join(keys)}" for split, keys in p.files.items()]
        if self.ignored_files:
            lines += ["", f"Ignored files, not images by their extension ({len(self.ignored_files)})"]
            lines += [f"  {key}" for key in self.ignored_files]
        return "\n".join(lines) + "\n"

    def _label_name(self, label: int | None) -> str:
        if label is None:
            return "unlabelled"
        if self.label_names is not None and 0 <= label < len(self.label_names):
            return f"{label}={self.label_names[label]}"
        return str(label)

    def _balance_lines(self) -> list[str]:
        labels = sorted({label for b in self.class_balance for label in b.counts})
        names = [self._label_name(label) for label in labels]
        widths = [max(len(n), 6) for n in names]
        header = "  split        total  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True))
        header += "  unlabelled  corrupt  fraction label 1"
        lines = ["Class balance (counts include corrupt files)", header]
        for b in self.class_balance:
            counts = "  ".join(f"{b.counts.get(label, 0):>{w}}" for label, w in zip(labels, widths, strict=True))
            fraction = "-" if b.fraction_positive is None else f"{b.fraction_positive:.3f}"
            split = _split_name(b.split)
            lines.append(f"  {split:<12} {b.total:>5}  {counts}  {b.unlabelled:>10}  {b.corrupt:>7}  {fraction:>16}")
        return lines

    def _group_lines(self, number: int, group: DuplicateGroup) -> list[str]:
        flags = [f"max distance {group.max_distance}"] if group.kind == "near" else []
        flags += ["ACROSS SPLITS"] * group.spans_splits + ["LABEL CLASH"] * group.labels_conflict
        lines = [f"  #{number} {len(group.keys)} files" + (f" ({', '.join(flags)})" if flags else "")]
        for key, label, split, patient in zip(group.keys, group.labels, group.splits, group._patients(), strict=True):
            who = f"  patient {patient}" if patient is not None else ""
            lines.append(f"     {_split_name(split):<12} {self._label_name(label):<16} {key}{who}")
        return lines


def _split_name(split: str | None) -> str:
    return NO_SPLIT if split is None else split


def _grey_uint8(image: np.ndarray) -> np.ndarray:
    """Reduces an image to what `perceptual_hash` takes: 2-D uint8."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):  # TFDS and PIL decode colour as RGB(A)
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if image.shape[-1] == 3 else cv2.COLOR_RGBA2GRAY)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype == np.uint16:  # min-max stretch, as tf_fracture.data.io does for 16-bit files
        low, high = float(image.min()), float(image.max())
        scaled = (image.astype(np.float64) - low) / (high - low) * 255.0 if high > low else np.zeros(image.shape)
        image = np.rint(scaled).astype(np.uint8)
    return image


def _hashes_of(image: np.ndarray) -> tuple[str, int]:
    return image_digest(image), perceptual_hash(_grey_uint8(image))


def _connected_components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component id (its smallest member) of each of `n` nodes joined by edges `(i, j)`.

    Union-find done in NumPy: every round hooks each root onto the smallest root it shares an
    edge with, then compresses paths by pointer jumping, until no edge joins two components.
    """
    parent = np.arange(n)
    while True:
        low = np.minimum(parent[i], parent[j])
        hooked = parent.copy()
        np.minimum.at(hooked, parent[i], low)
        np.minimum.at(hooked, parent[j], low)
        while True:
            jumped = hooked[hooked]
            if np.array_equal(jumped, hooked):
                break
            hooked = jumped
        if np.array_equal(hooked, parent):
            return parent
        parent = hooked


def _make_group(kind: str, members: list[AuditRecord], max_distance: int = 0) -> DuplicateGroup:
    members = sorted(members, key=lambda r: (r.key, _split_name(r.split)))
    return DuplicateGroup(
        kind=kind,
        keys=tuple(r.key for r in members),
        labels=tuple(r.label for r in members),
        splits=tuple(r.split for r in members),
        patient_ids=tuple(r.patient_id for r in members),
        max_distance=max_distance,
    )


THUMBNAIL_SIZE = 64
MIN_CORRELATION = 0.99


def thumbnail_vector(image: np.ndarray) -> np.ndarray:
    """A 64x64 thumbnail (INTER_AREA) as a zero-mean, unit-norm float32 vector.

    The dot product of two such vectors is the Pearson correlation of the thumbnails. On
    FracAtlas, pHash candidates within 4 bits that are true copies correlate >= 0.992, while
    different radiographs with a similar layout reach at most 0.976.
    """
    small = cv2.resize(image, (THUMBNAIL_SIZE, THUMBNAIL_SIZE), interpolation=cv2.INTER_AREA).astype(np.float64)
    small = small.ravel() - small.mean()
    norm = np.linalg.norm(small)
    return (small / norm if norm > 0 else small).astype(np.float32)


def find_duplicates(
    records: Iterable[AuditRecord], near_threshold: int = 4, min_correlation: float | None = MIN_CORRELATION
) -> list[DuplicateGroup]:
    """Groups of exact duplicates (identical pixels) and of near duplicates (close pHashes).

    Records with an `error`, or with neither pixels nor hashes, are left out. Exact groups hold the
    records that share an `image_digest`. Near groups are the connected components of the graph
    joining images whose perceptual hashes are at most `near_threshold` bits apart, over all pairs;
    a component counts when it holds at least two different images, and it lists every record of
    them, so exact copies of a near duplicate appear in both kinds of group.

    Args:
        records: the images; pixels are hashed unless `digest` and `phash` are already set.
        near_threshold: the largest pHash Hamming distance that counts as near, in `[0, 64]`.
        min_correlation: a pHash candidate pair counts only if the correlation of the two images'
            64x64 thumbnails reaches this (pHash alone pairs different radiographs that share a
            layout); None keeps every candidate. Records given only as hashes are not checked.

    Returns:
        Exact groups, then near groups, each sorted by their first key.

    Example:
        >>> for group in find_duplicates(records):
        ...     if group.labels_conflict or group.spans_splits:
        ...         print(group.kind, group.keys)
    """
    if isinstance(near_threshold, bool) or not isinstance(near_threshold, (int, np.integer)):
        raise ValueError(f"Expected `near_threshold` to be an int, but got near_threshold={near_threshold!r}.")
    if not 0 <= near_threshold <= HASH_BITS:
        raise ValueError(f"Expected `near_threshold` in [0, {HASH_BITS}], but got near_threshold={near_threshold}.")
    by_digest: dict[str, list[AuditRecord]] = {}
    phash_of: dict[str, int] = {}
    thumbnail_of: dict[str, np.ndarray | None] = {}
    for record in records:
        if not record.hashable:
            continue
        if record.digest is None or record.phash is None:
            record = record.hashed()
        by_digest.setdefault(record.digest, []).append(record)
        phash_of.setdefault(record.digest, record.phash)
        thumbnail_of.setdefault(record.digest, record.thumbnail)
    exact = [_make_group("exact", members) for members in by_digest.values() if len(members) > 1]

    digests = list(by_digest)
    hashes = hashes_to_array(phash_of[d] for d in digests)
    i, j, _ = near_pairs(hashes, int(near_threshold))
    if min_correlation is not None and len(i):
        i, j = _confirmed(i, j, [thumbnail_of[d] for d in digests], float(min_correlation))
    component = _connected_components(len(digests), i, j)
    near = []
    for c in np.unique(component[i]):
        nodes = np.flatnonzero(component == c)
        members_hashes = hashes[nodes]
        max_distance = int(popcount64(members_hashes[:, None] ^ members_hashes[None, :]).max())
        members = [r for node in nodes for r in by_digest[digests[node]]]
        near.append(_make_group("near", members, max_distance))
    return sorted(exact, key=lambda g: g.keys) + sorted(near, key=lambda g: g.keys)


def _confirmed(i, j, thumbnails, min_correlation):
    """Keeps the candidate pairs whose thumbnails correlate enough (pairs without thumbnails stay)."""
    keep = np.ones(len(i), bool)
    has = np.array([t is not None for t in thumbnails])
    both = has[i] & has[j]
    if both.any():
        stacked = np.stack([t if t is not None else np.zeros(THUMBNAIL_SIZE**2, np.float32) for t in thumbnails])
        correlation = np.einsum("pk,pk->p", stacked[i[both]], stacked[j[both]])
        keep[np.flatnonzero(both)] = correlation >= min_correlation
    return i[keep], j[keep]


def audit(
    records: Iterable[AuditRecord],
    near_threshold: int = 4,
    *,
    min_correlation: float | None = MIN_CORRELATION,
    source: str = "records",
    label_names: Sequence[str] | None = None,
    ignored_files: Sequence[str] = (),
) -> AuditReport:
    """Audits a dataset: class balance, corrupt files, duplicates, label clashes, patient overlap.

    Args:
        records: one `AuditRecord` per file, across all splits.
        near_threshold: the largest pHash Hamming distance that counts as a near duplicate.
        min_correlation: thumbnail correlation that confirms a pHash candidate (see `find_duplicates`).
        source: what is audited, for the report's title.
        label_names: the name of each label index, for the report.
        ignored_files: files left out of the audit, listed in the report.

    Returns:
        An `AuditReport`; `to_text()` and `to_dict()` name every flagged file.

    Example:
        >>> report = audit(records, near_threshold=4, source="fracatlas")
        >>> print(report.to_text())
    """
    records = list(records)
    splits = list(dict.fromkeys(r.split for r in records))
    balance = []
    for split in splits:
        members = [r for r in records if r.split == split]
        balance.append(
            ClassBalance(
                split=split,
                total=len(members),
                counts=dict(sorted(Counter(r.label for r in members if r.label is not None).items())),
                unlabelled=sum(r.label is None for r in members),
                corrupt=sum(r.error is not None for r in members),
            )
        )
    corrupt = tuple(sorted((r.key, r.split, r.error) for r in records if r.error is not None))

    patients: dict[str, dict[str, list[str]]] = {}
    for r in records:
        if r.patient_id is not None and r.split is not None:
            patients.setdefault(r.patient_id, {}).setdefault(r.split, []).append(r.key)
    overlap = tuple(
        PatientOverlap(pid, {s: tuple(sorted(keys)) for s, keys in by_split.items()})
        for pid, by_split in sorted(patients.items())
        if len(by_split) > 1
    )
    return AuditReport(
        source=source,
        num_records=len(records),
        near_threshold=int(near_threshold),
        class_balance=tuple(balance),
        corrupt=corrupt,
        duplicate_groups=tuple(find_duplicates(records, near_threshold, min_correlation)),
        patient_overlap=overlap,
        label_names=tuple(label_names) if label_names is not None else None,
        ignored_files=tuple(ignored_files),
        min_correlation=None if min_correlation is None else float(min_correlation),
    )


def records_from_folder(
    root: str | os.PathLike, labels_from_parent: bool = False, workers: int | None = None
) -> tuple[list[AuditRecord], tuple[str, ...] | None, tuple[str, ...]]:
    """Reads and hashes every image file under `root` (recursively), in parallel threads.

    Files are found by extension (`IMAGE_EXTENSIONS`, any case) and read with
    `tf_fracture.data.io.read_image`; an unreadable file becomes a record with `error`.

    Args:
        root: the folder.
        labels_from_parent: label each file by the name of the folder that holds it, as an index
            into the sorted folder names; files directly in `root` are unlabelled.
        workers: reading threads (default: the number of CPUs, at most 8).

    Returns:
        `(records, label_names, ignored_files)`: hashed records sorted by key (paths relative to
        `root`, with `/`), the folder names (or None), and the files that are not images.
    """
    from tf_fracture.data.io import ImageReadError, read_image  # imports TensorFlow

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
    label_names = tuple(sorted({p for p in parents.values() if p is not None})) if labels_from_parent else None
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
        records = list(pool.map(load, sorted(keys)))
    return records, label_names, tuple(sorted(ignored))


def records_from_tfds(name: str, data_dir: str | None = None) -> tuple[list[AuditRecord], tuple[str, ...] | None]:
    """Reads and hashes every example of every split of a prepared TFDS dataset.

    Uses the features `image`, `label` (a `ClassLabel`, whose names are returned), and where the
    dataset has them `patient_id` and `filename` (the record's key; without it `<split>/<index>`).
    Images are decoded here rather than by TFDS, so that one undecodable example becomes a record
    with `error` instead of stopping the audit.

    Raises:
        ValueError: the dataset is unknown, not prepared in `data_dir`, or has no `image` feature.
    """
    import tensorflow_datasets as tfds

    from tf_fracture.data.io import ImageReadError, decode_image

    try:
        import tf_fracture.datasets  # noqa: F401  (registers our builders)
    except ImportError as e:
        # Datasets registered elsewhere (TFDS's own, a user's) can still be audited.
        warnings.warn(
            f"tf-fracture's datasets are not registered ({e}); only other TFDS datasets are found.", stacklevel=2
        )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"Unknown TFDS dataset {name!r}: {e}") from None
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
    decoders = {"image": tfds.decode.SkipDecoding()} if encoded else None

    records = []
    for split in builder.info.splits:
        dataset = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
        for index, example in enumerate(tfds.as_numpy(dataset)):
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
    return records, label_names


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m tf_fracture.data.audit",
        description=(
            "Audit a dataset: class balance per split, corrupt files, exact and near duplicates (perceptual hash) "
            "within and across splits, duplicates with different labels, and patients in several splits. "
            "Prints a report naming every flagged file; exits 0 whatever it finds."
        ),
    )
    parser.add_argument("dataset", nargs="?", help="a TFDS dataset name (ours are registered automatically)")
    parser.add_argument("--data-dir", help="the TFDS data directory the dataset was built in")
    parser.add_argument("--folder", help="audit every image file under this folder instead of a TFDS dataset")
    parser.add_argument(
        "--labels-from-parent",
        action="store_true",
        help="with --folder: label each file by its parent folder's name (indices in sorted name order)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    parser.add_argument(
        "--min-correlation",
        type=float,
        default=MIN_CORRELATION,
        metavar="R",
        help="thumbnail correlation that confirms a pHash candidate; -1 keeps every candidate (default: 0.99)",
    )
    parser.add_argument(
        "--near-threshold",
        type=int,
        default=4,
        metavar="N",
        help="largest pHash Hamming distance (of 64 bits) counted as a near duplicate (default: 4)",
    )
    args = parser.parse_args(argv)
    if (args.dataset is None) == (args.folder is None):
        parser.error("give either a TFDS dataset name or --folder PATH (exactly one of them)")
    if args.folder is not None:
        if args.data_dir is not None:
            parser.error("--data-dir applies to TFDS datasets, not to --folder")
        if not os.path.isdir(args.folder):
            parser.error(f"--folder {args.folder!r} is not a directory")
    elif args.labels_from_parent:
        parser.error("--labels-from-parent applies to --folder only (TFDS datasets carry their labels)")
    if not 0 <= args.near_threshold <= HASH_BITS:
        parser.error(f"--near-threshold must be in [0, {HASH_BITS}], but got {args.near_threshold}")
    return parser, args


def main(argv: Sequence[str] | None = None) -> int:
    parser, args = _parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported, to keep the report readable
    start = time.perf_counter()
    if args.folder is not None:
        records, label_names, ignored = records_from_folder(args.folder, args.labels_from_parent)
        source = f"folder {args.folder}"
    else:
        try:
            records, label_names = records_from_tfds(args.dataset, args.data_dir)
        except ValueError as e:
            parser.error(str(e))
        ignored = ()
        source = f"TFDS dataset {args.dataset}"
    read_s = time.perf_counter() - start
    report = audit(
        records,
        args.near_threshold,
        min_correlation=None if args.min_correlation <= -1 else args.min_correlation,
        source=source,
        label_names=label_names,
        ignored_files=ignored,
    )
    total_s = time.perf_counter() - start
    print(report.to_text(), end="")
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
            f.write("\n")
        print(f"Wrote the JSON report to {args.json}", file=sys.stderr)
    print(f"Audited {len(records)} files in {total_s:.1f} s (reading and hashing {read_s:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
