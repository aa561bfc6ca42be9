"""The export side of the edge issue: convert, verify and the ``tf-fracture export`` command on a tiny real run.

The run is MobileNetV3-small + CBAM at 64 px (a 2 x 2 class activation map) trained one epoch (3 steps)
on synthetic_xray/tiny by `tf_fracture.train`. A model trained a few steps still has BatchNorm's initial
moving statistics, under which MobileNetV3's pooled features are the same for every image up to about
1e-10: every probability is equal, and float32, int8 or a wrong preprocessing would all "match" Keras.
So the fixture then re-estimates the BatchNorm statistics on the training images (what longer training
converges to), sets the spread of its logits to `LOGIT_SPREAD` whatever the CPU's training did, and saves
the model back: its probabilities differ from image to image, and each comparison below can fail.

Every expected number is recomputed here from the Keras model and the .tflite file, independently of
the export's own verification. Nothing here depends on the CPU's int8 kernels beyond the verification's
own tolerances: the int8 model's AUROC on the 8 validation images moved by up to 0.16 between
calibration samples (and by 0.094 between AVX2 and AVX-512 VNNI CPUs at 32 px), so it is reported, not
judged (`verify.MIN_AUROC_IMAGES_PER_CLASS`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

import tf_fracture.datasets  # noqa: F401  (registers synthetic_xray)
from tf_fracture import metrics
from tf_fracture.configs import get_experiment
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.data.sources import load_split
from tf_fracture.evaluate import model_preprocessing, sigmoid
from tf_fracture.models import CAM_LAYER, build_classifier, cam_model, load_model
from tf_fracture.train.loop import train
from tf_fracture_export import exporter, litert, verify
from tf_fracture_export.__main__ import main
from tf_fracture_export.convert import check_exportable, convert, outputs_in_order, representative_images
from tf_fracture_export.exporter import run_thresholds
from tf_fracture_export.metadata import QUANTIZATIONS, ModelMetadata, read_metadata
from tf_fracture_export.verify import (
    HEATMAP_TOLERANCES,
    MEAN_HEATMAP_TOLERANCES,
    MEAN_PROBABILITY_TOLERANCES,
    PROBABILITY_TOLERANCES,
    PreprocessingMismatchError,
    ValidationSet,
    VerificationError,
    require_passed,
    verify_variant,
)

SIZE = 64
CAM = (2, 2)  # MobileNetV3's last feature map at 64 px (stride 32)
# The validation logits' standard deviation the fixture sets (see `_set_logit_spread`): probabilities spread
# by about 0.037 around 0.5, well above int8's `CORRELATION_MIN_SPREAD`. int8's error grows with the spread
# (on AVX-512 VNNI, mean / max difference 0.039 / 0.046 at 0.15, 0.066 / 0.080 at 0.25): 0.15 keeps it well
# inside `MEAN_PROBABILITY_TOLERANCES["int8"]`.
LOGIT_SPREAD = 0.15
THRESHOLDS = {"fixed": 0.5, "youden": 0.52, "target_sensitivity": 0.47}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    tfds.builder("synthetic_xray/tiny", data_dir=str(data_dir)).download_and_prepare()
    experiment = get_experiment("demo").override(
        [
            "data.builder_config=tiny",
            f"data.data_dir={data_dir}",
            f"data.image_size={SIZE}",
            "data.batch_size=8",
            "model.feature_dim=32",
            "model.feature_stride=null",  # the backbone's own last map (stride 32): 2 x 2 at 64 px
            "train.epochs=1",
            "train.learning_rate=0.01",
        ]
    )
    path = tmp_path_factory.mktemp("runs") / "tiny"
    train(experiment, path, verbose=0)
    model = load_model(path / "model.keras", compile=False)
    _reestimate_batchnorm(model, representative_images(experiment, 24).astype(np.float32))
    _set_logit_spread(model, _validation(experiment)[2], LOGIT_SPREAD)
    model.save(path / "model.keras")
    # The thresholds `python -m tf_fracture.evaluate` would leave (only the keys the export reads).
    evaluation = path / "evaluation" / "synthetic_xray-test"
    evaluation.mkdir(parents=True)
    metrics_json = {"dataset": {"name": "synthetic_xray"}, "thresholds": {**THRESHOLDS, "sensitivity_target": 0.9}}
    (evaluation / "metrics.json").write_text(json.dumps(metrics_json))
    return path, experiment


@pytest.fixture(scope="module")
def model(run):
    """The run's ``model.keras``, loaded once (~6 s a load): the tests only call it, never change it."""
    path, _ = run
    return load_model(path / "model.keras", compile=False)


