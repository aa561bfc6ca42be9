"""export/predictor.py and export/predict.py: the TF-free predictor agrees with Keras on PNG, JPEG and DICOM,
follows its metadata (so wrong metadata shows), skips bad files, and its CLI's output and exit codes."""

import json
import os
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
from export_helpers import to_tflite
from harness import randomise_network_weights
from pydicom.data import get_testdata_file
from test_tf_free import run_without_tensorflow

from tf_fracture.data.io import read_image
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.models import build_classifier
from tf_fracture_export import predict
from tf_fracture_export.metadata import ModelMetadata, metadata_path, write_metadata
from tf_fracture_export.predictor import Predictor

SIZE = 64
CONFIG = PreprocessConfig(SIZE, unsharp_kernel=5)
# float32 TFLite against Keras on the same preprocessed input (SPEC8's float32 tolerance).
FLOAT32_TOLERANCE = 1e-4
THRESHOLDS = {"youden": 0.5, "fixed": 0.5}


def radiograph(rng, height, width):
    # Smooth structure at several scales (a "bone" band, blobs, noise): CLAHE and unsharp masking change it.
    y, x = np.mgrid[0:height, 0:width]
    image = 60 + 80 * np.exp(-(((x - width * rng.uniform(0.3, 0.7)) / (width * 0.12)) ** 2))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(3, 12)
        image += rng.uniform(-50, 50) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r**2))
    image += rng.normal(0, 12, image.shape)
    return np.clip(cv2.GaussianBlur(image, (3, 3), 0), 0, 255).astype(np.uint8)


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
    ).replace(**changes)
    return write_metadata(metadata, metadata_path(model_path))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny MobileNetV3-small classifier, its float32 .tflite with metadata, and PNG, JPEG and DICOM files."""
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
    model_path = to_tflite(model, folder / "model_float32.tflite", sigmoid=True)
    write_model_metadata(model_path)
    return model, model_path, files


def make_answers_depend_on_the_image(model, files):
    # An untrained deep network's activations fade layer by layer (the logits of different images agree
    # to 1e-11 at init, and to 1e-7 after randomise_network_weights). Set every BatchNorm's statistics
    # to the images' own (one training-mode pass with momentum 0), then scale the logit layer so the
    # logits spread about 0 with std 2: the probabilities then differ by tenths between images, as a
    # trained model's do, and a preprocessing or quantisation mistake shows.
    randomise_network_weights(model, seed=0)
    batch = inputs(files)
    noise = np.random.default_rng(1).uniform(0, 255, (8, *batch.shape[1:])).astype(np.float32)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(np.concatenate([batch, noise]), training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    logits = np.asarray(model(batch, training=False))[:, 0]
    kernel, bias = model.get_layer("logit").get_weights()
    scale = 2.0 / logits.std()
    model.get_layer("logit").set_weights([kernel * scale, (bias - logits.mean()) * scale])


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
    with pytest.raises(ValueError, match=r"metadata says 'int8' but the model's input is float32"):
        Predictor(copy)
    write_model_metadata(copy)
    with pytest.raises(ValueError, match=r"Unknown threshold 'nope'.*fixed, youden"):
        Predictor(copy, threshold="nope")
    metadata_path(copy).unlink()
    with pytest.raises(FileNotFoundError, match=r"No model metadata.*tf-fracture-export writes both"):
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
    assert set(entry) == {"path", "probability", "label", "threshold", "threshold_name"}
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
    exercise = f"""
import contextlib, io, json
predictor = module.Predictor({str(model_path)!r})
probabilities = [p.probability for p in predictor.predict_files({files!r}).predictions]
from tf_fracture_export.predict import main
stdout = io.StringIO()
with contextlib.redirect_stdout(stdout):
    code = main([{str(model_path)!r}, *{files!r}, "--json"])
cli = [p["probability"] for p in json.loads(stdout.getvalue())["predictions"]]
open({str(out)!r}, "w").write(json.dumps({{"predictor": probabilities, "cli": cli, "code": code}}))
"""
    result = run_without_tensorflow("tf_fracture_export.predictor", tmp_path, exercise)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
    answers = json.loads(out.read_text())
    expected = keras_probabilities(model, files)
    assert answers["code"] == 0
    np.testing.assert_allclose(answers["predictor"], expected, atol=FLOAT32_TOLERANCE)
    np.testing.assert_allclose(answers["cli"], expected, atol=FLOAT32_TOLERANCE)


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
