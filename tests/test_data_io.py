"""Reading radiographs: decoded values against NumPy, DICOM against the standard's formulas, bad files."""

import pickle
import re
from io import BytesIO

import cv2
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from tf_fracture.data.io import ImageReadError, decode_image, read_image, read_images


def write(path, image, ext=None):
    ok, data = cv2.imencode(ext or path.suffix, image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def stretch(values):
    """The documented min-max stretch to 0..255, in float64 with round-half-even."""
    values = values.astype(np.float64)
    return np.rint((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)


def test_png_8bit_is_read_unchanged(tmp_path, rng):
    image = rng.integers(0, 256, (23, 17), dtype=np.uint8)
    out = read_image(write(tmp_path / "a.png", image))
    assert out.dtype == np.uint8 and out.shape == (23, 17)
    np.testing.assert_array_equal(out, image)


def test_png_16bit_12bit_data_is_stretched(tmp_path, rng):
    image = rng.integers(0, 4096, (20, 30), dtype=np.uint16)
    image[0, 0], image[0, 1] = 0, 4095
    out = read_image(write(tmp_path / "a.png", image))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, stretch(image))
    # The point of the stretch: `>> 8` would leave 12-bit data in 0..15, nearly black.
    assert out.max() == 255 and (image >> 8).max() == 15


def test_png_16bit_narrow_range_and_constant(tmp_path):
    image = np.array([[1000, 1001], [1002, 1003]], np.uint16)
    np.testing.assert_array_equal(read_image(write(tmp_path / "a.png", image)), [[0, 85], [170, 255]])
    constant = np.full((4, 5), 700, np.uint16)
    np.testing.assert_array_equal(read_image(write(tmp_path / "c.png", constant)), np.zeros((4, 5), np.uint8))


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


def test_colour_png_16bit_is_grey_then_stretched(tmp_path, rng):
    bgr = rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    out = read_image(write(tmp_path / "a.png", bgr))
    np.testing.assert_array_equal(out, stretch(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)))


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
    """DICOM PS3.3 C.11.2.1.2.1 'LINEAR' window, to 0..1 (the output range cancels in the stretch)."""
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
    expected = stretch(linear_window(raw * slope + intercept, center, width))
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
    np.testing.assert_array_equal(mono2, stretch(raw))


def test_dicom_rescale_without_window(raw):
    out = decode_image(dicom_bytes(raw, RescaleSlope=-1.0, RescaleIntercept=100.0), "x")
    np.testing.assert_array_equal(out, stretch(raw * -1.0 + 100.0))


def test_dicom_without_preamble_is_read_by_its_name(raw):
    data = dicom_bytes(raw, preamble=False)
    assert data[128:132] != b"DICM"
    np.testing.assert_array_equal(decode_image(data, "scans/A.DCM"), stretch(raw))
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
