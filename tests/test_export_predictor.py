"""export/predictor.py and export/predict.py: the TF-free predictor agrees with Keras on PNG, JPEG and DICOM,
follows its metadata (so wrong metadata shows), skips bad files, draws the CAM heatmaps, and its CLI's output
and exit codes."""

import json
import os
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
from export_helpers import radiograph, spread_batchnorm, to_tflite
from harness import randomise_network_weights
from pydicom.data import get_testdata_file
from test_tf_free import run_without_tensorflow

from tf_fracture.data.io import read_image
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.models import build_classifier, cam_model
from tf_fracture_export import heatmap, predict
from tf_fracture_export.convert import convert
from tf_fracture_export.metadata import ModelMetadata, metadata_path, write_metadata
from tf_fracture_export.predictor import Predictor

SIZE = 64
CAM_SIZE = (2, 2)  # MobileNetV3's last feature map: stride 32
CONFIG = PreprocessConfig(SIZE, unsharp_kernel=5)
# float32 TFLite against Keras on the same preprocessed input (SPEC8's float32 tolerance).
FLOAT32_TOLERANCE = 1e-4
THRESHOLDS = {"youden": 0.5, "fixed": 0.5}
# A heatmap PNG against the overlay of Keras' CAM: a float32 difference of ~1e-6 can move a pixel's colour
# map index by one where it rounds (a JET step is at most 4 levels in a channel, times the opacity 0.6),
# plus the blend's own rounding.
OVERLAY_TOLERANCE = 3


def write_image(path, image):
    path.write_bytes(cv2.imencode(path.suffix, image)[1].tobytes())
    return str(path)


