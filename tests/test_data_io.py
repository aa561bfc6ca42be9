"""Reading radiographs: decoded values against NumPy, DICOM against the standard's formulas, bad files."""

import concurrent.futures
import glob
import importlib.util
import os
import pickle
import re
import sys
import warnings
from io import BytesIO
from unittest import mock

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import data_manager, download, get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from tf_fracture.data import io
from tf_fracture.data.io import ImageReadError, decode_image, read_image, read_images, scale_to_uint8


def write(path, image, ext=None):
    ok, data = cv2.imencode(ext or path.suffix, image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def to_uint8(values, low, high):
    """Linear map of [low, high] to 0..255, clipped, float64, round-half-even."""
    return np.rint(np.clip((values.astype(np.float64) - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def robust(values, min_span=255.0):
    """The documented mapping without a window, from NumPy's percentiles."""
    low = np.percentile(values, 0.5, method="lower")
    high = np.percentile(values, 99.5, method="higher")
    if high <= low:
        low, high = values.min(), values.max()
    if high - low < min_span:
        low, high = (low + high) / 2 - min_span / 2, (low + high) / 2 + min_span / 2
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return to_uint8(values, low, high)


def test_png_8bit_is_read_unchanged(tmp_path, rng):
    image = rng.integers(0, 256, (23, 17), dtype=np.uint8)
    out = read_image(write(tmp_path / "a.png", image))
    assert out.dtype == np.uint8 and out.shape == (23, 17)
    np.testing.assert_array_equal(out, image)


def test_png_16bit_12bit_data_is_mapped_by_percentiles(tmp_path, rng):
    image = rng.integers(0, 4096, (20, 30), dtype=np.uint16)
    out = read_image(write(tmp_path / "a.png", image))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, robust(image))
    # The point of the mapping: `>> 8` would leave 12-bit data in 0..15, nearly black.
    assert out.max() == 255 and out.min() == 0 and (image >> 8).max() == 15


def radiograph(rng, shape=(120, 100)):
    """A smooth 12-bit 'radiograph': a bright blob on a darker background, with noise."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    blob = np.exp(-(((y - 60) / 30.0) ** 2) - ((x - 50) / 25.0) ** 2)
    return np.clip(600 + 2400 * blob + rng.normal(0, 40, shape), 0, 4095).astype(np.uint16)


def test_one_hot_pixel_does_not_darken_the_image(rng):
    image = radiograph(rng)
    hot = image.copy()
    hot[5, 7] = 65535  # one defective detector element
    clean, with_hot = scale_to_uint8(image), scale_to_uint8(hot)
    assert abs(with_hot.astype(float).mean() - clean.astype(float).mean()) < 0.5
    assert np.abs(with_hot.astype(int) - clean)[hot != 65535].max() <= 1 and with_hot[5, 7] == 255
    # What the old per-image min-max stretch made of it: nearly black.
    assert to_uint8(hot, hot.min(), hot.max()).mean() < clean.mean() / 10
    np.testing.assert_array_equal(with_hot, robust(hot))


def test_narrow_range_stays_flat_instead_of_becoming_noise(tmp_path):
    # Four levels of 16-bit data: one input level is one output level, centred on mid grey.
    image = np.array([[1000, 1001], [1002, 1003]], np.uint16)
    np.testing.assert_array_equal(read_image(write(tmp_path / "a.png", image)), [[126, 127], [128, 129]])
    # From 256 levels up the range is stretched to 0..255.
    wide = np.arange(1000, 1256, dtype=np.uint16).reshape(16, 16)
    np.testing.assert_array_equal(scale_to_uint8(wide), np.arange(256).reshape(16, 16))
    constant = np.full((4, 5), 700, np.uint16)
    np.testing.assert_array_equal(read_image(write(tmp_path / "c.png", constant)), np.full((4, 5), 128))
    # min_span=0 restores a full stretch of any range; a constant image is then black.
    np.testing.assert_array_equal(scale_to_uint8(image, min_span=0), [[0, 85], [170, 255]])
    np.testing.assert_array_equal(scale_to_uint8(constant, min_span=0), np.zeros((4, 5)))


def test_percentiles_fall_back_to_min_max_for_mostly_constant_images():
    # 99.6% background: both percentiles are 0, so the mapping uses min..max and keeps the marks.
    image = np.zeros((50, 50), np.uint16)
    image[0, :10] = 4000
    out = scale_to_uint8(image)
    assert set(np.unique(out)) == {0, 255}


@pytest.mark.parametrize("size", [1, 2, 199, 200, 201, 1000, 4321])
def test_scale_matches_numpy_percentiles(rng, size):
    values = rng.normal(0, 1000, size)
    np.testing.assert_array_equal(scale_to_uint8(values, min_span=0), robust(values, min_span=0))


def test_scale_with_a_window_maps_it_exactly(rng):
    values = rng.integers(-2000, 6000, (30, 40))
    np.testing.assert_array_equal(scale_to_uint8(values, window=(100, 3100)), to_uint8(values, 100, 3100))
    np.testing.assert_array_equal(scale_to_uint8(np.array([0, 2048, 4095]), window=(0, 4095)), [0, 128, 255])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": (5, 5)}, "low < high"),
        ({"window": (9, 2)}, "low < high"),
        ({"min_span": -1}, "min_span"),
    ],
)
def test_scale_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        scale_to_uint8(np.arange(10), **kwargs)
    with pytest.raises(ValueError, match="non-empty"):
        scale_to_uint8(np.array([]))


def test_jpeg_matches_opencv_greyscale_decode(tmp_path, rng):
    image = cv2.GaussianBlur(rng.integers(0, 256, (32, 48), dtype=np.uint8), (5, 5), 0)
    path = write(tmp_path / "a.jpg", image)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (32, 48)
    np.testing.assert_array_equal(out, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    assert np.abs(out.astype(int) - image).mean() < 3  # lossy, but close to what was written


@pytest.mark.parametrize("channels", [3, 4])
def test_colour_png_is_reduced_to_grey(tmp_path, rng, channels):
    bgr = rng.integers(0, 256, (10, 12, channels), dtype=np.uint8)
    out = read_image(write(tmp_path / "a.png", bgr))
    assert out.dtype == np.uint8 and out.shape == (10, 12)
    # ITU-R BT.601 luma; OpenCV's fixed-point arithmetic may round one level differently. Alpha is ignored.
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    expected = np.rint(0.299 * r + 0.587 * g + 0.114 * b)
    assert np.abs(out - expected).max() <= 1


def test_colour_png_16bit_is_grey_then_mapped(tmp_path, rng):
    bgr = rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    out = read_image(write(tmp_path / "a.png", bgr))
    grey = bgr[..., 2] * 0.299 + bgr[..., 1] * 0.587 + bgr[..., 0] * 0.114
    np.testing.assert_array_equal(out, robust(grey))


# --- DICOM ---------------------------------------------------------------------------------------


def dicom_bytes(pixels, photometric="MONOCHROME2", preamble=True, **elements):
    """A tiny uncompressed DICOM file; `elements` are extra attributes such as RescaleSlope."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype("<u2").tobytes()
    buffer = BytesIO()
    if preamble:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(buffer, enforce_file_format=True)
    else:
        ds.save_as(buffer, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def linear_window(values, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 'LINEAR' window, to 0..1 (its output range is shown as black to white)."""
    center, width = center - 0.5, width - 1
    return np.clip((values - center) / width + 0.5, 0.0, 1.0)


@pytest.fixture
def raw(rng):
    pixels = rng.integers(0, 4096, (12, 16), dtype=np.uint16)
    pixels[0, :4] = [0, 4095, 1000, 3000]
    return pixels


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_rescale_and_window(tmp_path, raw, photometric):
    slope, intercept, center, width = 2.0, -1024.0, 3000.0, 4000.0
    data = dicom_bytes(
        raw,
        photometric,
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        WindowCenter=center,
        WindowWidth=width,
    )
    path = tmp_path / "a.dcm"
    path.write_bytes(data)
    expected = np.rint(linear_window(raw * slope + intercept, center, width) * 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        expected = 255 - expected
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == raw.shape
    np.testing.assert_array_equal(out, expected)
    # The window saturates both ends here, so the test would notice a missing window.
    assert (linear_window(raw * slope + intercept, center, width) == 1.0).sum() > 1


def test_dicom_monochrome1_is_inverted(raw):
    mono2 = decode_image(dicom_bytes(raw, "MONOCHROME2"), "a.dcm")
    mono1 = decode_image(dicom_bytes(raw, "MONOCHROME1"), "a.dcm")
    np.testing.assert_array_equal(mono1, 255 - mono2)
    np.testing.assert_array_equal(mono2, robust(raw))


def test_dicom_rescale_without_window(raw):
    out = decode_image(dicom_bytes(raw, RescaleSlope=-1.0, RescaleIntercept=100.0), "x")
    np.testing.assert_array_equal(out, robust(raw * -1.0 + 100.0))


def test_dicom_narrow_data_keep_one_level_per_stored_level(rng):
    # Ten stored levels, rescaled by 0.5: still ten output levels about mid grey, not a full stretch.
    pixels = rng.integers(2000, 2010, (10, 10)).astype(np.uint16)
    pixels[0, :2] = 2000, 2009
    out = decode_image(dicom_bytes(pixels, RescaleSlope=0.5, RescaleIntercept=0.0), "x.dcm")
    np.testing.assert_array_equal(out.astype(int) - out.min(), pixels - 2000)
    assert 120 <= out.min() and out.max() <= 135


def test_dicom_window_is_kept_not_stretched(raw):
    # A window wider than the data: the image keeps the window's grey levels (a min-max stretch
    # afterwards, as before, made it black to white).
    data = (raw // 4 + 1000).astype(np.uint16)  # 1000..2023
    out = decode_image(dicom_bytes(data, WindowCenter=1500.0, WindowWidth=4001.0), "w.dcm")
    np.testing.assert_array_equal(out, np.rint(linear_window(data.astype(float), 1500.0, 4001.0) * 255))
    assert 60 <= out.min() and out.max() <= 195


@pytest.mark.parametrize(
    ("function", "formula"),
    [
        ("LINEAR_EXACT", lambda x, c, w: np.clip((x - c) / w + 0.5, 0, 1)),  # PS3.3 C.11.2.1.3.2
        ("SIGMOID", lambda x, c, w: 1 / (1 + np.exp(-4 * (x - c) / w))),  # PS3.3 C.11.2.1.3.1
    ],
)
def test_dicom_voi_functions(raw, function, formula):
    out = decode_image(dicom_bytes(raw, WindowCenter=2000.0, WindowWidth=1500.0, VOILUTFunction=function), "f.dcm")
    np.testing.assert_array_equal(out, np.rint(formula(raw.astype(float), 2000.0, 1500.0) * 255))


def test_dicom_voi_lut_sequence_maps_the_lut_range(raw):
    # A 12-bit VOI LUT whose entries span 100..1100 of a declared 16-bit output: that span is black to white.
    table = np.rint(100 + 1000 * np.sqrt(np.arange(4096) / 4095)).astype(np.uint16)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor: entries, first value mapped, bits
    item.add_new(0x00283006, "US", table.tolist())  # LUT Data
    out = decode_image(dicom_bytes(raw, VOILUTSequence=[item]), "lut.dcm")
    np.testing.assert_array_equal(out, to_uint8(table[raw], 100, 1100))


def test_dicom_without_preamble_is_read_by_its_name(raw):
    data = dicom_bytes(raw, preamble=False)
    assert data[128:132] != b"DICM"
    np.testing.assert_array_equal(decode_image(data, "scans/A.DCM"), robust(raw))
    with pytest.raises(ImageReadError, match="unsupported format"):
        decode_image(data, "scans/a.bin")


def test_dicom_truncated_names_the_file(tmp_path, raw):
    path = tmp_path / "cut.dcm"
    path.write_bytes(dicom_bytes(raw)[:-50])
    with pytest.raises(ImageReadError, match=r"cut\.dcm") as info:
        read_image(path)
    assert "DICOM" in info.value.reason


def test_dicom_without_pixels(tmp_path):
    ds = Dataset()
    ds.PatientID = "p1"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "meta.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageReadError, match="without pixel data"):
        read_image(path)


# --- DICOM: pydicom's own test files as a corpus -------------------------------------------------


def pydicom_files():
    """Every file that ships with pydicom, offline: pydicom would download its online set otherwise."""
    offline = mock.patch.object(data_manager, "online_test_file_dummy_paths", return_value={})
    no_network = mock.patch.object(download, "download_with_progress", side_effect=AssertionError("network"))
    with offline, no_network:
        files = pydicom.data.get_testdata_files()
    return sorted(f for f in files if os.path.isfile(f) and os.path.getsize(f) < 5_000_000)


def luma(rgb):
    rgb = rgb[..., :3].astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def expected_grey(path):
    """What the file must read as, straight from pydicom and the standard, or None: no image to give."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
            if "PixelData" not in ds or int(ds.get("NumberOfFrames", 1) or 1) != 1:
                return None
            pixels = ds.pixel_array
    except Exception:
        return None
    photometric = ds.PhotometricInterpretation
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        values = apply_modality_lut(pixels, ds)
        if "WindowCenter" in ds:
            assert "VOILUTSequence" not in ds and ds.get("VOILUTFunction", "LINEAR") == "LINEAR"
            multi = pydicom.multival.MultiValue
            center, width = (v[0] if isinstance(v, multi) else v for v in (ds.WindowCenter, ds.WindowWidth))
            grey = np.rint(linear_window(values, float(center), float(width)) * 255)
        else:
            grey = robust(values, min(255, 2**ds.BitsStored - 1) * abs(float(ds.get("RescaleSlope", 1))))
        return 255 - grey if photometric == "MONOCHROME1" else grey
    if photometric == "PALETTE COLOR":
        depth = 2 ** ds.RedPaletteColorLookupTableDescriptor[2] - 1
        return np.rint(luma(apply_color_lut(pixels, ds)) / depth * 255)
    assert photometric == "RGB" or photometric.startswith("YBR"), photometric  # pydicom gives RGB for both
    return np.rint(luma(pixels) / (2**ds.BitsStored - 1) * 255)


def test_every_pydicom_file_reads_correctly_or_says_why_not():
    files = pydicom_files()
    assert len(files) > 150, "pydicom's test files are missing"
    read, refused, wrong = [], [], []
    for path in files:
        name = os.path.relpath(path, data_manager.DATA_ROOT)
        expected = expected_grey(path)
        try:
            out = read_image(path)
        except ImageReadError as error:
            refused.append(name)
            if expected is not None:
                wrong.append(f"{name}: refused ({error.reason}) but pydicom reads it")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=False)
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            no_decoder = syntax is not None and syntax.is_compressed and not get_decoder(syntax).is_available
            if "PixelData" in ds and no_decoder:
                if not re.search(r"install one of: .*(python-gdcm|pylibjpeg|pyjpegls)", error.reason):
                    wrong.append(f"{name}: no decoder for {syntax.name}, but the reason names none: {error.reason}")
            continue
        except Exception as error:  # anything but ImageReadError is a failure
            wrong.append(f"{name}: {type(error).__name__}: {error}")
            continue
        read.append(name)
        if expected is None:
            wrong.append(f"{name}: read, but pydicom gives no single-frame image")
        elif out.shape != expected.shape or np.abs(out.astype(float) - expected).max() > 1:
            wrong.append(f"{name}: differs from pydicom's pixels by up to {np.abs(out - expected).max()}")
    assert not wrong, "\n".join(wrong)
    # Files that need no optional decoder must read: greyscale, windowed MONOCHROME1, palette, 32-bit RGB, YBR.
    must_read = {
        "CT_small.dcm",
        "MR_small.dcm",
        "liver_1frame.dcm",
        "examples_palette.dcm",
        "SC_rgb_rle_32bit.dcm",
        "SC_rgb_rle_16bit.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "dicomdirtests/77654033/CR1/6154",
    }
    assert must_read <= {name.removeprefix("test_files/") for name in read}
    assert len(read) > 60 and len(refused) > 60


def dicom_file(name):
    return get_testdata_file(name, download=False)


def test_palette_colour_dicom_shows_its_palette_not_its_indices():
    path = dicom_file("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    # The palette from its raw bytes (16-bit little-endian entries), not through pydicom's helper.
    entries, first, bits = ds.RedPaletteColorLookupTableDescriptor
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and bits == 16
    channels = [np.frombuffer(ds[f"{c}PaletteColorLookupTableData"].value, "<u2") for c in ("Red", "Green", "Blue")]
    index = np.clip(ds.pixel_array.astype(int) - first, 0, entries - 1)
    rgb = np.stack([channel[index] for channel in channels], axis=-1)
    out = read_image(path)
    assert np.abs(out - np.rint(luma(rgb) / 65535 * 255)).max() <= 1
    # Before: the indices themselves, stretched. They look nothing like the palette's colours.
    assert np.abs(out.astype(float) - robust(ds.pixel_array, 0)).mean() > 20


def test_deep_rgb_dicom_matches_its_8_bit_twin():
    # pydicom's 16- and 32-bit files hold the 8-bit image times 257 and 16843009: the full range maps back.
    eight = read_image(dicom_file("SC_rgb_rle.dcm"))
    assert len(np.unique(eight)) > 5
    np.testing.assert_array_equal(read_image(dicom_file("SC_rgb_rle_16bit.dcm")), eight)
    np.testing.assert_array_equal(read_image(dicom_file("SC_rgb_rle_32bit.dcm")), eight)


def rgb_dicom_bytes(rgb, bits_stored):
    """An uncompressed RGB DICOM of any bit depth (16 or 32 bits allocated)."""
    allocated = 16 if bits_stored <= 16 else 32
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PhotometricInterpretation = 3, 0, "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits_stored, bits_stored - 1, 0
    ds.PixelData = rgb.astype(f"<u{allocated // 8}").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(("bits", "scale"), [(12, 16), (16, 257), (32, 16843009)])
def test_deep_rgb_dicom_maps_its_full_range(rng, bits, scale):
    # Mid-range colours (50..200 of 255): the full range of the stored bits is the window, so the grey
    # is the 8-bit image's, not stretched to black and white.
    rgb8 = rng.integers(50, 201, (9, 11, 3)).astype(np.uint64)
    out = decode_image(rgb_dicom_bytes(rgb8 * scale, bits), "rgb.dcm")
    expected = np.rint(luma(rgb8 * scale) / (2**bits - 1) * 255)
    np.testing.assert_array_equal(out, expected)
    assert np.abs(out - luma(rgb8)).max() <= 1.5 and out.min() > 40


@pytest.mark.parametrize(
    "name",
    [
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_dcmtk_+eb+cy+n1.dcm",
        "SC_rgb_dcmtk_+eb+cy+np.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
    ],
)
def test_ybr_dicom_greys_like_its_rgb_original(name):
    # The same picture as the lossless RGB SC_rgb_rle.dcm, stored as YCbCr (JPEG lossy or uncompressed 4:2:2).
    rgb = read_image(dicom_file("SC_rgb_rle.dcm")).astype(int)
    try:
        ybr = read_image(dicom_file(name)).astype(int)
    except ImageReadError as error:  # Pillow, a dependency, decodes these for pydicom
        pytest.fail(f"{name}: JPEG-compressed DICOM could not be read ({error.reason}); is Pillow installed?")
    assert np.abs(ybr - rgb).mean() < 1 and np.abs(ybr - rgb).max() <= 8


def test_compressed_dicom_without_decoder_names_the_package(monkeypatch):
    syntax = pydicom.dcmread(dicom_file("MR_small_jpeg_ls_lossless.dcm")).file_meta.TransferSyntaxUID
    if get_decoder(syntax).is_available:  # one is installed here: read as a machine without one would
        missing = [
            "gdcm - requires gdcm>=3.0.10",  # pydicom 3's own wording
            "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1",
        ]
        unavailable = mock.Mock(is_available=False, missing_dependencies=missing)
        monkeypatch.setattr(io, "get_decoder", lambda _: unavailable)
    with pytest.raises(ImageReadError) as info:
        read_image(dicom_file("MR_small_jpeg_ls_lossless.dcm"))
    assert "JPEG-LS" in info.value.reason
    assert "'python-gdcm>=3.0.10'" in info.value.reason and "'pylibjpeg-libjpeg>=2.1'" in info.value.reason


def test_multi_frame_dicom_is_refused_before_decoding():
    with pytest.raises(ImageReadError, match=r"multi-frame DICOM \(30 frames\)"):
        read_image(dicom_file("examples_ybr_color.dcm"))


# --- bad files -------------------------------------------------------------------------------------


@pytest.fixture
def good_png(tmp_path, rng):
    return write(tmp_path / "good.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))


@pytest.mark.parametrize(
    ("ext", "keep", "reason"),
    [
        (".png", 0.5, "truncated PNG"),
        (".png", -12, "truncated PNG"),  # everything but the IEND chunk
        (".jpg", 0.5, "truncated JPEG"),
        (".jpg", -2, "truncated JPEG"),  # everything but the end-of-image marker
    ],
)
def test_truncated_files_name_the_file(tmp_path, rng, ext, keep, reason):
    image = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    data = cv2.imencode(ext, image)[1].tobytes()
    data = data[: int(len(data) * keep)] if isinstance(keep, float) else data[:keep]
    path = tmp_path / f"broken{ext}"
    path.write_bytes(data)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert reason in info.value.reason
    assert "broken" + ext in str(info.value)
    assert info.value.path == str(path)


def cut_in_scan(data, fraction):
    """The JPEG cut `fraction` of the way through its last scan, with an end-of-image marker appended."""
    scan = data.rfind(b"\xff\xda")
    return data[: scan + int((len(data) - scan) * fraction)] + b"\xff\xd9"


@pytest.fixture
def photo(rng):
    return cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), (7, 7), 0)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.95])
@pytest.mark.parametrize(("colour", "progressive"), [(False, False), (True, False), (False, True)])
def test_truncated_jpeg_with_end_marker_appended(photo, fraction, colour, progressive):
    image = photo if colour else photo[..., 0]
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])[1].tobytes()
    cut = cut_in_scan(data, fraction)
    # What OpenCV makes of it: an image, lost blocks filled with grey, and no error.
    assert cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    with pytest.raises(ImageReadError, match=r"truncated or corrupt JPEG data \(libjpeg: .*premature end"):
        decode_image(cut, "cut.jpg")
    np.testing.assert_array_equal(
        decode_image(data, "whole.jpg"), cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    )