@pytest.fixture(scope="module")
def validation_images(run):
    """``_validation(experiment)`` once: (raw images, labels, preprocessed images)."""
    _, experiment = run
    return _validation(experiment)


def _reestimate_batchnorm(model, images):
    """Moving statistics := the statistics of ``images`` (one training-mode pass with momentum 0)."""
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert layers
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer in layers:
        layer.momentum = 0.99


def _set_logit_spread(model, images, spread):
    """Rescales the CAM layer so the logits on ``images`` have mean 0 and standard deviation ``spread``.

    Three training steps end wherever a CPU's rounding takes them: the validation probabilities spread
    by 0.05 (standard deviation) on AVX2 CPUs and by 0.016-0.020 on one with AVX-512 VNNI and BF16. With
    ``logit' = s (logit - m)`` (kernel times s, bias s (b - m)) every CPU's fixture spreads alike, the
    ranking of the images and the CAM's shape are unchanged, and int8's relative error stays what it was.
    """
    logits = np.asarray(model(images.astype(np.float32), training=False), np.float64)[:, 0]
    scale = spread / logits.std()
    layer = model.get_layer(CAM_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * scale, (bias - logits.mean()) * scale])


def _validation(experiment, config=None):
    """The raw validation images, their labels, and the images preprocessed with ``config`` (the run's by default)."""
    config = config or experiment.data.preprocess_config()
    examples = list(load_split(experiment.data, "validation").as_numpy_iterator())
    raw = [e["image"][..., 0] for e in examples]
    labels = np.array([int(e["label"]) for e in examples])
    return raw, labels, np.stack([preprocess(r, config)[..., None] for r in raw])


def _keras_probabilities(model, images):
    return sigmoid(np.asarray(model(images.astype(np.float32), training=False))[:, 0])


def _keras_cams(model, images):
    return np.asarray(cam_model(model)(images.astype(np.float32), training=False)[0], np.float64)[..., 0]


@pytest.fixture(scope="module")
def exported(run):
    """``tf-fracture export RUN --quantize all`` once: (return code, stdout, stderr, out folder)."""
    path, _ = run
    out, err = io.StringIO(), io.StringIO()
    args = [str(path), "--quantize", "all", "--latency-runs", "3"]  # calibration: all 24 training images
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue(), path / "export"


