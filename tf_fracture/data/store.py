"""A store of preprocessed images with random access, in memory or in a keyed folder on disk.

The training pipeline draws every epoch as a permutation of the whole epoch, so it needs the image
at any index, not a stream. A store holds ``images`` ``(N, S, S, 1)`` uint8 and ``labels`` ``(N,)``
int64, after the deterministic preprocessing, plus a manifest that says what produced them, and
optionally further per-image integer ``targets`` (e.g. the body part of a multi-task head; kept in
memory only, attached with :meth:`PreprocessedStore.with_targets`: they do not decide the stored bytes),
and optionally ``masks`` ``(N, S, S, 1)`` uint8: each image's localisation target (the fracture's box
or mask at the image's size, `tf_fracture.data.targets`; all zero where an image has none), stored
and read like the images.

* In memory: NumPy arrays (fast; the set must fit in RAM).
* On disk: ``<cache_dir>/<key>/`` with ``images.u8`` (and ``masks.u8``) (raw bytes, read through a memory map, so a set
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
MASKS = "masks.u8"


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
        masks: ``(N, S, S, 1)`` uint8 localisation targets (see `tf_fracture.data.targets`), or None
            when the store was built without them.
    """

    images: np.ndarray
    labels: np.ndarray
    manifest: Mapping = field(default_factory=dict)
    path: str | None = None
    targets: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))
    masks: np.ndarray | None = None
    has_target: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        # Which images have a localisation target: one pass over the masks (a memory map is read once).
        if self.masks is None:
            has = np.zeros((len(self),), bool)
        else:
            if self.masks.shape[0] != len(self):
                raise ValueError(f"Expected {len(self)} masks (one per image), but got {self.masks.shape[0]}.")
            has = np.array([bool(np.any(self.masks[i])) for i in range(len(self))], bool).reshape(len(self))
        has.setflags(write=False)
        object.__setattr__(self, "has_target", has)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.images.shape[1:])

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` at ``indices`` (any order; a fresh array, not a view of the store)."""
        indices = np.asarray(indices, np.int64)
        return np.ascontiguousarray(self.images[indices]), self.labels[indices]

    def gather_masks(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(masks (B, S, S, 1) uint8, has_target (B,) bool)`` at ``indices``."""
        if self.masks is None:
            raise ValueError(
                "This store holds no localisation targets: build it with `localization=True` from a dataset "
                "with fracture boxes (see tf_fracture.data.pipeline.preprocessed_store)."
            )
        indices = np.asarray(indices, np.int64)
        return np.ascontiguousarray(self.masks[indices]), self.has_target[indices]

    def with_targets(self, targets: Mapping[str, np.ndarray]) -> PreprocessedStore:
        """A copy that also holds ``targets``: per-image integer arrays ``(N,)`` in the store's (the source's) order.

        Example:
            >>> store = store.with_targets({"body_part": split_metadata("mura", split)["body_parts"]})  # doctest: +SKIP
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
    masks = None
    if manifest.get("masks"):
        masks_path = os.path.join(path, MASKS)
        if not os.path.isfile(masks_path) or os.path.getsize(masks_path) != expected:
            size = os.path.getsize(masks_path) if os.path.isfile(masks_path) else "missing"
            raise _damaged(path, f"{MASKS} has {size} bytes, expected {expected}")
        masks = np.memmap(masks_path, np.uint8, "r", shape=(count, *shape)) if count else np.zeros_like(images)
    return PreprocessedStore(images, labels.astype(np.int64), manifest, path, masks=masks)


def write_store(
    cache_dir: str | None,
    key: str,
    manifest: Mapping,
    batches: Iterable[tuple[np.ndarray, ...]],
    count: int | None = None,
) -> PreprocessedStore:
    """Writes ``batches`` of ``(images (B, S, S, 1) uint8, labels (B,)[, masks (B, S, S, 1) uint8])`` into a new store.

    Args:
        cache_dir: a folder to keep the store in (created if needed), or None to keep it in memory.
        key: :func:`store_key` of ``manifest``'s identity; names the folder.
        manifest: JSON-serialisable description, written as ``manifest.json`` with ``key``,
            ``count``, ``image_shape`` and ``masks`` (whether the batches carried masks) added.
        batches: the preprocessed images and their labels (and localisation masks), in the source's
            order; every batch carries masks or none does.
        count: number of images if known (a store in memory is then filled without a copy).

    Returns:
        The store, opened again from disk when ``cache_dir`` is given.
    """
    if cache_dir is None:
        images, labels, masks = _collect(batches, count)
        full = {
            **manifest, "format": STORE_FORMAT, "key": key, "count": len(labels), "image_shape": images.shape[1:],
            "masks": masks is not None,
        }  # fmt: skip
        return PreprocessedStore(images, labels, full, None, masks=masks)
    os.makedirs(cache_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{key[:20]}.partial-", dir=cache_dir)
    try:
        n, shape, labels, with_masks = 0, None, [], None
        with open(os.path.join(scratch, IMAGES), "wb") as file, open(os.path.join(scratch, MASKS), "wb") as mask_file:
            for batch in batches:
                images, batch_labels, masks = _unpack(batch, with_masks)
                with_masks = masks is not None
                images = np.ascontiguousarray(images, np.uint8)
                shape = shape or images.shape[1:]
                if images.shape[1:] != shape:
                    raise ValueError(f"Expected every image of shape {shape}, but got {images.shape[1:]}.")
                file.write(images.tobytes())
                if with_masks:
                    mask_file.write(np.ascontiguousarray(masks, np.uint8).tobytes())
                labels.append(np.asarray(batch_labels, np.int64).reshape(-1))
                n += len(images)
        if not with_masks:
            os.remove(os.path.join(scratch, MASKS))
        labels = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
        np.save(os.path.join(scratch, LABELS), labels)
        full = {
            **manifest, "format": STORE_FORMAT, "key": key, "count": n, "image_shape": list(shape or ()),
            "masks": bool(with_masks),
        }  # fmt: skip
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


def _unpack(batch, with_masks: bool | None):
    """``(images, labels, masks or None)`` of one batch; refuses a mix of batches with and without masks."""
    if len(batch) not in (2, 3):
        raise ValueError(
            f"Expected batches of (images, labels) or (images, labels, masks), but got {len(batch)} items."
        )
    images, labels, masks = (*batch, None) if len(batch) == 2 else batch
    if with_masks is not None and with_masks != (masks is not None):
        raise ValueError("Expected every batch to carry masks or none to, but got a mix.")
    if masks is not None and np.shape(masks) != np.shape(images):
        raise ValueError(f"Expected masks of the images' shape {np.shape(images)}, but got {np.shape(masks)}.")
    return images, labels, masks


def _collect(batches, count: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    empty = np.zeros((0, 0, 0, 1), np.uint8)
    if count is None:
        parts, with_masks = [], None
        for batch in batches:
            parts.append(_unpack(batch, with_masks))
            with_masks = parts[-1][2] is not None
        if not parts:
            return empty, np.zeros((0,), np.int64), None
        images = np.concatenate([np.asarray(i, np.uint8) for i, _, _ in parts])
        labels = np.concatenate([np.asarray(y, np.int64).reshape(-1) for _, y, _ in parts])
        masks = np.concatenate([np.asarray(m, np.uint8) for _, _, m in parts]) if with_masks else None
        return images, labels, masks
    images, masks, labels, n, with_masks = None, None, np.zeros((count,), np.int64), 0, None
    for batch in batches:
        batch, batch_labels, batch_masks = _unpack(batch, with_masks)
        with_masks = batch_masks is not None
        if images is None:
            images = np.empty((count, *batch.shape[1:]), np.uint8)
            masks = np.empty_like(images) if with_masks else None
        if n + len(batch) > count:
            raise ValueError(f"Expected {count} images, but the source holds more.")
        images[n : n + len(batch)] = batch
        if with_masks:
            masks[n : n + len(batch)] = batch_masks
        labels[n : n + len(batch)] = np.asarray(batch_labels).reshape(-1)
        n += len(batch)
    if n != count:
        raise ValueError(f"Expected {count} images, but the source holds {n}.")
    return (images if images is not None else empty), labels, masks


def _damaged(path: str, reason: str) -> ValueError:
    return ValueError(
        f"The preprocessed-image cache at {path!r} is not a complete store of this data: {reason}. "
        "Delete that folder and run again to rebuild it."
    )
