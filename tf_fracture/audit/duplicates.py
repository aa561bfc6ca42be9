"""Exact and near duplicate search over `AuditRecord`s: `find_duplicates` and its `DuplicateGroup`s.

Exact duplicates share their decoded pixels (`image_digest`). Near duplicates are found in two
steps: perceptual hashes within a few bits of each other are candidates, and a candidate pair
counts only if the images' 64x64 thumbnails correlate (pHash alone pairs different radiographs
with a similar layout). Candidate pairs are joined transitively into groups.

Dataset builders use this module to exclude what must not be trusted before they split, so it
imports NumPy, OpenCV and the hashes only: no TensorFlow, no TFDS, no dataset registry (a test
checks this).

Example:
    >>> for group in find_duplicates(record.hashed() for record in records):  # doctest: +SKIP
    ...     if group.labels_conflict or group.spans_splits:
    ...         print(group.kind, group.keys)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tf_fracture.audit.records import THUMBNAIL_SIZE, AuditRecord
from tf_fracture.data.hashing import HASH_BITS, hashes_to_array, near_pairs, popcount64
from tf_fracture.validation import check_int

__all__ = ["MIN_CORRELATION", "DuplicateGroup", "find_duplicates"]

MIN_CORRELATION = 0.99


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

    @property
    def patients(self) -> tuple[str | None, ...]:
        """The members' patients (None where unknown), one per key."""
        return self.patient_ids or (None,) * len(self.keys)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "spans_splits": self.spans_splits,
            "labels_conflict": self.labels_conflict,
            "max_distance": self.max_distance,
            "files": [
                {"key": k, "label": lab, "split": s, "patient_id": p}
                for k, lab, s, p in zip(self.keys, self.labels, self.splits, self.patients, strict=True)
            ],
        }


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
        >>> for group in find_duplicates(records):  # doctest: +SKIP
        ...     if group.labels_conflict or group.spans_splits:
        ...         print(group.kind, group.keys)
    """
    check_int("near_threshold", near_threshold, minimum=0, maximum=HASH_BITS)
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


def _make_group(kind: str, members: list[AuditRecord], max_distance: int = 0) -> DuplicateGroup:
    members = sorted(members, key=lambda r: (r.key, "" if r.split is None else r.split))
    return DuplicateGroup(
        kind=kind,
        keys=tuple(r.key for r in members),
        labels=tuple(r.label for r in members),
        splits=tuple(r.split for r in members),
        patient_ids=tuple(r.patient_id for r in members),
        max_distance=max_distance,
    )


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