def test_cli_exports_every_variant_with_metadata_verification_and_report(exported):
    code, out, err, folder = exported
    assert code == 0, err
    expected = {f"{stem}_{q}.{ext}" for q in QUANTIZATIONS for stem, ext in (("model", "tflite"), ("model", "json"))}
    expected |= {f"verification_{q}.json" for q in QUANTIZATIONS} | {"report.md"}
    assert {p.name for p in folder.iterdir()} == expected
    for q in QUANTIZATIONS:
        assert f"{q}: {folder / f'model_{q}.tflite'}" in out
    assert f"report: {folder}/report.md" in out
    report = (folder / "report.md").read_text()
    assert "tf-fracture export" in report and "--quantize all" in report  # the command that produced it
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(QUANTIZATIONS) and all(line.endswith("| pass |") for line in table[2:])
    assert table[2] in out  # the same table printed
    # Nothing but the report: the converter's "Saved artifact at ..." is kept out of the output.
    assert "Saved artifact" not in out


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_each_variant_matches_keras_within_its_tolerance(exported, model, validation_images, quantization):
    folder = exported[3]
    _, labels, images = validation_images
    expected = _keras_probabilities(model, images)
    assert expected.std() > 0.02  # the probabilities differ image to image: the comparison can fail
    interpreter = litert.load_interpreter(folder / f"model_{quantization}.tflite")
    got, cams = litert.run_model_with_cam(interpreter, images)
    difference = np.abs(got - expected)
    assert difference.max() <= PROBABILITY_TOLERANCES[quantization]
    assert difference.mean() <= MEAN_PROBABILITY_TOLERANCES[quantization]
    # Every variant carries the CAM; its heatmap (sigmoid per cell) is Keras' within the variant's tolerance.
    expected_cams = _keras_cams(model, images)
    assert cams.shape == (len(images), *CAM) and np.ptp(expected_cams) > 0.1
    heat = np.abs(sigmoid(cams) - sigmoid(expected_cams))
    assert heat.max() <= HEATMAP_TOLERANCES[quantization] and heat.mean() <= MEAN_HEATMAP_TOLERANCES[quantization]
    # The export's own verification measured the same thing on the same images.
    saved = json.loads((folder / f"verification_{quantization}.json").read_text())
    # abs=1e-6: Keras' own float32 noise between model(x) here and predict_on_batch in the verification.
    assert saved["max_abs_diff"] == pytest.approx(difference.max(), rel=1e-3, abs=1e-6)
    assert saved["mean_abs_diff"] == pytest.approx(difference.mean(), rel=1e-3, abs=1e-6)
    assert saved["heatmap_max_diff"] == pytest.approx(heat.max(), rel=1e-3, abs=1e-6)
    assert saved["heatmap_mean_diff"] == pytest.approx(heat.mean(), rel=1e-3, abs=1e-6)
    assert saved["cam_size"] == list(CAM)
    assert saved["correlation"] == pytest.approx(np.corrcoef(got, expected)[0, 1], abs=1e-6)
    # 4 + 4 images: the AUROC is reported, not judged; the int8 correlation is (Keras' spread > 0.01).
    assert saved["auroc_judged"] is False and saved["correlation_judged"] is (quantization == "int8")
    assert saved["auroc"] == pytest.approx(metrics.roc_auc(labels, got), abs=1e-9)
    assert saved["keras_auroc"] == pytest.approx(metrics.roc_auc(labels, expected), abs=1e-9)
    accuracy = metrics.threshold_metrics(labels, got, THRESHOLDS["youden"])["accuracy"]
    assert (saved["threshold_name"], saved["threshold"], saved["accuracy"]) == ("youden", 0.52, accuracy)
    assert saved["size_bytes"] == (folder / f"model_{quantization}.tflite").stat().st_size
    assert set(saved["latency_ms"]) == {"1", "2", "4"} and all(v > 0 for v in saved["latency_ms"].values())
    assert saved["delegate_partitions"] == litert.delegate_partitions(folder / f"model_{quantization}.tflite") >= 1
    assert saved["fully_accelerated"] == litert.is_fully_accelerated(folder / f"model_{quantization}.tflite")
    assert saved["fully_accelerated"] == (saved["delegate_partitions"] == 1 and not saved["undelegated_ops"])
    assert saved["images"] == len(labels) and saved["passed"] and saved["failures"] == []


