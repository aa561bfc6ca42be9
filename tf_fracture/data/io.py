"""Reading radiographs: 8- and 16-bit PNG, JPEG and DICOM, always to 2-D uint8 greyscale.

Every failure to read a file (missing, empty, truncated, corrupt, unsupported) raises
:class:`ImageReadError`, which names the file and the problem, so that a batch job can catch one
exception type, list the bad files and go on (:func:`read_images` does exactly that).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from io import BytesIO

import cv2
import numpy as np
import pydicom
import tensorflow as tf
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


class ImageReadError(ValueError):
    """A radiograph that cannot be read.

    Args:
        path: the file (or name) that failed.
        reason: what is wrong with it, e.g. ``"truncated PNG data"``.

    Example:
        >>> str(ImageReadError("a/b.png", "truncated PNG data"))
        "Cannot read image 'a/b.png': truncated PNG data. Check the file or remove it."
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"Cannot read image {self.path!r}: {reason}. Check the file or remove it.")

    def __reduce__(self):
        # Keeps the exception picklable (tf.data and multiprocessing workers pickle exceptions).
        return type(self), (self.path, self.reason)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decodes PNG (8/16-bit), JPEG or DICOM bytes to a 2-D uint8 greyscale image.

    The format is detected from the bytes (PNG and JPEG signatures, ``DICM`` at offset 128), or from
    a ``.dcm`` name for DICOM data written without the 128-byte preamble.

    - 8-bit images keep their values.
    - 16-bit images are stretched min-max over the image to 0..255: radiographs are often 10- or
      12-bit data stored in 16-bit containers, which a plain ``>> 8`` would render nearly black.
      A constant image becomes all zeros.
    - Colour images (BGR, BGRA) are reduced to grey with OpenCV's luma weights; alpha is dropped.
    - DICOM: the modality LUT (rescale slope/intercept) and the VOI LUT or window are applied,
      MONOCHROME1 is inverted so that bone is always bright, and the result is stretched min-max.

    Args:
        data: the file's bytes.
        name: the file's name or path, used for format detection and in error messages.

    Returns:
        A ``(H, W)`` uint8 array.

    Raises:
        ImageReadError: empty, truncated, corrupt or unsupported data.

    Example:
        >>> image = decode_image(open("study1/image1.png", "rb").read(), "study1/image1.png")
    """
    if not data:
        raise ImageReadError(name, "the file is empty")
    if data.startswith(_PNG_MAGIC):
        # IEND is the last chunk of every PNG; without it the file was cut short.
        if data.rfind(b"IEND") == -1:
            raise ImageReadError(name, "truncated PNG data (no IEND chunk)")
        return _decode_with_opencv(data, name, "PNG")
    if data.startswith(_JPEG_MAGIC):
        # Inside entropy-coded data 0xFF is byte-stuffed, so the last SOS marker is the start of the
        # last scan, and an intact file has an EOI after it. OpenCV may otherwise decode a truncated
        # JPEG partially, with only a warning on stderr.
        last_scan = data.rfind(_JPEG_SOS)
        if last_scan == -1 or data.find(_JPEG_EOI, last_scan) == -1:
            raise ImageReadError(name, "truncated JPEG data (no end-of-image marker)")
        return _decode_with_opencv(data, name, "JPEG")
    if data[128:132] == b"DICM" or str(name).lower().endswith(".dcm"):
        return _decode_dicom(data, name)
    raise ImageReadError(name, "unsupported format (expected PNG, JPEG or DICOM)")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads one radiograph through ``tf.io.gfile`` (local files, GCS, ...) and decodes it.

    A missing or unreadable file also raises :class:`ImageReadError` rather than
    ``FileNotFoundError``, so that one ``except ImageReadError`` covers every bad file in a batch job.

    Args:
        path: the image file.

    Returns:
        A ``(H, W)`` uint8 array, see :func:`decode_image`.

    Raises:
        ImageReadError: the file is missing, unreadable or cannot be decoded.

    Example:
        >>> image = read_image("MURA-v1.1/valid/XR_ELBOW/patient11186/study1_positive/image1.png")
    """
    path = os.fspath(path)
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except tf.errors.NotFoundError:
        raise ImageReadError(path, "no such file") from None
    except tf.errors.OpError as e:
        raise ImageReadError(path, f"the file cannot be read ({e.message})") from None
    return decode_image(data, path)


def read_images(paths: Iterable[str | os.PathLike]) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Reads many radiographs, skipping the bad ones.

    Args:
        paths: the image files.

    Returns:
        ``(images, failures)``: ``images`` maps each readable path (as a string) to its ``(H, W)``
        uint8 array, in the order given; ``failures`` lists ``(path, reason)`` for every file that
        could not be read.

    Example:
        >>> images, failures = read_images(["a.png", "b.dcm"])
        >>> for path, reason in failures:
        ...     print(f"skipped {path}: {reason}")
    """
    images: dict[str, np.ndarray] = {}
    failures: list[tuple[str, str]] = []
    for path in paths:
        try:
            images[os.fspath(path)] = read_image(path)
        except ImageReadError as e:
            failures.append((e.path, e.reason))
    return images, failures


def _decode_with_opencv(data: bytes, name: str, kind: str) -> np.ndarray:
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ImageReadError(name, f"corrupt {kind} data ({e.err})") from None
    if image is None:
        raise ImageReadError(name, f"corrupt {kind} data (OpenCV cannot decode it)")
    if image.ndim == 3:
        conversions = {2: None, 3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}
        if image.shape[2] not in conversions:
            raise ImageReadError(name, f"unsupported {kind} with {image.shape[2]} channels")
        # Grey + alpha: the grey channel is the image.
        code = conversions[image.shape[2]]
        image = image[..., 0] if code is None else cv2.cvtColor(image, code)
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return _stretch_to_uint8(image)
    raise ImageReadError(name, f"unsupported {kind} pixel type {image.dtype}")


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    # pydicom reports malformed files through many exception types (InvalidDicomError, ValueError,
    # AttributeError, NotImplementedError for unsupported compression, ...): each means the same
    # thing to us, so each becomes an ImageReadError that keeps pydicom's explanation.
    try:
        ds = pydicom.dcmread(BytesIO(data), force=True)
        if "PixelData" not in ds:
            raise ImageReadError(name, "DICOM data without pixel data")
        _ensure_transfer_syntax(ds, name)
        pixels = ds.pixel_array
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise ImageReadError(name, f"multi-frame DICOM ({frames} frames) is not supported")
        if pixels.ndim == 3:
            # pydicom returns colour DICOM as RGB; modality and VOI LUTs apply to greyscale only.
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
        else:
            pixels = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
        image = _stretch_to_uint8(pixels)
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            image = 255 - image  # MONOCHROME1: low values are bright; make bone bright as in MONOCHROME2
        return image
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(name, f"corrupt or unsupported DICOM data ({type(e).__name__}: {e})") from None


def _ensure_transfer_syntax(ds: pydicom.Dataset, name: str) -> None:
    # A dataset written without the file meta header (no preamble, read only thanks to its .dcm
    # name) has no Transfer Syntax UID, which pydicom needs to decode pixels: take the encoding
    # pydicom detected while reading.
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit_vr, little_endian = ds.original_encoding
    if implicit_vr is None or little_endian is None:
        raise ImageReadError(name, "DICOM data of unknown encoding")
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian
    )


def _stretch_to_uint8(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(np.float64)
    low, high = pixels.min(), pixels.max()
    if high <= low:
        return np.zeros(pixels.shape, np.uint8)
    return np.rint((pixels - low) / (high - low) * 255.0).astype(np.uint8)