def test_jpeg_with_harmless_warning_reads_and_passes_the_warning_on(photo, capfd):
    data = cv2.imencode(".jpg", photo[..., 1])[1].tobytes()
    padded = data[:-2] + b"\x00" * 7 + data[-2:]  # libjpeg: "7 extraneous bytes before marker 0xd9"
    np.testing.assert_array_equal(decode_image(padded, "padded.jpg"), decode_image(data, "a.jpg"))
    assert "extraneous bytes" in capfd.readouterr().err


def test_jpeg_checks_are_thread_safe(photo):
    data = cv2.imencode(".jpg", photo)[1].tobytes()
    cut = cut_in_scan(data, 0.5)
    expected = decode_image(data, "a.jpg")

    def work(i):
        if i % 2:
            with pytest.raises(ImageReadError, match="truncated or corrupt"):
                decode_image(cut, "cut.jpg")
        else:
            np.testing.assert_array_equal(decode_image(data, "a.jpg"), expected)
        return i

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(work, range(80))) == list(range(80))


@pytest.mark.large
@pytest.mark.skipif(not os.environ.get("TF_FRACTURE_FRACATLAS"), reason="TF_FRACTURE_FRACATLAS is not set")
def test_fracatlas_jpegs_truncated_are_caught_and_the_rest_read():
    # The audit found 59 FracAtlas JPEGs cut short (no end-of-image marker); the other 4,024 are whole.
    # With an end-of-image marker appended, each of the 59 must still be refused. About 15 s here.
    root = os.environ["TF_FRACTURE_FRACATLAS"]
    paths = sorted(glob.glob(os.path.join(root, "images", "*", "*.jpg")))
    assert len(paths) == 4083, f"{root} does not hold FracAtlas's 4,083 images"
    images, failures = read_images(paths)
    assert len(failures) == 59 and all("truncated JPEG" in reason for _, reason in failures)
    assert len(images) == 4024
    for path, _ in failures:
        with open(path, "rb") as f:
            data = f.read() + b"\xff\xd9"
        with pytest.raises(ImageReadError, match="truncated or corrupt JPEG data"):
            decode_image(data, path)


