"""A store of preprocessed images with random access, in memory or in a keyed folder on disk.

The training pipeline draws every epoch as a permutation of the whole epoch, so it needs the image
at any index, not a stream. A store holds ``images`` ``(N, S, S, 1)`` uint8 and ``labels`` ``(N,)``
int64, after the deterministic preprocessing, plus a manifest that says what produced them, and
optionally further per-image integer ``targets`` (e.g. the body part of a multi-task head; kept in
memory only, attached with :meth:`PreprocessedStore.with_targets`: they do not decide the stored bytes).

* In memory: NumPy arrays (fast; the set must fit in RAM).
* On disk: ``<cache_dir>/<key>/`` with ``images.u8`` (raw bytes, read through a memory map, so a set
  larger than RAM works: MURA at 384 px is about 5.4 GB), ``labels.npy`` and ``manifest.json``.
  ``key`` is a hash of everything that decides the stored bytes (the pipeline computes it: the
  source's identity and a fingerprint of its content, the full preprocessing configuration and the
  preprocessing's output on the first examples). One cache directory therefore serves any number of
  datasets, splits and presets, and a store is never read for anything but what produced it.

A store is written into a hidden ``.<key>.partial-*`` folder and renamed into place when complete,
so an interrupted run never leaves a half store to be read (at most that hidden folder, safe to
delete), and two runs building the same store do not mix their bytes.

This module needs no TensorFlow: the VLM track can read the same stores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

STORE_FORMAT = 1
MANIFEST = "manifest.json"
IMAGES = "images.u8"
LABELS = "labels.npy"


@dataclass(frozen=True)
class PreprocessedStore:
    """Preprocessed images and labels of one split, indexable at random.

    Args:
        images: ``(N, S, S, 1)`` uint8 (an array or a read-only memory map).
        labels: ``(N,)`` int64.
        manifest: what produced the store (see :func:`store_key`).
        path: the folder on disk, or None for a store in memory.
        targets: further per-image integer targets by name, each ``(N,)`` int32 in store order
            (see :meth:`with_targets`); empty by default.
    """

    images: np.ndarray
    labels: np.ndarray
    manifest: Mapping = field(default_factory=dict)
    path: str | None = None
    targets: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.images.shape[1:])

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` at ``indices`` (any order; a fresh array, not a view of the store)."""
        indices = np.asarray(indices, np.int64)
        return np.ascontiguousarray(self.images[indices]), self.labels[indices]

    def with_targets(self, targets: Mapping[str, np.ndarray]) -> PreprocessedStore:
        """A copy that also holds ``targets``: per-image integer arrays ``(N,)`` in the store's (the source's) order.

        Example:
            >>> store = store.with_targets({"body_part": split_metadata("mura", split)["body_parts"]})
        """
        checked = dict(self.targets)
        for name, values in targets.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"Expected target names to be non-empty strings, but got {name!r}.")
            values = np.asarray(values)
            if values.shape != (len(self),) or not (values.dtype.kind in "iu" or values.size == 0):
                raise ValueError(
                    f"Expected target {name!r} to be {len(self)} integers (one per image, in the source's order), "
                    f"but got an array of shape {values.shape} and dtype {values.dtype}."
                )
            if values.size and (values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max):
                raise ValueError(f"Target {name!r} holds values outside int32.")
            values = values.astype(np.int32)
            values.setflags(write=False)
            checked[name] = values
        return dataclasses.replace(self, targets=MappingProxyType(checked))

    def gather_targets(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """Each of :attr:`targets` at ``indices``, in the order of ``targets``' names."""
        indices = np.asarray(indices, np.int64)
        return tuple(values[indices] for values in self.targets.values())


def store_key(identity: Mapping) -> str:
    """SHA-256 (hex) of a JSON-serialisable description of what produces a store."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def store_path(cache_dir: str, key: str) -> str:
    """The folder of the store with this key inside ``cache_dir``."""
    return os.path.join(cache_dir, key[:20])


def open_store(cache_dir: str, key: str) -> PreprocessedStore | None:
    """The complete store with ``key`` in ``cache_dir``, or None if there is none yet.

    Raises:
        ValueError: the folder exists but is not a complete store of this key (damaged, or written by
            another version of tf-fracture); the message names the folder to delete.
    """
    path = store_path(cache_dir, key)
    if not os.path.isdir(path):
        return None
    manifest_path = os.path.join(path, MANIFEST)
    try:
        with open(manifest_path) as file:
            manifest = json.load(file)
    except (OSError, ValueError) as error:
        raise _damaged(path, f"cannot read {MANIFEST} ({error})") from error
    if manifest.get("format") != STORE_FORMAT:
        raise _damaged(path, f"store format {manifest.get('format')!r}, this version reads {STORE_FORMAT}")
    if manifest.get("key") != key:
        raise _damaged(path, f"it holds key {manifest.get('key')!r}, not {key!r}")
    count, shape = int(manifest["count"]), tuple(manifest["image_shape"])
    images_path = os.path.join(path, IMAGES)
    expected = count * int(np.prod(shape))
    if not os.path.isfile(images_path) or os.path.getsize(images_path) != expected:
        size = os.path.getsize(images_path) if os.path.isfile(images_path) else "missing"
        raise _damaged(path, f"{IMAGES} has {size} bytes, expected {expected}")
    labels = np.load(os.path.join(path, LABELS))
    if labels.shape != (count,):
        raise _damaged(path, f"{LABELS} has shape {labels.shape}, expected ({count},)")
    images = np.memmap(images_path, np.uint8, "r", shape=(count, *shape)) if count else np.zeros((0, *shape), np.uint8)
    return PreprocessedStore(images, labels.astype(np.int64), manifest, path)


def write_store(
    cache_dir: str | None,
    key: str,
    manifest: Mapping,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    count: int | None = None,
) -> PreprocessedStore:
    """Writes ``batches`` of ``(images (B, S, S, 1) uint8, labels (B,))`` into a new store.

    Args:
        cache_dir: a folder to keep the store in (created if needed), or None to keep it in memory.
        key: :func:`store_key` of ``manifest``'s identity; names the folder.
        manifest: JSON-serialisable description, written as ``manifest.json`` with ``key``,
            ``count`` and ``image_shape`` added.
        batches: the preprocessed images and their labels, in the source's order.
        count: number of images if known (a store in memory is then filled without a copy).

    Returns:
        The store, opened again from disk when ``cache_dir`` is given.
    """
    if cache_dir is None:
        images, labels = _collect(batches, count)
        full = {**manifest, "format": STORE_FORMAT, "key": key, "count": len(labels), "image_shape": images.shape[1:]}
        return PreprocessedStore(images, labels, full, None)
    os.makedirs(cache_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{key[:20]}.partial-", dir=cache_dir)
    try:
        n, shape, labels = 0, None, []
        with open(os.path.join(scratch, IMAGES), "wb") as file:
            for images, batch_labels in batches:
                images = np.ascontiguousarray(images, np.uint8)
                shape = shape or images.shape[1:]
                if images.shape[1:] != shape:
                    raise ValueError(f"Expected every image of shape {shape}, but got {images.shape[1:]}.")
                file.write(images.tobytes())
                labels.append(np.asarray(batch_labels, np.int64).reshape(-1))
                n += len(images)
        labels = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
        np.save(os.path.join(scratch, LABELS), labels)
        full = {**manifest, "format": STORE_FORMAT, "key": key, "count": n, "image_shape": list(shape or ())}
        with open(os.path.join(scratch, MANIFEST), "w") as file:
            json.dump(full, file, indent=2, sort_keys=True, default=str)
        try:
            os.rename(scratch, store_path(cache_dir, key))
        except OSError:
            # Another run finished the same store first: theirs is identical, keep it.
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return open_store(cache_dir, key)


def _collect(batches, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    if count is None:
        pairs = list(batches)
        if not pairs:
            return np.zeros((0, 0, 0, 1), np.uint8), np.zeros((0,), np.int64)
        images = np.concatenate([np.asarray(i, np.uint8) for i, _ in pairs])
        return images, np.concatenate([np.asarray(y, np.int64).reshape(-1) for _, y in pairs])
    images, labels, n = None, np.zeros((count,), np.int64), 0
    for batch, batch_labels in batches:
        if images is None:
            images = np.empty((count, *batch.shape[1:]), np.uint8)
        if n + len(batch) > count:
            raise ValueError(f"Expected {count} images, but the source holds more.")
        images[n : n + len(batch)] = batch
        labels[n : n + len(batch)] = np.asarray(batch_labels).reshape(-1)
        n += len(batch)
    if n != count:
        raise ValueError(f"Expected {count} images, but the source holds {n}.")
    return (images if images is not None else np.zeros((0, 0, 0, 1), np.uint8)), labels


def _damaged(path: str, reason: str) -> ValueError:
    return ValueError(
        f"The preprocessed-image cache at {path!r} is not a complete store of this data: {reason}. "
        "Delete that folder and run again to rebuild it."
    )