def write_model_metadata(model_path, preprocessing=CONFIG, **changes):
    metadata = ModelMetadata(
        model_file=model_path.name,
        quantization="float32",
        labels=("normal", "fracture"),
        preprocessing=preprocessing,
        thresholds=THRESHOLDS,
        default_threshold="youden",
        source_run="test",
        cam_size=CAM_SIZE,
    ).replace(**changes)
    return write_metadata(metadata, metadata_path(model_path))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny MobileNetV3-small classifier, its float32 .tflite (probability and CAM) with metadata, and PNG,
    JPEG and DICOM files."""
    folder = tmp_path_factory.mktemp("predictor")
    keras.utils.set_random_seed(0)
    model = build_classifier("mobilenetv3", "small", weights=None, input_size=SIZE, preprocessing=CONFIG)
    rng = np.random.default_rng(0)
    files = [
        write_image(folder / "wide.png", radiograph(rng, 90, 130)),
        write_image(folder / "tall.png", radiograph(rng, 150, 70)),
        write_image(folder / "small.jpg", radiograph(rng, 50, 40)),
        get_testdata_file("CT_small.dcm", download=False),
    ]
    make_answers_depend_on_the_image(model, files)
    model_path = folder / "model_float32.tflite"
    model_path.write_bytes(convert(model, "float32"))
    write_model_metadata(model_path)
    return model, model_path, files


@pytest.fixture(scope="module")
def probability_only(exported, tmp_path_factory):
    """The same classifier as a .tflite that gives the probability only (as exported before the CAM output)."""
    model, _, _ = exported
    path = to_tflite(model, tmp_path_factory.mktemp("probability_only") / "model_float32.tflite", sigmoid=True)
    write_model_metadata(path, cam_size=None)
    return path


def make_answers_depend_on_the_image(model, files):
    # An untrained deep network's activations fade layer by layer (the logits of different images agree
    # to 1e-11 at init, and to 1e-7 after randomise_network_weights). Set every BatchNorm's statistics
    # to the images' own, then scale the head (the CAM layer, whose mean is the logit) so the logits
    # spread about 0 with std 2: the probabilities then differ by tenths between images, as a trained
    # model's do, and a preprocessing or quantisation mistake shows.
    randomise_network_weights(model, seed=0)
    batch = inputs(files)
    noise = np.random.default_rng(1).uniform(0, 255, (8, *batch.shape[1:])).astype(np.float32)
    spread_batchnorm(model, np.concatenate([batch, noise]))
    logits = np.asarray(model(batch, training=False))[:, 0]
    kernel, bias = model.get_layer("cam").get_weights()
    scale = 2.0 / logits.std()
    model.get_layer("cam").set_weights([kernel * scale, (bias - logits.mean()) * scale])


def inputs(files, config=CONFIG):
    return np.stack([preprocess(read_image(f), config) for f in files])[..., np.newaxis].astype(np.float32)


def keras_probabilities(model, files, config=CONFIG):
    logits = np.asarray(model(inputs(files, config), training=False), np.float64)[:, 0]
    return 1.0 / (1.0 + np.exp(-logits))


def test_predictor_matches_keras_on_png_jpeg_and_dicom(exported):
    model, model_path, files = exported
    result = Predictor(model_path).predict_files(files)
    assert result.skipped == {} and [p.path for p in result.predictions] == files
    got = np.array([p.probability for p in result.predictions])
    expected = keras_probabilities(model, files)
    np.testing.assert_allclose(got, expected, rtol=0, atol=FLOAT32_TOLERANCE)
    assert np.ptp(expected) > 0.05, expected  # the files get different answers: the comparison can see a mix-up


def test_predict_images_labels_at_the_metadata_threshold(exported, tmp_path):
    model, model_path, files = exported
    images = [read_image(f) for f in files]
    expected = keras_probabilities(model, files)
    threshold = float(np.median(expected))  # some images on each side
    copy = tmp_path / "model.tflite"
    copy.write_bytes(model_path.read_bytes())
    write_model_metadata(copy, thresholds={"youden": threshold, "fixed": 0.5})
    predictions = Predictor(copy).predict_images(images, names=["a", "b", "c", "d"])
    assert [p.path for p in predictions] == ["a", "b", "c", "d"]
    assert [p.label for p in predictions] == ["fracture" if e >= threshold else "normal" for e in expected]
    assert {p.threshold_name for p in predictions} == {"youden"} and predictions[0].threshold == threshold
    assert len({p.label for p in predictions}) == 2
    fixed = Predictor(copy, threshold="fixed").predict_images(images[:1])[0]
    assert (fixed.path, fixed.threshold_name, fixed.threshold) == ("image 0", "fixed", 0.5)


@pytest.mark.parametrize(
    "wrong", [PreprocessConfig(SIZE, unsharp_kernel=7), PreprocessConfig(SIZE, unsharp_kernel=5, clahe_clip_limit=4.0)]
)
def test_wrong_preprocessing_in_the_metadata_shows_as_a_difference_from_keras(exported, tmp_path, wrong):
    # The predictor follows the metadata: an export that recorded the wrong preprocessing is caught by
    # comparing with Keras on the training preprocessing.
    model, model_path, files = exported
    copy = tmp_path / "model.tflite"
    copy.write_bytes(model_path.read_bytes())
    write_model_metadata(copy, preprocessing=wrong)
    got = np.array([p.probability for p in Predictor(copy).predict_files(files).predictions])
    assert np.abs(got - keras_probabilities(model, files)).max() > 10 * FLOAT32_TOLERANCE
    # ... and it is exactly Keras on the wrong preprocessing.
    np.testing.assert_allclose(got, keras_probabilities(model, files, wrong), atol=FLOAT32_TOLERANCE)


def test_metadata_that_does_not_fit_the_model_is_refused(exported, tmp_path):
    _, model_path, _ = exported
    copy = tmp_path / "model.tflite"
    copy.write_bytes(model_path.read_bytes())
    write_model_metadata(copy, preprocessing=PreprocessConfig(48, unsharp_kernel=5))
    with pytest.raises(ValueError, match=r"image_size is 48 but the model's input is 64x64.*[Ee]xport the model again"):
        Predictor(copy)
    write_model_metadata(copy, quantization="int8")
    with pytest.raises(ValueError, match=r"metadata says 'int8' with int8 input but the model's input is float32"):
        Predictor(copy)
    # The outputs must be the ones the metadata lists: a CAM it does not know of, or one of another size.
    write_model_metadata(copy, cam_size=None)
    with pytest.raises(ValueError, match=r"lists the probability only but the model gives the probability and a 2x2"):
        Predictor(copy)
    write_model_metadata(copy, cam_size=(3, 3))
    with pytest.raises(ValueError, match=r"lists the probability and a 3x3 CAM but the model gives .* 2x2 CAM"):
        Predictor(copy)
    write_model_metadata(copy)
    with pytest.raises(ValueError, match=r"Unknown threshold 'nope'.*fixed, youden"):
        Predictor(copy, threshold="nope")
    metadata_path(copy).unlink()
    with pytest.raises(FileNotFoundError, match=r"No model metadata.*tf-fracture export writes both"):
        Predictor(copy)


def bad_files(folder):
    png = cv2.imencode(".png", np.full((20, 20), 9, np.uint8))[1].tobytes()
    (folder / "cut.png").write_bytes(png[: len(png) // 2])
    (folder / "notes.txt").write_text("not an image")
    return {
        str(folder / "cut.png"): "truncated PNG data",
        str(folder / "notes.txt"): "unsupported format",
        str(folder / "missing.png"): "no such file",
    }


def test_bad_files_are_skipped_with_their_reason_and_the_rest_still_run(exported, tmp_path):
    _, model_path, files = exported
    bad = bad_files(tmp_path)
    paths = [*bad][:1] + files[:2] + [*bad][1:] + files[2:]
    result = Predictor(model_path).predict_files(paths)
    assert [p.path for p in result.predictions] == files
    assert sorted(result.skipped) == sorted(bad)
    for path, reason in bad.items():
        assert reason in result.skipped[path], result.skipped[path]
    assert Predictor(model_path).predict_files([*bad]).predictions == ()


def test_cli_prints_one_line_per_image_and_lists_skipped_files(exported, tmp_path, capsys):
    model, model_path, files = exported
    bad = bad_files(tmp_path)
    assert predict.main([str(model_path), *files, *bad, "--threads", "2"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == len(files)
    for line, path, expected in zip(lines, files, keras_probabilities(model, files), strict=True):
        name, probability, label = line.split("\t")
        assert name == path and abs(float(probability) - expected) < 1e-4 + 5e-5  # printed to 4 decimals
        assert label == ("fracture" if expected >= THRESHOLDS["youden"] else "normal")
    assert "skipped 3 unreadable file(s)" in err and all(path in err for path in bad)


def test_cli_json_schema(exported, tmp_path, capsys):
    _, model_path, files = exported
    bad_files(tmp_path)
    cut = str(tmp_path / "cut.png")
    assert predict.main([str(model_path), files[0], cut, "--json", "--threshold", "fixed"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"model", "quantization", "labels", "threshold", "predictions", "skipped"}
    assert document["threshold"] == {"name": "fixed", "value": 0.5}
    assert document["labels"] == ["normal", "fracture"] and document["quantization"] == "float32"
    (entry,) = document["predictions"]
    assert set(entry) == {"path", "probability", "label", "threshold", "threshold_name", "heatmap"}
    assert entry["heatmap"] is None  # none asked for
    assert entry["path"] == files[0] and 0 <= entry["probability"] <= 1 and entry["label"] in document["labels"]
    (skipped,) = document["skipped"]
    assert skipped["path"] == cut and "truncated PNG data" in skipped["reason"]


def test_cli_exit_codes(exported, tmp_path, capsys):
    _, model_path, files = exported
    bad = bad_files(tmp_path)
    assert predict.main([str(model_path), *bad]) == predict.EXIT_NO_IMAGES == 1
    assert "none of the 3 image(s) could be read" in capsys.readouterr().err
    assert predict.main([str(tmp_path / "nothing.tflite"), files[0]]) == predict.EXIT_BAD_MODEL == 2
    assert "No model at" in capsys.readouterr().err
    lonely = tmp_path / "lonely.tflite"
    lonely.write_bytes(model_path.read_bytes())
    assert predict.main([str(lonely), files[0]]) == predict.EXIT_BAD_MODEL
    assert "No model metadata" in capsys.readouterr().err
    write_model_metadata(lonely)
    metadata_path(lonely).write_text("{not json")
    assert predict.main([str(lonely), files[0]]) == predict.EXIT_BAD_MODEL
    assert "not valid JSON" in capsys.readouterr().err
    assert predict.main([str(model_path), files[0], "--threshold", "nope"]) == predict.EXIT_BAD_MODEL
    assert "Unknown threshold 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        predict.main([str(model_path), files[0], "--threads", "0"])
    assert exit_.value.code == 2 and "expected a whole number >= 1" in capsys.readouterr().err


def test_predictor_and_cli_run_where_tensorflow_cannot_be_imported(exported, tmp_path):
    model, model_path, files = exported
    out = tmp_path / "out.json"
    maps = tmp_path / "maps"
    exercise = f"""