def test_float32_is_the_keras_model_to_1e4_and_the_graph_takes_batch_1_and_gives_the_probability_and_cam(
    exported, model, validation_images
):
    interpreter = litert.load_interpreter(exported[3] / "model_float32.tflite")
    (inp,), (out, cam) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(inp["shape"]) == [1, SIZE, SIZE, 1] and inp["dtype"] == np.float32
    assert list(out["shape"]) == [1, 1] and out["dtype"] == np.float32  # the probability first, as before
    assert list(cam["shape"]) == [1, *CAM, 1] and cam["dtype"] == np.float32
    # The raw interpreter on the 0-255 image: the sigmoid and the intensity scaling are in the graph.
    _, _, images = validation_images
    expected_cams = _keras_cams(model, images)
    spread = np.ptp(expected_cams)
    for image, expected_cam in zip(images, expected_cams, strict=True):
        interpreter.set_tensor(inp["index"], image[np.newaxis].astype(np.float32))
        interpreter.invoke()
        probability = interpreter.get_tensor(out["index"])[0, 0]
        np.testing.assert_allclose(probability, _keras_probabilities(model, image[np.newaxis])[0], atol=1e-4)
        got_cam = interpreter.get_tensor(cam["index"])[0, ..., 0]
        np.testing.assert_allclose(got_cam, expected_cam, rtol=0, atol=1e-4 * spread)
        # The CAM's mean is the TFLite model's own logit, the one its probability is the sigmoid of.
        assert got_cam.mean() == pytest.approx(np.log(probability / (1 - probability)), abs=1e-5)


def test_quantised_variants_hold_quantised_weights_and_int8_has_int8_io(exported):
    folder = exported[3]
    size = {q: (folder / f"model_{q}.tflite").stat().st_size for q in QUANTIZATIONS}
    assert 0.45 * size["float32"] < size["float16"] < 0.6 * size["float32"]  # 2 bytes a weight, not 1
    assert size["dynamic"] < 0.4 * size["float32"] and size["int8"] < 0.4 * size["float32"]
    weights = {q: _tensor_dtypes(folder / f"model_{q}.tflite") for q in QUANTIZATIONS}
    assert np.float16 in weights["float16"] and np.int8 not in weights["float16"]
    assert np.int8 in weights["dynamic"] and np.float16 not in weights["dynamic"]
    assert np.float16 not in weights["float32"] and np.int8 not in weights["float32"]
    interpreter = litert.load_interpreter(folder / "model_int8.tflite")
    (inp,), (out, cam) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8 and cam["dtype"] == np.int8  # int8, not uint8
    scale, zero_point = inp["quantization"]
    assert zero_point == -128 and scale == pytest.approx(1.0, abs=1e-3)  # calibrated on 0..255 images
    for q in ("float16", "dynamic"):
        (inp,) = litert.load_interpreter(folder / f"model_{q}.tflite").get_input_details()
        assert inp["dtype"] == np.float32


def _tensor_dtypes(path):
    from ai_edge_litert.interpreter import Interpreter

    return {detail["dtype"] for detail in Interpreter(model_path=str(path)).get_tensor_details()}


def test_representative_images_are_a_seeded_sample_of_the_preprocessed_training_split(run):
    _, experiment = run
    config = experiment.data.preprocess_config()
    train_images = [e["image"][..., 0] for e in load_split(experiment.data, "train").as_numpy_iterator()]
    sample = representative_images(experiment, 5, seed=3)
    indices = np.sort(np.random.default_rng(3).choice(len(train_images), 5, replace=False))
    expected = np.stack([preprocess(train_images[i], config)[..., None] for i in indices])
    np.testing.assert_array_equal(sample, expected)
    assert sample.dtype == np.uint8
    assert not np.array_equal(representative_images(experiment, 5, seed=4), sample)
    assert len(representative_images(experiment, 1000)) == len(train_images)  # all of them, once


