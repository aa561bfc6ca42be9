"""export/litert.py: running a .tflite model with LiteRT (int8 I/O included), and counting XNNPACK partitions."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from export_helpers import to_tflite

from tf_fracture_export import litert
from tf_fracture_export.convert import convert

SIZE = 8
SLOPE, BIAS = 8.0, -4.0


def golden_model():
    # probability = sigmoid(SLOPE * mean(image) / 255 + BIAS): a closed form to check the model's answers against.
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(1, activation="sigmoid")
    outputs = dense(x)
    dense.set_weights([np.array([[SLOPE]], np.float32), np.array([BIAS], np.float32)])
    return keras.Model(inputs, outputs)


def expected_probability(images):
    means = images.reshape(len(images), -1).astype(np.float64).mean(axis=1)
    return 1.0 / (1.0 + np.exp(-(SLOPE * means / 255.0 + BIAS)))


def sample_images():
    rng = np.random.default_rng(0)
    flat = np.stack([np.full((SIZE, SIZE), v, np.uint8) for v in (0, 40, 128, 200, 255)])
    noisy = rng.integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8)
    return np.concatenate([flat, noisy])[..., np.newaxis]


def golden_cam_model():
    # cam = SLOPE * (mean of each 4x4 block) / 255 + BIAS on a 2x2 grid, logit = mean(cam): a closed form
    # for both outputs, laid out as a tf-fracture classifier's head (a layer named "cam", then the mean).
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.AveragePooling2D(4)(x)
    dense = keras.layers.Dense(1, name="cam")
    cam = dense(x)
    dense.set_weights([np.array([[SLOPE]], np.float32), np.array([BIAS], np.float32)])
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="logit")(cam))


def expected_cam(images):
    blocks = images[..., 0].astype(np.float64).reshape(len(images), 2, 4, 2, 4).mean(axis=(2, 4))
    return SLOPE * blocks / 255.0 + BIAS


def hard_swish_model():
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1)(inputs)
    for filters in (4, 8):
        x = keras.layers.Conv2D(filters, 3, padding="same")(x)
        x = keras.layers.Activation("hard_swish")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    folder = tmp_path_factory.mktemp("golden")
    model = golden_model()
    calibration = np.random.default_rng(1).uniform(0, 255, (16, SIZE, SIZE, 1)).astype(np.float32)
    calibration[:2] = [[[[0]]], [[[255]]]]  # the full 0..255 range, so the input scale covers it
    float32 = to_tflite(model, folder / "float32.tflite")
    return float32, to_tflite(model, folder / "int8.tflite", calibration=calibration)


@pytest.fixture(scope="module")
def hard_swish(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hard_swish")
    keras.utils.set_random_seed(0)
    model = hard_swish_model()
    calibration = np.random.default_rng(1).uniform(0, 255, (8, 16, 16, 1)).astype(np.float32)
    float32 = to_tflite(model, folder / "float32.tflite")
    return float32, to_tflite(model, folder / "int8.tflite", calibration=calibration)


@pytest.fixture(scope="module")
def golden_cam(tmp_path_factory):
    folder = tmp_path_factory.mktemp("golden_cam")
    model = golden_cam_model()
    calibration = np.random.default_rng(1).uniform(0, 255, (16, SIZE, SIZE, 1)).astype(np.float32)
    calibration[:2] = [[[[0]]], [[[255]]]]
    paths = []
    for quantization in ("float32", "int8"):
        path = folder / f"{quantization}.tflite"
        path.write_bytes(
            convert(model, quantization, calibration_images=calibration if quantization == "int8" else None)
        )
        paths.append(path)
    return paths


def test_float32_matches_the_closed_form(golden):
    images = sample_images()
    probabilities = litert.run_model(litert.load_interpreter(golden[0]), images)
    assert probabilities.shape == (len(images),) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected_probability(images), atol=1e-6)
    assert probabilities.min() < 0.05 and probabilities.max() > 0.95  # the answers span the range


def test_int8_quantises_input_and_dequantises_output(golden):
    interpreter = litert.load_interpreter(golden[1])
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    images = sample_images()
    # int8 error: input steps of ~1/255 of the range, output steps of 1/256: far below 0.02. A wrong
    # zero point or scale on either side moves the answers by tenths.
    np.testing.assert_allclose(litert.run_model(interpreter, images), expected_probability(images), atol=0.02)


def test_int8_run_model_equals_the_raw_interpreter(golden):
    images = sample_images()
    raw = Interpreter(model_path=str(golden[1]))
    raw.allocate_tensors()
    (entry,), (exit_,) = raw.get_input_details(), raw.get_output_details()
    (in_scale, in_zero), (out_scale, out_zero) = entry["quantization"], exit_["quantization"]
    expected = []
    for image in images:
        quantised = np.clip(np.round(image / in_scale) + in_zero, -128, 127).astype(np.int8)
        raw.set_tensor(entry["index"], quantised[np.newaxis])
        raw.invoke()
        expected.append((int(raw.get_tensor(exit_["index"]).item()) - out_zero) * out_scale)
    got = litert.run_model(litert.load_interpreter(golden[1]), images)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)


def test_the_cam_output_matches_its_closed_form_in_float32_and_int8(golden_cam):
    images = sample_images()
    cam = expected_cam(images)
    probability = 1.0 / (1.0 + np.exp(-cam.mean(axis=(1, 2))))
    assert np.ptp(cam) > 4 and np.ptp(cam[-1]) > 0.5  # the cells differ, within an image too
    for path, (cam_tolerance, probability_tolerance) in zip(golden_cam, ((1e-5, 1e-6), (0.05, 0.02)), strict=True):
        interpreter = litert.load_interpreter(path)
        assert litert.cam_size(interpreter) == (2, 2)
        got_probability, got_cam = litert.run_model_with_cam(interpreter, images)
        assert got_cam.shape == (len(images), 2, 2) and got_cam.dtype == np.float32
        # int8: the CAM spans about 8 logits, an output step of 8/255 = 0.03; a wrong scale or zero point
        # (the probability's instead of the CAM's own) moves it by whole logits.
        np.testing.assert_allclose(got_cam, cam, atol=cam_tolerance)
        np.testing.assert_allclose(got_probability, probability, atol=probability_tolerance)
        np.testing.assert_array_equal(litert.run_model(interpreter, images), got_probability)
    assert litert.load_interpreter(golden_cam[1]).get_output_details()[1]["dtype"] == np.int8


def test_a_probability_only_model_has_no_cam(golden):
    interpreter = litert.load_interpreter(golden[0])
    assert litert.cam_size(interpreter) is None
    with pytest.raises(ValueError, match="probability only"):
        litert.run_model_with_cam(interpreter, sample_images())


def test_run_model_takes_uint8_or_float_with_or_without_the_channel_axis(golden):
    images = sample_images()
    interpreter = litert.load_interpreter(golden[0])
    reference = litert.run_model(interpreter, images)
    np.testing.assert_array_equal(litert.run_model(interpreter, images[..., 0]), reference)
    np.testing.assert_array_equal(litert.run_model(interpreter, images.astype(np.float32)), reference)
    assert litert.run_model(interpreter, images[:0]).shape == (0,)


def test_run_model_refuses_images_of_another_size(golden):
    interpreter = litert.load_interpreter(golden[0])
    with pytest.raises(ValueError, match=r"\(N, 8, 8, 1\).*preprocess them"):
        litert.run_model(interpreter, np.zeros((1, 9, 9, 1), np.uint8))


def test_load_interpreter_errors(tmp_path, golden):
    with pytest.raises(FileNotFoundError, match="No model at"):
        litert.load_interpreter(tmp_path / "missing.tflite")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ValueError, match=r"cannot load this model.*tf-fracture export"):
        litert.load_interpreter(garbage)
    with pytest.raises(ValueError, match="num_threads"):
        litert.load_interpreter(golden[0], num_threads=0)


def test_float32_is_one_partition_and_int8_hard_swish_splits_it(hard_swish):
    float32, int8 = hard_swish
    assert litert.delegate_partitions(float32) == 1
    assert litert.undelegated_ops(float32) == {}
    assert litert.is_fully_accelerated(float32) is True
    # XNNPACK has no int8 HARD_SWISH: each one stays outside and cuts the graph.
    assert litert.undelegated_ops(int8) == {"HARD_SWISH": 2}
    assert litert.delegate_partitions(int8) == 3
    assert litert.is_fully_accelerated(int8) is False


def test_latency_is_a_positive_median(golden):
    for threads in (1, 2):
        value = litert.latency_ms(golden[1], num_threads=threads, runs=5, warmup=1)
        assert isinstance(value, float) and 0 < value < 1000
    with pytest.raises(ValueError, match="runs"):
        litert.latency_ms(golden[0], num_threads=1, runs=0)


@pytest.mark.large
def test_mobilenetv3_small_partitions(tmp_path, capsys):
    # The issue's measurement on a real backbone: Keras' MobileNetV3-small, 64 px, random weights.
    model = keras.applications.MobileNetV3Small(
        input_shape=(64, 64, 3), weights=None, classes=1, classifier_activation="sigmoid"
    )
    calibration = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype(np.float32)
    float32 = to_tflite(model, tmp_path / "float32.tflite")
    int8 = to_tflite(model, tmp_path / "int8.tflite", calibration=calibration)
    assert litert.delegate_partitions(float32) == 1 and litert.is_fully_accelerated(float32)
    hard_swish = litert.undelegated_ops(int8).get("HARD_SWISH", 0)
    assert hard_swish >= 10 and litert.delegate_partitions(int8) >= 10 and not litert.is_fully_accelerated(int8)
    with capsys.disabled():
        for name, path in (("float32", float32), ("int8", int8)):
            latency = ", ".join(f"{t} thread(s) {litert.latency_ms(path, t):.2f} ms" for t in (1, 2))
            partitions, outside = litert.delegate_partitions(path), litert.undelegated_ops(path)
            print(f"\n{name}: {partitions} partition(s), undelegated {outside}, {latency}")


def test_loading_and_compiling_keep_litert_native_log_off_stderr(golden):
    path = str(golden[0])
    code = (
        "from tf_fracture_export import litert; "
        f"litert.load_interpreter({path!r}); print(litert.is_fully_accelerated({path!r}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_FRACTURE_VERBOSE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "True"
    assert "INFO" not in out.stderr and "accelerator" not in out.stderr, out.stderr[-500:]