def test_corrupt_png_body(tmp_path, good_png):
    data = bytearray(good_png.read_bytes())
    data[40:-20] = bytes(len(data) - 60)  # keeps the signature and IEND, wipes the chunks between
    path = tmp_path / "zeroed.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"zeroed\.png.*corrupt PNG"):
        read_image(path)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.png", b"", "empty"),
        ("noise.png", np.random.default_rng(1).bytes(500), "unsupported format"),
        ("noise.dcm", np.random.default_rng(2).bytes(500), "DICOM"),
    ],
)
def test_unreadable_bytes_name_the_file(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageReadError, match=re.escape(name)) as info:
        read_image(path)
    assert reason in info.value.reason


def test_missing_file_is_an_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match=r"nowhere\.png': no such file"):
        read_image(tmp_path / "nowhere.png")


def test_uris_are_read_through_gfile_or_fsspec(tmp_path, rng, monkeypatch):
    spec = importlib.util.find_spec
    image = rng.integers(0, 256, (6, 9), dtype=np.uint8)
    data = cv2.imencode(".png", image)[1].tobytes()
    # TensorFlow's in-memory file system stands in for gs:// (read with tf.io.gfile where TF is installed).
    import tensorflow as tf

    tf.io.gfile.GFile("ram://io_test/a.png", "wb").write(data)
    np.testing.assert_array_equal(read_image("ram://io_test/a.png"), image)
    with pytest.raises(ImageReadError, match=r"no such file|cannot be read"):
        read_image("ram://io_test/missing.png")
    local = tmp_path / "b.png"
    local.write_bytes(data)
    np.testing.assert_array_equal(read_image(f"file://{local}"), image)
    # Without TensorFlow, fsspec reads URIs (its memory:// file system here); without either, a clear error.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else spec(name, *a))
    fsspec = pytest.importorskip("fsspec")
    with fsspec.open("memory://io_test/c.png", "wb") as f:
        f.write(data)
    np.testing.assert_array_equal(read_image("memory://io_test/c.png"), image)
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ImageReadError, match=r"reading a URI needs TensorFlow \(tf.io.gfile\) or fsspec"):
        read_image("gs://bucket/a.png")
    np.testing.assert_array_equal(read_image(local), image)  # local files need neither