def test_metadata_is_complete_and_round_trips(run, exported, model):
    path, experiment = run
    folder = exported[3]
    for q in QUANTIZATIONS:
        metadata = read_metadata(folder / f"model_{q}.tflite")
        assert metadata.model_file == f"model_{q}.tflite" and metadata.quantization == q
        assert metadata.labels == tuple(tfds.builder("synthetic_xray/tiny").info.features["label"].names)
        assert metadata.preprocessing == model_preprocessing(model) == experiment.data.preprocess_config()
        assert dict(metadata.thresholds) == THRESHOLDS and metadata.default_threshold == "youden"
        assert metadata.threshold == 0.52
        assert metadata.source_run == str(path.resolve())
        assert metadata.config == json.loads((path / "config.json").read_text())
        assert dict(metadata.verification) == json.loads((folder / f"verification_{q}.json").read_text())
        assert ModelMetadata.from_dict(json.loads(json.dumps(metadata.to_dict()))) == metadata
        assert metadata.cam_size == CAM
        outputs = json.loads((folder / f"model_{q}.json").read_text())["outputs"]
        assert [(o["index"], o["name"], o["shape"]) for o in outputs] == [
            (0, "probability", [1, 1]),
            (1, "cam", [1, *CAM, 1]),
        ]
        assert outputs[1]["mean_is_logit"] is True


def test_thresholds_default_to_fixed_without_an_evaluation_of_the_runs_dataset(run, tmp_path):
    path, experiment = run
    assert run_thresholds(path, experiment)[:2] == (THRESHOLDS, "youden")
    other = tmp_path / "other"
    (other / "evaluation" / "mura-test").mkdir(parents=True)
    (other / "evaluation" / "mura-test" / "metrics.json").write_text(
        json.dumps({"dataset": {"name": "mura"}, "thresholds": THRESHOLDS})
    )
    assert run_thresholds(other, experiment) == ({"fixed": 0.5}, "fixed", None)


@pytest.fixture(scope="module")
def validation(run, model):
    _, experiment = run
    return verify.validation_set(model, experiment)


def _metadata(preprocessing, quantization="float32"):
    return ModelMetadata(
        model_file=f"model_{quantization}.tflite",
        quantization=quantization,
        labels=("normal", "fracture"),
        preprocessing=preprocessing,
        thresholds={"fixed": 0.5},
        default_threshold="fixed",
        cam_size=CAM,
    )


def test_a_model_exported_with_the_wrong_preprocessing_is_caught(run, exported, validation):
    _, experiment = run
    model_path = exported[3] / "model_float32.tflite"
    right = experiment.data.preprocess_config()
    wrong = PreprocessConfig(SIZE, unsharp_kernel=7)  # the elbow set's kernel instead of the run's 5x5
    assert right != wrong and validation.keras_preprocessing == right
    # The right metadata passes...
    assert verify_variant(model_path, _metadata(right), validation, latency_runs=1, threads=(1,))["passed"]
    # ...metadata with another preprocessing is refused before anything runs (the model path is not even read)...
    with pytest.raises(PreprocessingMismatchError, match="unsharp_kernel: metadata 7 vs model 5"):
        verify_variant(exported[3] / "missing.tflite", _metadata(wrong), validation)
    # ...and run anyway, the device-side images it describes give other probabilities: the report fails.
    report = verify_variant(
        model_path, _metadata(wrong), validation, latency_runs=1, threads=(1,), check_metadata=False
    )
    assert not report["passed"] and report["max_abs_diff"] > PROBABILITY_TOLERANCES["float32"]
    assert report["preprocessing"]["unsharp_kernel"] == 7
    assert any("probabilities differ" in failure for failure in report["failures"])
    with pytest.raises(VerificationError, match=r"float32 .*probabilities differ from Keras"):
        require_passed([report])


def _repeated(validation, times):
    """The validation set with each image ``times`` times (labels, scores and CAMs alike)."""
    return ValidationSet(
        validation.images * times,
        np.tile(validation.labels, times),
        np.tile(validation.keras_scores, times),
        validation.keras_preprocessing,
        validation.source,
        np.tile(validation.keras_cams, (times, 1, 1)),
    )


def _perfect(validation):
    """Keras' scores replaced by the labels themselves (AUROC 1): the exported model falls below it."""
    return dataclasses.replace(validation, keras_scores=validation.labels.astype(float))