import contextlib, io, json
predictor = module.Predictor({str(model_path)!r})
probabilities = [p.probability for p in predictor.predict_files({files!r}).predictions]
from tf_fracture_export.predict import main
stdout = io.StringIO()
with contextlib.redirect_stdout(stdout):
    code = main([{str(model_path)!r}, *{files!r}, "--json", "--heatmap", {str(maps)!r}])
answers = json.loads(stdout.getvalue())["predictions"]
cli = [p["probability"] for p in answers]
heatmaps = [p["heatmap"] for p in answers]
open({str(out)!r}, "w").write(json.dumps({{"predictor": probabilities, "cli": cli, "code": code, "maps": heatmaps}}))
"""
    result = run_without_tensorflow("tf_fracture_export.predictor", tmp_path, exercise)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
    answers = json.loads(out.read_text())
    expected = keras_probabilities(model, files)
    assert answers["code"] == 0
    np.testing.assert_allclose(answers["predictor"], expected, atol=FLOAT32_TOLERANCE)
    np.testing.assert_allclose(answers["cli"], expected, atol=FLOAT32_TOLERANCE)
    # The heatmaps too (heatmap.py: NumPy and OpenCV only), the same as Keras' CAM drawn here.
    assert sorted(answers["maps"]) == sorted(str(p) for p in maps.iterdir()) and len(answers["maps"]) == len(files)
    for path, expected_overlay in zip(answers["maps"], keras_overlays(model, files), strict=True):
        np.testing.assert_allclose(cv2.imread(path).astype(int), expected_overlay.astype(int), atol=OVERLAY_TOLERANCE)


def keras_overlays(model, files):
    """Each file's heatmap drawn from Keras' own CAM (`cam_model`) on the preprocessed input: BGR uint8."""
    images = inputs(files)
    cams = np.asarray(cam_model(model)(images, training=False)[0])[..., 0]
    return [heatmap.overlay(image, heatmap.cam_heat(cam, SIZE)) for image, cam in zip(images, cams, strict=True)]


def test_heatmaps_one_png_per_readable_image_drawing_the_models_own_cam(exported, tmp_path):
    model, model_path, files = exported
    bad = bad_files(tmp_path)
    out = tmp_path / "maps"
    result = Predictor(model_path).predict_files([*bad][:1] + files + [*bad][1:], heatmap_dir=out)
    assert sorted(result.skipped) == sorted(bad) and [p.path for p in result.predictions] == files
    # One PNG per readable file, named after it; nothing for the files that could not be read.
    names = ["wide_heatmap.png", "tall_heatmap.png", "small_heatmap.png", "CT_small_heatmap.png"]
    assert [p.heatmap for p in result.predictions] == [str(out / name) for name in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    overlays = keras_overlays(model, files)
    for prediction, expected in zip(result.predictions, overlays, strict=True):
        written = cv2.imread(prediction.heatmap, cv2.IMREAD_UNCHANGED)
        assert written.shape == (SIZE, SIZE, 3) and written.dtype == np.uint8  # the model's input, in colour
        np.testing.assert_allclose(written.astype(int), expected.astype(int), atol=OVERLAY_TOLERANCE)
    # The comparison can fail: the maps differ between images, and a map drawn transposed (or another
    # image's) is far off.
    cams = np.asarray(cam_model(model)(inputs(files), training=False)[0])[..., 0]
    assert min(np.ptp(cam) for cam in cams) > 0.5, cams
    image = inputs(files[:1])[0]
    transposed = heatmap.overlay(image, heatmap.cam_heat(cams[0].T, SIZE))
    assert np.abs(transposed.astype(int) - overlays[0]).max() > 10 * OVERLAY_TOLERANCE
    # The probabilities are those of a run without heatmaps.
    plain = Predictor(model_path).predict_files(files).predictions
    assert [p.probability for p in plain] == [p.probability for p in result.predictions]
    assert {p.heatmap for p in plain} == {None}


def test_cli_heatmap_adds_a_column_and_the_json_path(exported, tmp_path, capsys):
    _, model_path, files = exported
    bad = bad_files(tmp_path)
    out = tmp_path / "maps"
    assert predict.main([str(model_path), *files[:2], *bad, "--heatmap", str(out)]) == 0
    stdout, err = capsys.readouterr()
    lines = [line.split("\t") for line in stdout.strip().splitlines()]
    assert [line[0] for line in lines] == files[:2]
    assert [line[3] for line in lines] == [str(out / "wide_heatmap.png"), str(out / "tall_heatmap.png")]
    assert all(os.path.isfile(line[3]) for line in lines) and len(list(out.iterdir())) == 2
    assert "skipped 3 unreadable file(s)" in err
    assert predict.main([str(model_path), files[2], "--heatmap", str(out), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["predictions"]
    assert entry["heatmap"] == str(out / "small_heatmap.png") and os.path.isfile(entry["heatmap"])


def test_a_model_without_a_cam_predicts_but_refuses_heatmaps(exported, probability_only, tmp_path, capsys):
    model, _, files = exported
    predictor = Predictor(probability_only)
    assert not predictor.has_cam and predictor.metadata.cam_size is None
    got = [p.probability for p in predictor.predict_files(files).predictions]
    np.testing.assert_allclose(got, keras_probabilities(model, files), atol=FLOAT32_TOLERANCE)
    out = tmp_path / "maps"
    with pytest.raises(ValueError, match="probability only"):
        predictor.predict_files(files, heatmap_dir=out)
    assert predict.main([str(probability_only), *files, "--heatmap", str(out)]) == predict.EXIT_BAD_MODEL
    assert "cannot draw heatmaps" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was read or written


def test_python_m_entry_point(exported):
    _, model_path, files = exported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run(
        [sys.executable, "-m", "tf_fracture_export.predict", str(model_path), files[0], "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["predictions"][0]["path"] == files[0]