def test_error_message_and_pickling():
    error = ImageReadError("a/b.png", "truncated PNG data")
    assert str(error) == "Cannot read image 'a/b.png': truncated PNG data. Check the file or remove it."
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


def test_read_images_skips_and_lists_bad_files(tmp_path, rng, good_png):
    second = write(tmp_path / "second.png", rng.integers(0, 256, (8, 9), dtype=np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(cv2.imencode(".jpg", np.zeros((30, 30), np.uint8))[1].tobytes()[:100])
    missing = tmp_path / "missing.png"
    images, failures = read_images([good_png, broken, str(second), missing])
    assert list(images) == [str(good_png), str(second)]
    np.testing.assert_array_equal(images[str(second)], cv2.imread(str(second), cv2.IMREAD_UNCHANGED))
    assert [path for path, _ in failures] == [str(broken), str(missing)]
    assert "truncated JPEG" in failures[0][1] and failures[1][1] == "no such file"


def test_read_each_skips_and_lists_bad_files_and_keeps_the_rest(tmp_path, caplog):
    good = tmp_path / "good.png"
    good.write_bytes(cv2.imencode(".png", np.full((4, 5), 7, np.uint8))[1].tobytes())
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [str(good), str(tmp_path / "empty.png"), str(tmp_path / "missing.png"), str(good)]
    skipped = {}
    read = list(io.read_each(paths, io.read_image, skipped))
    assert [path for path, _ in read] == [str(good), str(good)]
    assert all(image.shape == (4, 5) for _, image in read)
    assert set(skipped) == {str(tmp_path / "empty.png"), str(tmp_path / "missing.png")}
    assert "empty" in skipped[str(tmp_path / "empty.png")]
    with caplog.at_level("WARNING"):
        io.list_skipped("Test", "file(s) unreadable", skipped)
    assert "Test: 2 file(s) unreadable:" in caplog.text and "missing.png: no such file" in caplog.text


def test_read_each_lets_bugs_through():
    # Only a bad file is skipped: any other exception is a bug and must not be swallowed.
    def broken(path):
        raise KeyError(path)

    with pytest.raises(KeyError):
        list(io.read_each(["a.png"], broken, {}))
