"""Reading radiographs: 8- and 16-bit PNG, JPEG and DICOM, always to 2-D uint8 greyscale.

Every failure to read a file (missing, empty, truncated, corrupt, unsupported) raises
:class:`ImageReadError`, which names the file and the problem, so that a batch job can catch one
exception type, list the bad files and go on (:func:`read_images` does exactly that).

Data wider than 8 bits reaches uint8 through one documented mapping, :func:`scale_to_uint8`, which the
audit and the dataset builders share.

This module needs NumPy, OpenCV and pydicom only: it never imports TensorFlow, so that the on-device
predictor and the PyTorch track can read images the way training did.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from io import BytesIO
from typing import TypeVar

import cv2
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing, get_decoder
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

T = TypeVar("T")
_log = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"

#: The percentiles of the pixel values that :func:`scale_to_uint8` maps to 0 and 255 when no window is given.
PERCENTILES = (0.5, 99.5)

# ITU-R BT.601 luma, the weights OpenCV's BGR2GRAY uses: every colour image becomes grey with them.
_LUMA_RGB = np.array([0.299, 0.587, 0.114])

# libjpeg's warnings (jerror.h) that mean pixels were lost or invented. libjpeg prints a warning on
# stderr and goes on, filling the missing blocks with grey; OpenCV reports nothing. Other warnings
# ("extraneous bytes before marker", "bad ICC marker", an unknown JFIF revision) leave the pixels intact.
_LIBJPEG_DAMAGE = re.compile(
    r"(Corrupt JPEG data: premature end of data segment"  # JWRN_HIT_MARKER: a marker where scan data was due
    r"|Premature end of JPEG file"  # JWRN_JPEG_EOF
    r"|Corrupt JPEG data: bad Huffman code"  # JWRN_HUFF_BAD_CODE
    r"|Corrupt JPEG data: found marker 0x[0-9a-f]+ instead of RST\d"  # JWRN_MUST_RESYNC
    r"|Inconsistent progression sequence[^\n]*)",  # JWRN_BOGUS_PROGRESSION
    re.IGNORECASE,
)
# The file descriptor 2 is one per process: one decode at a time may redirect it.
_STDERR_LOCK = threading.Lock()

_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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


def scale_to_uint8(
    pixels: np.ndarray, window: tuple[float, float] | None = None, *, min_span: float = 255.0
) -> np.ndarray:
    """Maps pixel values of any depth to uint8 0..255: the one mapping of data wider than 8 bits.

    - With a ``window = (low, high)`` (a DICOM VOI window's output range, a LUT's range, a bit
      depth's full range), ``low`` maps to 0, ``high`` to 255, linearly in between, and values
      outside are clipped. Nothing is stretched afterwards: the window is what the file asks for.
    - Without one, the range mapped to 0..255 is the 0.5th to 99.5th percentile of the values
      (:data:`PERCENTILES`; NumPy's ``method="lower"`` and ``"higher"``, so both are values of the
      image). At most 0.5% of the pixels saturate at each end, so a few hot or dead pixels (a
      defective detector element, a burnt-in marker) no longer set the contrast of the whole image,
      as a min-max stretch let them do. If the percentiles coincide (an image that is mostly one
      value), the minimum and maximum are used instead.
    - The range is never narrower than ``min_span`` input units: a narrower one is widened about its
      centre. With the default of 255, one level of integer data never spans more than one output
      level, so an almost flat image (a few levels of noise in 12-bit data) stays an almost flat
      mid grey instead of becoming full-contrast noise, and a constant image becomes mid grey (128).
      Pass ``min_span=0`` to stretch any range to 0..255 (a constant image then becomes 0).

    Values are computed in float64 and rounded half to even.

    Args:
        pixels: an array of any real dtype and shape (greyscale values: reduce colour first).
        window: ``(low, high)`` with ``low < high``, or ``None`` for the percentile range.
        min_span: the narrowest input range stretched to 0..255 when no window is given.

    Returns:
        A uint8 array of the same shape.

    Raises:
        ValueError: an empty array, a window with ``low >= high`` or a negative ``min_span``.

    Example:
        >>> scale_to_uint8(np.array([0, 2048, 4095]), window=(0, 4095))
        array([  0, 128, 255], dtype=uint8)
    """
    values = np.asarray(pixels)
    if values.size == 0:
        raise ValueError("Expected a non-empty array of pixel values, but got an empty one.")
    if min_span < 0:
        raise ValueError(f"Expected `min_span` >= 0, but got `min_span={min_span}`.")
    if window is not None:
        low, high = (float(v) for v in window)
        if not high > low:
            raise ValueError(f"Expected `window=(low, high)` with low < high, but got `window={window}`.")
    else:
        flat = values.ravel()
        # The same virtual indices as np.percentile(flat, q, method="lower" / "higher").
        first = math.floor(PERCENTILES[0] / 100 * (flat.size - 1))
        last = math.ceil(PERCENTILES[1] / 100 * (flat.size - 1))
        ordered = np.partition(flat, (first, last))
        low, high = float(ordered[first]), float(ordered[last])
        if high <= low:
            low, high = float(flat.min()), float(flat.max())
        if high - low < min_span:
            centre = (low + high) / 2
            low, high = centre - min_span / 2, centre + min_span / 2
        if high <= low:
            return np.zeros(values.shape, np.uint8)
    scaled = (values.astype(np.float64) - low) / (high - low)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decodes PNG (8/16-bit), JPEG or DICOM bytes to a 2-D uint8 greyscale image.

    The format is detected from the bytes (PNG and JPEG signatures, ``DICM`` at offset 128), or from
    a ``.dcm`` name for DICOM data written without the 128-byte preamble.

    - 8-bit images keep their values.
    - 16-bit PNG images go through :func:`scale_to_uint8` without a window (0.5th-99.5th percentile
      range). Radiographs are often 10- or 12-bit data stored in 16-bit containers, which a plain
      ``>> 8`` would render nearly black.
    - Colour images are reduced to grey with the BT.601 luma weights (OpenCV's); alpha is dropped.
    - JPEG: a file cut short is refused, also when an end-of-image marker was appended after the cut
      (libjpeg then fills the lost rows with grey and only prints a warning, which is caught here).
    - DICOM greyscale: the modality LUT (rescale slope/intercept) is applied, then the VOI LUT or
      the first window, whose output range is mapped to 0..255 as it is (no stretch afterwards);
      without a VOI, :func:`scale_to_uint8` with percentiles. MONOCHROME1 is inverted so that bone is
      always bright.
    - DICOM colour: PALETTE COLOR goes through its palette, YBR data are converted to RGB by pydicom,
      then the luma is taken; data of more than 8 bits are mapped from their full range (the palette's
      or ``BitsStored``'s) to 0..255. Multi-frame data are refused.
    - A compressed DICOM without an installed decoder is refused with the package to install.

    Args:
        data: the file's bytes.
        name: the file's name or path, used for format detection and in error messages.

    Returns:
        A ``(H, W)`` uint8 array.

    Raises:
        ImageReadError: empty, truncated, corrupt or unsupported data.

    Example:
        >>> import cv2
        >>> png = cv2.imencode(".png", np.full((4, 6), 200, np.uint8))[1].tobytes()
        >>> decode_image(png, "image1.png").shape
        (4, 6)
        >>> decode_image(png[:20], "cut.png")
        Traceback (most recent call last):
        ...
        tf_fracture.data.io.ImageReadError: Cannot read image 'cut.png': ...
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
        # last scan, and an intact file has an EOI after it.
        last_scan = data.rfind(_JPEG_SOS)
        if last_scan == -1 or data.find(_JPEG_EOI, last_scan) == -1:
            raise ImageReadError(name, "truncated JPEG data (no end-of-image marker)")
        return _decode_with_opencv(data, name, "JPEG")
    if data[128:132] == b"DICM" or str(name).lower().endswith(".dcm"):
        return _decode_dicom(data, name)
    raise ImageReadError(name, "unsupported format (expected PNG, JPEG or DICOM)")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads one radiograph and decodes it.

    Local files (and ``file://`` URIs) are read with plain Python. Another URI (``gs://``, ``s3://``,
    ...) is read with ``tf.io.gfile`` where TensorFlow is installed and with fsspec otherwise; only
    then is either imported.

    A missing or unreadable file also raises :class:`ImageReadError` rather than
    ``FileNotFoundError``, so that one ``except ImageReadError`` covers every bad file in a batch job.

    Args:
        path: the image file.

    Returns:
        A ``(H, W)`` uint8 array, see :func:`decode_image`.

    Raises:
        ImageReadError: the file is missing, unreadable or cannot be decoded.

    Example:
        >>> image = read_image("MURA-v1.1/valid/XR_ELBOW/patient11186/study1_positive/image1.png")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if _URI_SCHEME.match(path) and not path.startswith("file://"):
        data = _read_uri(path)
    else:
        local = path.removeprefix("file://")
        try:
            with open(local, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ImageReadError(path, "no such file") from None
        except OSError as e:
            raise ImageReadError(path, f"the file cannot be read ({e.strerror or e})") from None
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
        >>> images, failures = read_images(["a.png", "b.dcm"])  # doctest: +SKIP
        >>> for path, reason in failures:  # doctest: +SKIP
        ...     print(f"skipped {path}: {reason}")
    """
    skipped: dict[str, str] = {}
    images = {os.fspath(path): image for path, image in read_each(paths, read_image, skipped, key=os.fspath)}
    return images, list(skipped.items())


def read_each(
    items: Iterable[T],
    read: Callable[[T], np.ndarray],
    skipped: dict[str, str],
    *,
    key: Callable[[T], str] = str,
) -> Iterator[tuple[T, np.ndarray]]:
    """The one "read, skip and list bad files" loop: yields ``(item, image)`` for every readable item.

    An item whose ``read`` raises :class:`ImageReadError` is skipped and recorded in ``skipped``
    as ``{key(item): reason}``; every other item still runs, and any other exception propagates
    (it is a bug, not a bad file). Builders and batch jobs iterate with it and then call
    :func:`list_skipped` once, so a bad file costs only itself and is never lost silently.

    Args:
        items: what to read (paths, or records that know their file).
        read: reads one item to an ``(H, W)`` uint8 image, raising ``ImageReadError`` on a bad file.
        skipped: filled with ``{key(item): reason}`` for each bad file (kept by the caller, e.g. in
            a dataset's metadata).
        key: the name an item is listed under.

    Example:
        >>> skipped = {}
        >>> for path, image in read_each(["a.png", "b.dcm"], read_image, skipped):
        ...     ...
        >>> list_skipped("MURA", "unreadable images, skipped", skipped)
    """
    for item in items:
        try:
            image = read(item)
        except ImageReadError as error:
            skipped[key(item)] = error.reason
            continue
        yield item, image


def list_skipped(source: str, what: str, entries: Mapping[str, str] | Iterable[str]) -> None:
    """Logs one warning that lists every file of ``entries``, one a line, with its reason if given.

    Example:
        >>> list_skipped("MURA", "image(s) unreadable, skipped", {"a.png": "truncated PNG data"})

        logs ``MURA: 1 image(s) unreadable, skipped:``, then ``a.png: truncated PNG data`` on a line of its own.
    """
    if isinstance(entries, Mapping):
        lines = "".join(f"\n  {name}: {reason}" for name, reason in sorted(entries.items()))
    else:
        lines = "".join(f"\n  {name}" for name in sorted(entries))
    if lines:
        _log.warning("%s: %d %s:%s", source, lines.count("\n"), what, lines)


def _read_uri(path: str) -> bytes:
    # Imported here, and only for URIs: local files need neither TensorFlow nor fsspec.
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                return f.read()
        except tf.errors.NotFoundError:
            raise ImageReadError(path, "no such file") from None
        except tf.errors.OpError as e:
            raise ImageReadError(path, f"the file cannot be read ({e.message})") from None
    try:
        import fsspec
    except ImportError:
        raise ImageReadError(
            path,
            "reading a URI needs TensorFlow (tf.io.gfile) or fsspec with the scheme's file system "
            "(pip install fsspec gcsfs, or s3fs, ...)",
        ) from None
    try:
        with fsspec.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except Exception as e:  # each file system raises its own types (ImportError for a missing one)
        raise ImageReadError(path, f"the file cannot be read ({type(e).__name__}: {e})") from None


def _decode_with_opencv(data: bytes, name: str, kind: str) -> np.ndarray:
    buffer = np.frombuffer(data, np.uint8)
    try:
        if kind == "JPEG":
            image, damage = _imdecode_jpeg(buffer)
            if damage:
                raise ImageReadError(name, f"truncated or corrupt JPEG data (libjpeg: {damage})")
        else:
            image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ImageReadError(name, f"corrupt {kind} data ({e.err})") from None
    if image is None:
        raise ImageReadError(name, f"corrupt {kind} data (OpenCV cannot decode it)")
    if image.ndim == 3:
        if image.shape[2] == 2:
            image = image[..., 0]  # grey + alpha: the grey channel is the image
        elif image.shape[2] in (3, 4) and image.dtype == np.uint8:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
        elif image.shape[2] in (3, 4):
            image = _luma(image[..., 2::-1])  # BGR(A) -> RGB in float64, alpha dropped
        else:
            raise ImageReadError(name, f"unsupported {kind} with {image.shape[2]} channels")
    if image.dtype == np.uint8:
        return image
    if image.dtype in (np.uint16, np.float64):  # float64: the luma of 16-bit colour
        return scale_to_uint8(image)
    raise ImageReadError(name, f"unsupported {kind} pixel type {image.dtype}")


def _imdecode_jpeg(buffer: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Decodes a JPEG with OpenCV and returns libjpeg's damage warning, if any ("" otherwise).

    libjpeg writes its warnings straight to the C stream stderr (file descriptor 2), so the descriptor
    is pointed at a pipe around the decode, under a lock because descriptors are per process (about
    25 us per image; libjpeg prints one line at most, so the pipe cannot fill up).
    Whatever else lands there meanwhile (another thread's output, harmless libjpeg warnings) is written
    back to stderr.
    """
    with _STDERR_LOCK:
        try:
            read_end, write_end = os.pipe()
        except OSError:  # out of file descriptors: decode without the check rather than fail
            return cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED), ""
        try:
            try:
                saved = os.dup(2)
            except OSError:  # no stderr at all (a detached daemon)
                os.close(write_end)
                return cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED), ""
            try:
                if sys.stderr is not None:
                    sys.stderr.flush()  # Python's own pending text is not ours to capture
                os.dup2(write_end, 2)
                image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(write_end)  # the last write end: reading below ends
            # Read to the end: a thread that filled the pipe meanwhile finishes its write as we read.
            chunks = []
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
        finally:
            os.close(read_end)
    text = b"".join(chunks).decode("utf-8", "replace")
    damage = _LIBJPEG_DAMAGE.search(text)
    rest = _LIBJPEG_DAMAGE.sub("", text, count=1).strip() if damage else text
    if rest:
        os.write(2, (rest + "\n").encode())
    return image, damage.group(0) if damage else ""


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Grey from RGB (last axis) with the BT.601 weights: OpenCV's for uint8, float64 for deeper data."""
    if rgb.dtype == np.uint8:
        return cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)
    return rgb[..., :3].astype(np.float64) @ _LUMA_RGB


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    # pydicom reports malformed files through many exception types (InvalidDicomError, ValueError,
    # AttributeError, ...): each means the same thing to us, so each becomes an ImageReadError that
    # keeps pydicom's explanation.
    try:
        with warnings.catch_warnings():
            # pydicom warns about every non-conformance it tolerates; the image is checked below.
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(data), force=True)
            if "PixelData" not in ds:
                if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
                    raise ImageReadError(name, "DICOM with float pixel data is not supported")
                raise ImageReadError(name, "DICOM data without pixel data")
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            if frames > 1:
                raise ImageReadError(name, f"multi-frame DICOM ({frames} frames) is not supported")
            _ensure_transfer_syntax(ds, name)
            pixels = _dicom_pixels(ds, name)
            return _dicom_to_grey(ds, pixels, name)
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(name, f"corrupt or unsupported DICOM data ({type(e).__name__}: {e})") from None


def _dicom_pixels(ds: pydicom.Dataset, name: str) -> np.ndarray:
    """``ds.pixel_array``, with a compressed transfer syntax's missing decoder named."""
    syntax = ds.file_meta.TransferSyntaxUID
    decoder = get_decoder(syntax) if syntax.is_compressed else None
    if decoder is not None and not decoder.is_available:
        raise ImageReadError(
            name,
            f"compressed DICOM ({syntax.name}) and no installed decoder for it; "
            f"install one of: {_install_hint(decoder.missing_dependencies)}",
        )
    try:
        return ds.pixel_array
    except RuntimeError as e:
        if decoder is None:
            raise
        # Every available plugin failed (Pillow cannot decode 12-bit JPEG, for example): say which
        # others exist.
        others = decoder.missing_dependencies
        hint = f"; another decoder may: install one of: {_install_hint(others)}" if others else ""
        detail = " ".join(str(e).split())
        reason = f"the installed decoders cannot decode this {syntax.name} data ({detail}){hint}"
        raise ImageReadError(name, reason) from None


def _install_hint(requirements: list[str]) -> str:
    # pydicom's lines read "gdcm - requires gdcm>=3.0.10" or "pylibjpeg - requires pylibjpeg>=2.0 and
    # pylibjpeg-libjpeg>=2.1"; pip names gdcm's package python-gdcm.
    options = []
    for line in requirements:
        _, _, needs = line.partition(" - requires ")
        packages = [p.strip() for p in re.split(r",| and ", needs) if p.strip() and p.strip() != "numpy"]
        packages = ["python-" + p if re.match(r"gdcm\b", p) else p for p in packages]
        if packages:
            options.append(" with ".join(f"'{p}'" for p in packages))
    return "; ".join(options) or "a pydicom pixel data plugin (see pydicom's documentation)"


def _dicom_to_grey(ds: pydicom.Dataset, pixels: np.ndarray, name: str) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if pixels.ndim != 2:
            raise ImageReadError(name, f"{photometric} DICOM with pixel array of shape {pixels.shape}")
        image = _dicom_monochrome(ds, pixels)
        # MONOCHROME1: low values are bright; make bone bright as in MONOCHROME2.
        return 255 - image if photometric == "MONOCHROME1" else image
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)  # uint8 or uint16 entries, RGB or RGBA
        grey = _luma(rgb)
        return grey if grey.dtype == np.uint8 else scale_to_uint8(grey, window=(0, np.iinfo(rgb.dtype).max))
    if photometric == "RGB" or photometric.startswith("YBR_"):
        # pydicom returns YBR_FULL and YBR_FULL_422 converted to RGB, and its JPEG and JPEG 2000
        # decoders undo YBR_ICT / YBR_RCT and JPEG's own YCbCr: the array is RGB in every case.
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ImageReadError(name, f"{photometric} DICOM with pixel array of shape {pixels.shape}")
        grey = _luma(pixels)
        if grey.dtype == np.uint8:
            return grey
        bits = int(ds.get("BitsStored", 8 * pixels.dtype.itemsize))
        return scale_to_uint8(grey, window=(0, 2**bits - 1))
    raise ImageReadError(name, f"unsupported DICOM photometric interpretation {photometric!r}")