def test_an_auroc_drop_beyond_the_tolerance_fails_on_enough_images(exported, validation):
    # 32 images of each class (the 8 repeated): the AUROC is judged.
    large = _perfect(_repeated(validation, 8))
    metadata = _metadata(validation.keras_preprocessing)
    report = verify_variant(exported[3] / "model_float32.tflite", metadata, large, latency_runs=1, threads=(1,))
    assert report["auroc_judged"] and report["keras_auroc"] == 1.0
    assert report["auroc_drop"] == pytest.approx(1.0 - report["auroc"])
    assert report["auroc_drop"] > 0.02 and not report["passed"]
    assert any(f.startswith("AUROC") for f in report["failures"])
    lenient = verify_variant(
        exported[3] / "model_float32.tflite", metadata, large, latency_runs=1, threads=(1,), auroc_tolerance=1.0
    )
    assert not any(f.startswith("AUROC") for f in lenient["failures"])


def test_on_few_images_the_auroc_is_reported_not_judged(exported, validation):
    # The same drop on 4 + 4 images, where one reordered pair moves the AUROC by 1/16: not a verdict.
    small = _perfect(validation)
    assert min(np.bincount(small.labels)) < verify.MIN_AUROC_IMAGES_PER_CLASS
    metadata = _metadata(validation.keras_preprocessing)
    report = verify_variant(exported[3] / "model_float32.tflite", metadata, small, latency_runs=1, threads=(1,))
    assert report["auroc_drop"] > 0.02 and report["auroc_judged"] is False
    assert not any(f.startswith("AUROC") for f in report["failures"])
    assert f"({report['keras_auroc']:.4f})* |" in verify.markdown_table([report]).splitlines()[2]


@pytest.mark.parametrize("calibration", ["0..1", "blank"])
def test_an_int8_model_that_lost_its_input_fails(run, model, validation, tmp_path, calibration):
    # Calibrated on images scaled to 0..1 (a classic mistake: the device feeds 0..255, which the input's
    # scale of 1/255 saturates) or on blank images: the answers no longer follow the image. On this
    # fixture, whose answers differ by about 0.05 between images, they stay within the absolute
    # tolerances; the correlation with Keras' answers catches them.
    _, experiment = run
    images = representative_images(experiment, 24).astype(np.float32)
    images = images / 255.0 if calibration == "0..1" else np.zeros_like(images)
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(convert(model, "int8", calibration_images=images))
    metadata = _metadata(validation.keras_preprocessing, "int8")
    try:
        report = verify_variant(path, metadata, validation, latency_runs=1, threads=(1,))
    except ValueError as error:
        # Degenerate calibration can also give activation ranges XNNPACK refuses to prepare (seen on the
        # guided demo's model): the model is refused before any answer is compared, which is as good.
        assert "LiteRT cannot load this model" in str(error) and "Export it again" in str(error)
        return
    assert report["correlation_judged"] and report["correlation"] < verify.INT8_MIN_CORRELATION
    assert not report["passed"] and any("correlate with Keras'" in f for f in report["failures"])


def test_a_model_with_its_outputs_swapped_is_refused(exported, validation, tmp_path):
    swapped = tmp_path / "model_int8.tflite"
    swapped.write_bytes(outputs_in_order((exported[3] / "model_int8.tflite").read_bytes(), ("cam", "probability")))
    with pytest.raises(ValueError, match="out of order"):
        verify_variant(swapped, _metadata(validation.keras_preprocessing, "int8"), validation, latency_runs=1)


