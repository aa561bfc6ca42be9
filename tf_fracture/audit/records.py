"""What the audit knows of one image (`AuditRecord`), and the reductions of its pixels it compares.

An image is reduced to three fingerprints, computed once per record by `AuditRecord.hashed()` so
that the pixels can be dropped: `image_digest` (identical pixels), `perceptual_hash` (the pHash
that finds near-duplicate candidates) and `thumbnail_vector` (the 64x64 thumbnail that confirms
them). `_grey_uint8` brings any decoded image to what the hashes take: 2-D uint8.

NumPy and OpenCV only: the dataset builders import this module, and it must not import
TensorFlow or the dataset registry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from tf_fracture.data.hashing import image_digest, perceptual_hash
from tf_fracture.data.io import scale_to_uint8

__all__ = ["THUMBNAIL_SIZE", "AuditRecord", "thumbnail_vector"]

THUMBNAIL_SIZE = 64


@dataclass(frozen=True)
class AuditRecord:
    """One image of a dataset, as the audit sees it.

    Args:
        key: the file name relative to the dataset root (or the TFDS `filename` feature).
        label: the class index, or None when unlabelled.
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
        """The same record with `digest`, `phash` and `thumbnail` filled in and the pixels dropped.

        Keeps memory flat when auditing thousands of images: the audit needs only the fingerprints.
        """
        if self.error is not None or self.image is None:
            return self
        grey = _grey_uint8(self.image)
        return dataclasses.replace(
            self,
            image=None,
            digest=image_digest(self.image),
            phash=perceptual_hash(grey),
            thumbnail=thumbnail_vector(grey),
        )


def _grey_uint8(image: np.ndarray) -> np.ndarray:
    """Reduces a decoded image to what `perceptual_hash` and `thumbnail_vector` take: 2-D uint8.

    RGB(A) becomes grey (TFDS and PIL decode colour as RGB), a single channel is squeezed, and
    uint16 goes through `tf_fracture.data.io.scale_to_uint8`, the mapping the reader and the builders use.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if image.shape[-1] == 3 else cv2.COLOR_RGBA2GRAY)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype == np.uint16:
        image = scale_to_uint8(image)
    return image


def thumbnail_vector(image: np.ndarray) -> np.ndarray:
    """A 64x64 thumbnail (INTER_AREA) as a zero-mean, unit-norm float32 vector.

    The dot product of two such vectors is the Pearson correlation of the thumbnails. On
    FracAtlas, pHash candidates within 4 bits that are true copies correlate >= 0.992, while
    different radiographs with a similar layout reach at most 0.976.

    Args:
        image: a 2-D uint8 image (see `_grey_uint8`).
    """
    small = cv2.resize(image, (THUMBNAIL_SIZE, THUMBNAIL_SIZE), interpolation=cv2.INTER_AREA).astype(np.float64)
    small = small.ravel() - small.mean()
    norm = np.linalg.norm(small)
    return (small / norm if norm > 0 else small).astype(np.float32)