def _dicom_monochrome(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    values = apply_modality_lut(pixels, ds)
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        entries, first_map = item.LUTDescriptor[0] or 2**16, item.LUTDescriptor[1]
        # The LUT's own output range is the window: its declared bit depth is often wider than its data.
        table = apply_voi(np.arange(first_map, first_map + entries), ds)
        low, high = int(table.min()), int(table.max())
        if high <= low:
            return np.zeros(pixels.shape, np.uint8)  # a constant VOI LUT shows one grey level: black
        return scale_to_uint8(apply_voi(np.rint(values).astype(np.int64), ds), window=(low, high))
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        windowed = apply_windowing(values.astype(np.float64), ds)
        # The window's output range is what it gives far below and far above it (PS3.3 C.11.2.1.2);
        # pydicom's range follows the stored bit depth and rescale, and may even be reversed.
        with np.errstate(over="ignore"):
            black, white = apply_windowing(np.array([-1e300, 1e300]), ds)
        return scale_to_uint8((windowed - black) / (white - black), window=(0.0, 1.0))
    # One stored level is at most one output level; a linear rescale changes the size of a level.
    bits = int(ds.get("BitsStored", 16))
    slope = abs(float(ds.get("RescaleSlope", 1) or 1)) if "ModalityLUTSequence" not in ds else 1.0
    return scale_to_uint8(values, min_span=min(255.0, 2.0**bits - 1) * slope)


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