def test_a_model_without_a_cam_exports_and_verifies_the_probability_only(run, tmp_path, monkeypatch):
    # A classifier whose head pools before its dense layer has no map (as a model saved before the CAM head).
    path, experiment = run
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(x)
    plain = keras.Model(inputs, keras.layers.Dense(1, name="logit")(keras.layers.GlobalAveragePooling2D()(x)))
    plain.preprocessing = dataclasses.asdict(experiment.data.preprocess_config())
    monkeypatch.setattr("tf_fracture.models.load_model", lambda *_, **__: plain)
    (result,) = exporter.export_run(path, ["float32"], out_dir=tmp_path, latency_runs=1)
    assert [o["name"] for o in json.loads(result.metadata_path.read_text())["outputs"]] == ["probability"]
    assert read_metadata(result.metadata_path).cam_size is None
    report = result.verification
    assert report["passed"] and report["cam_size"] is None and report["heatmap_max_diff"] is None
    assert "| - |" in verify.markdown_table([report])


def test_cli_fails_loudly_when_a_variant_is_out_of_tolerance(run, exported, tmp_path, monkeypatch, capsys):
    path, _ = run
    # The conversion itself is what `exported` checked: this command reuses its flatbuffer (~40 s saved).
    monkeypatch.setattr(
        exporter,
        "convert",
        lambda model, quantization, **_: (exported[3] / f"model_{quantization}.tflite").read_bytes(),
    )
    # Zero tolerance: float32's last-bit differences from Keras count as a failure.
    monkeypatch.setattr(verify, "PROBABILITY_TOLERANCES", {**PROBABILITY_TOLERANCES, "float32": 0.0})
    code = main([str(path), "--quantize", "float32", "--out", str(tmp_path), "--latency-runs", "1", "--limit", "6"])
    err = capsys.readouterr().err
    assert code == 1
    assert "disagree with the Keras model" in err and "float32 (model_float32.tflite)" in err and "| FAIL |" in err
    assert json.loads((tmp_path / "verification_float32.json").read_text())["passed"] is False
    assert json.loads((tmp_path / "verification_float32.json").read_text())["images"] == 6


def test_cli_refuses_bad_runs_and_arguments(run, tmp_path, capsys):
    path, _ = run
    empty = tmp_path / "no_model"
    empty.mkdir()
    shutil.copy(path / "config.json", empty / "config.json")
    assert main([str(empty), "--no-verify"]) == 2
    assert "without model.keras" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "No config.json" in capsys.readouterr().err
    for bad in (["--quantize", "int4"], ["--quantize", "all", "int8"], ["--limit", "0"], ["--auroc-tolerance", "2"]):
        with pytest.raises(SystemExit) as exit_info:
            main([str(path), *bad])
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Unknown --quantize int4" in err and "stands alone" in err and "--limit must be a positive" in err
    assert "--auroc-tolerance must be in [0, 1]" in err


def test_convert_refuses_what_it_cannot_export(model):
    grey = model  # the run's grey-stem classifier at SIZE px
    with pytest.raises(ValueError, match="Unknown quantization 'int4'"):
        convert(grey, "int4")
    with pytest.raises(ValueError, match="int8 needs calibration images"):
        convert(grey, "int8")
    with pytest.raises(ValueError, match=r"shape \(N, 64, 64, 1\)"):
        convert(grey, "int8", calibration_images=np.zeros((2, 16, 16, 1)))
    with pytest.raises(ValueError, match="for the int8 variant only"):
        convert(grey, "float16", calibration_images=np.zeros((2, SIZE, SIZE, 1)))
    rgb = build_classifier("mobilenetv3", "small", weights=None, input_size=SIZE, feature_dim=8, stem="rgb")
    with pytest.raises(ValueError, match="grey stem"):
        check_exportable(rgb)
    from tf_fracture.models import build_fusion

    other = build_classifier("mobilenetv3", "small", weights=None, input_size=SIZE, feature_dim=8, attention=False)
    with pytest.raises(ValueError, match=r"fusion model .* Export one of its member runs"):
        convert(build_fusion([grey, other], input_size=SIZE), "float32")


def test_verification_refuses_a_limit_that_leaves_one_class(run, model):
    _, experiment = run
    with pytest.raises(ValueError, match=r"AUROC needs both\. Raise --limit"):
        verify.validation_set(model, experiment, limit=1)
