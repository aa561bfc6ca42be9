"""The class activation map as the exported model's second output: every variant, against Keras' `cam_model`.

MobileNetV3-small (the method) in every quantisation and its edge variant ``small_minimal`` in int8, at
96 px (a 3 x 3 map), random weights moved off their initial values and BatchNorm statistics set from the
calibration images, so that maps differ between positions and between images. Tolerances are relative to
the spread (max - min) of Keras' maps on the test images: the map's values are logits around a bias,
and a heatmap shows their differences.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from export_helpers import radiograph, spread_batchnorm
from harness import randomise_network_weights

from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.models import build_classifier, cam_model
from tf_fracture_export import litert
from tf_fracture_export.convert import cam_size, convert, outputs_in_order
from tf_fracture_export.metadata import QUANTIZATIONS, ModelMetadata

SIZE = 96
CAM = (3, 3)  # stride 32
CONFIG = PreprocessConfig(SIZE, unsharp_kernel=5)
CASES = [("small", q) for q in QUANTIZATIONS] + [("small_minimal", "int8")]
# Largest and mean |CAM_tflite - CAM_keras| as fractions of the Keras maps' spread, measured max / mean:
CAM_TOLERANCES = {
    "float32": (1e-4, 1e-4),  # 3e-6 / 3e-7: the same graph in float32
    "float16": (2e-2, 5e-3),  # 4.8e-3 / 6.5e-4: fp16 weights
    "dynamic": (0.15, 3e-2),  # 0.060 / 0.011: activations quantised on the fly before each int8-weight op
    # 0.22-0.33 / 0.051-0.052. Every activation int8 in a network with random weights, whose activations
    # have none of a trained network's structure: loose, but below what a wrong map gives (the next test).
    "int8": (0.5, 0.08),
}


@pytest.fixture(scope="module")
def images():
    """(calibration, test) preprocessed radiographs ``(N, 96, 96, 1)`` float32 in 0..255."""
    rng = np.random.default_rng(0)
    raw = [radiograph(rng, int(rng.integers(60, 160)), int(rng.integers(60, 160))) for _ in range(28)]
    x = np.stack([preprocess(r, CONFIG) for r in raw])[..., np.newaxis].astype(np.float32)
    return x[:16], x[16:]


@pytest.fixture(scope="module")
def models(images):
    calibration, _ = images
    built = {}
    for variant in dict.fromkeys(v for v, _ in CASES):
        keras.utils.set_random_seed(0)
        model = build_classifier("mobilenetv3", variant, weights=None, input_size=SIZE, preprocessing=CONFIG)
        randomise_network_weights(model, seed=0)
        spread_batchnorm(model, calibration)
        built[variant] = model
    return built


@pytest.fixture(scope="module")
def exported(models, images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cam")
    calibration, _ = images
    paths = {}
    for variant, quantization in CASES:
        path = folder / f"{variant}_{quantization}.tflite"
        path.write_bytes(
            convert(models[variant], quantization, calibration_images=calibration if quantization == "int8" else None)
        )
        paths[variant, quantization] = path
    return paths


def keras_cam(model, images):
    cams, logits = cam_model(model)(images, training=False)
    return np.asarray(cams, np.float64)[..., 0], np.asarray(logits, np.float64)[:, 0]


@pytest.mark.parametrize(("variant", "quantization"), CASES)
def test_probability_first_then_the_cam_named_in_the_signature(exported, variant, quantization):
    interpreter = litert.load_interpreter(exported[variant, quantization])
    probability, cam = interpreter.get_output_details()
    assert list(probability["shape"]) == [1, 1] and list(cam["shape"]) == [1, *CAM, 1]
    dtype = np.int8 if quantization == "int8" else np.float32  # int8: both outputs quantised (int8 I/O)
    assert probability["dtype"] == dtype and cam["dtype"] == dtype
    assert litert.cam_size(interpreter) == CAM
    named = interpreter.get_signature_runner().get_output_details()
    assert named["probability"]["index"] == probability["index"] and named["cam"]["index"] == cam["index"]


@pytest.mark.parametrize(("variant", "quantization"), CASES)
def test_the_cam_is_keras_cam_model_within_the_variants_tolerance(exported, models, images, variant, quantization):
    _, test_images = images
    expected, logits = keras_cam(models[variant], test_images)
    spread = np.ptp(expected)
    assert np.mean([np.ptp(cam) for cam in expected]) > 0.3 * spread  # the maps vary within each image
    probabilities, cams = litert.run_model_with_cam(
        litert.load_interpreter(exported[variant, quantization]), test_images
    )
    assert cams.shape == (len(test_images), *CAM) and cams.dtype == np.float32
    difference = np.abs(cams - expected) / spread
    largest, mean = CAM_TOLERANCES[quantization]
    assert difference.max() <= largest and difference.mean() <= mean, (difference.max(), difference.mean())
    # The tolerance can fail: the same maps transposed, or other images' maps, are off by more.
    assert np.abs(cams - expected.transpose(0, 2, 1)).mean() / spread > 1.3 * mean
    assert np.abs(cams - expected[::-1]).mean() / spread > 1.3 * mean
    # The probability is still the Keras model's (the CAM output leaves it as it was).
    keras_probabilities = 1.0 / (1.0 + np.exp(-logits))
    assert np.abs(probabilities - keras_probabilities).max() <= {"float32": 1e-4, "float16": 1e-2}.get(
        quantization, 0.2
    )


def test_float32_cam_mean_is_the_tflite_logit(exported, images):
    _, test_images = images
    probabilities, cams = litert.run_model_with_cam(litert.load_interpreter(exported["small", "float32"]), test_images)
    logits = np.log(probabilities / (1.0 - probabilities))  # the TFLite logit before its sigmoid
    np.testing.assert_allclose(cams.mean(axis=(1, 2)), logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["small", "small_minimal"])
def test_int8_cam_mean_is_its_logit_up_to_requantisation(exported, images, variant):
    # The int8 graph averages the int8 CAM and requantises the mean before its int8 sigmoid (output step
    # 1/256): measured up to 0.002.
    _, test_images = images
    probabilities, cams = litert.run_model_with_cam(litert.load_interpreter(exported[variant, "int8"]), test_images)
    from_cam = 1.0 / (1.0 + np.exp(-cams.astype(np.float64).mean(axis=(1, 2))))
    np.testing.assert_allclose(from_cam, probabilities, rtol=0, atol=0.01)


def test_int8_edge_variant_stays_one_xnnpack_partition_with_the_cam_output(exported):
    path = exported["small_minimal", "int8"]
    assert litert.delegate_partitions(path) == 1 and litert.undelegated_ops(path) == {}
    assert litert.is_fully_accelerated(path)


def test_outputs_out_of_order_are_refused(exported, images, tmp_path):
    # What the converter may do by itself (its output order follows no rule we can rely on).
    swapped = tmp_path / "swapped.tflite"
    swapped.write_bytes(outputs_in_order(exported["small", "float32"].read_bytes(), ("cam", "probability")))
    interpreter = litert.load_interpreter(swapped)
    assert [list(d["shape"]) for d in interpreter.get_output_details()] == [[1, *CAM, 1], [1, 1]]
    with pytest.raises(ValueError, match="out of order"):
        litert.cam_size(interpreter)
    with pytest.raises(ValueError, match="output 0 has shape"):
        litert.run_model(interpreter, images[1][:1])
    expected = r"outputs to be \['heatmap', 'probability'\], but they are \['cam', 'probability'\]"
    with pytest.raises(ValueError, match=expected):
        outputs_in_order(exported["small", "float32"].read_bytes(), ("probability", "heatmap"))


def plain_classifier():
    """A grey-input classifier without a "cam" layer: pooled features -> one logit (a head without a map)."""
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="logit")(x))


def test_a_model_without_a_cam_exports_the_probability_only(images, tmp_path):
    model = plain_classifier()
    assert cam_size(model) is None
    path = tmp_path / "plain.tflite"
    path.write_bytes(convert(model, "float32"))
    interpreter = litert.load_interpreter(path)
    (output,) = interpreter.get_output_details()
    assert list(output["shape"]) == [1, 1] and litert.cam_size(interpreter) is None
    _, test_images = images
    expected = 1.0 / (1.0 + np.exp(-np.asarray(model(test_images), np.float64)[:, 0]))
    np.testing.assert_allclose(litert.run_model(interpreter, test_images), expected, atol=1e-6)
    with pytest.raises(ValueError, match="probability only"):
        litert.run_model_with_cam(interpreter, test_images)


def metadata(**changes):
    return ModelMetadata(
        model_file="model_int8.tflite",
        quantization="int8",
        labels=("normal", "fracture"),
        preprocessing=CONFIG,
        thresholds={"fixed": 0.5},
        default_threshold="fixed",
    ).replace(**changes)


def test_metadata_lists_the_outputs_and_says_how_to_draw_the_cam():
    with_cam = metadata(cam_size=CAM).to_dict()
    assert with_cam["output"] == "probability"  # output 0, as version 1 readers expect
    probability, cam = with_cam["outputs"]
    assert (probability["index"], probability["name"], probability["shape"], probability["dtype"]) == (
        0,
        "probability",
        [1, 1],
        "int8",
    )
    assert (cam["index"], cam["name"], cam["shape"], cam["dtype"]) == (1, "cam", [1, 3, 3, 1], "int8")
    assert cam["mean_is_logit"] is True and "sigmoid" in cam["heatmap"] and "bilinear" in cam["heatmap"]
    assert [o["name"] for o in metadata().to_dict()["outputs"]] == ["probability"]  # says so without a CAM
    assert metadata(quantization="float16", cam_size=CAM).to_dict()["outputs"][1]["dtype"] == "float32"
    for data in (with_cam, metadata().to_dict()):
        assert ModelMetadata.from_dict(json.loads(json.dumps(data))) == ModelMetadata.from_dict(data)
    assert ModelMetadata.from_dict(with_cam).cam_size == CAM


def test_metadata_without_outputs_is_a_probability_only_model_and_bad_outputs_are_refused():
    old = metadata().to_dict()
    del old["outputs"]  # written before the CAM output
    assert ModelMetadata.from_dict(old).cam_size is None
    data = metadata(cam_size=CAM).to_dict()
    swapped = {**data, "outputs": data["outputs"][::-1]}
    with pytest.raises(ValueError, match=r"expected `outputs` 'probability' \(index 0\)"):
        ModelMetadata.from_dict(swapped)
    bad_shape = {**data, "outputs": [data["outputs"][0], {**data["outputs"][1], "shape": [1, 3, 3]}]}
    with pytest.raises(ValueError, match=r"shape to be \[1, h, w, 1\]"):
        ModelMetadata.from_dict(bad_shape)
    with pytest.raises(ValueError, match="cam_size"):
        metadata(cam_size=(3, 0))
