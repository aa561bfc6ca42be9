"""MobileNetV3's edge variants (Keras' minimalistic networks + CBAM): built like the method's, int8 whole.

XNNPACK has no int8 hard-swish, so a full-integer TFLite of the method's MobileNetV3 splits
into many delegate partitions; the edge variants have no hard-swish and must quantise whole,
CBAM's gates (channel mean/max, concat, 7x7 conv, sigmoid, multiply) included.
"""

import functools
import importlib.util
import pathlib
import sys

import keras
import numpy as np
import pytest
from harness import assert_close_relative, randomise_network_weights, run_model_saving_test
from helpers import images

from tf_fracture.backbones import available_variants, build_backbone
from tf_fracture.backbones.mobilenetv3 import EDGE_VARIANTS
from tf_fracture.backbones.weights import transfer_weights
from tf_fracture.configs import ExperimentConfig, apply_overrides
from tf_fracture.layers import CBAM
from tf_fracture.models import build_classifier
from tf_fracture.train.callbacks import classifier_of
from tf_fracture.train.model_factory import build_model
from tf_fracture_export import litert

SIZE = 64
MINIMALISTIC = {
    "large_minimal": functools.partial(keras.applications.MobileNetV3Large, minimalistic=True),
    "small_minimal": functools.partial(keras.applications.MobileNetV3Small, minimalistic=True),
}
BENCHMARK = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "edge_benchmark.py"
CBAM_OPS = {"REDUCE_MAX", "MEAN", "CONCATENATION", "LOGISTIC", "MUL"}  # the gates' ops in TFLite


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("edge_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_edge_variants_are_in_the_registry():
    assert EDGE_VARIANTS == ("large_minimal", "small_minimal")
    assert set(EDGE_VARIANTS) < set(available_variants("mobilenetv3"))


@pytest.mark.parametrize("variant", EDGE_VARIANTS)
def test_edge_variant_rebuilds_keras_minimalistic_network_and_takes_its_weights(variant, rng, float64):
    """Filled from a locally built minimalistic network (as from ImageNet), RGB and grey stems reproduce it."""
    reference = MINIMALISTIC[variant](include_top=False, weights=None, input_shape=(None, None, 3), pooling="avg")
    randomise_network_weights(reference)
    public = dict(attention=False, feature_dim=None, keras_application=reference)
    rgb = build_backbone("mobilenetv3", variant, stem="rgb", **public)
    grey = build_backbone("mobilenetv3", variant, stem="grey", **public)
    x = images(rng, size=SIZE).astype("float64")
    expected = reference.predict(np.repeat(x, 3, axis=-1), verbose=0)
    assert_close_relative(rgb.predict(np.repeat(x, 3, axis=-1), verbose=0), expected, 1e-6, require_variation=True)
    assert_close_relative(grey.predict(x, verbose=0), expected, 1e-6, require_variation=True)
    # The method's model (768-d conv + CBAM) takes the same network's weights: everything but the added layers.
    method = build_backbone("mobilenetv3", variant, keras_application=reference)
    np.testing.assert_array_equal(
        method.get_layer("conv").get_weights()[0], reference.get_layer("conv").get_weights()[0].sum(2, keepdims=True)
    )


def test_edge_variant_refuses_the_hard_swish_network_weights():
    """The full MobileNetV3-Large (with squeeze-and-excitation) does not fit the minimalistic rebuild."""
    full = keras.applications.MobileNetV3Large(include_top=False, weights=None, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="Cannot transfer weights"):
        build_backbone("mobilenetv3", "large_minimal", keras_application=full)


@pytest.mark.parametrize("variant", EDGE_VARIANTS)
def test_method_edge_model_grey_stem_equals_rgb_stem_on_replicated_input(variant, rng, float64):
    rgb = build_backbone("mobilenetv3", variant, weights=None, stem="rgb")
    grey = build_backbone("mobilenetv3", variant, weights=None, stem="grey")
    randomise_network_weights(rgb)

    def sum_rgb_kernels(values):
        return [values[0].sum(axis=2, keepdims=True), *values[1:]]

    transfer_weights(rgb, grey, transforms={"conv": sum_rgb_kernels})
    x = images(rng, size=SIZE).astype("float64")
    assert_close_relative(
        grey.predict(x, verbose=0), rgb.predict(np.repeat(x, 3, axis=-1), verbose=0), 1e-6, require_variation=True
    )


def _activations(model: keras.Model) -> set[str]:
    """The activation functions of ``model``'s graph (Activation and ReLU layers)."""
    names = set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.ReLU):
            names.add("relu" if layer.max_value is None else f"relu{layer.max_value:g}")
        elif isinstance(layer, keras.layers.Activation):
            names.add(keras.activations.serialize(layer.activation))
    return names


@pytest.mark.parametrize("variant", EDGE_VARIANTS)
def test_edge_variant_has_no_hard_swish_and_keeps_the_method_head(variant):
    model = build_backbone("mobilenetv3", variant, weights=None, input_size=SIZE)
    # Keras serialises hard-swish as "hard_silu"; the method's network has it (and ReLU6 in its hard sigmoid).
    assert {"hard_silu", "relu6"} <= _activations(build_backbone("mobilenetv3", "small", weights=None))
    assert _activations(model) == {"relu"}
    assert not [layer for layer in model.layers if "squeeze_excite" in layer.name]
    assert model.get_layer("feature_conv").output.shape[-1] == 768
    assert [layer.name for layer in model.layers if isinstance(layer, CBAM)] == ["top_cbam"]
    assert model.output_shape == (None, 768)


def test_edge_classifier_saves_and_reloads(tmp_path, rng):
    model = build_classifier("mobilenetv3", "small_minimal", weights=None, input_size=SIZE)
    randomise_network_weights(model)
    loaded = run_model_saving_test(model, images(rng, size=SIZE), tmp_path)
    assert (loaded.backbone.family, loaded.backbone.variant) == ("mobilenetv3", "small_minimal")


def test_training_cli_override_builds_the_edge_variant():
    experiment = apply_overrides(ExperimentConfig(), ["model.variant=large_minimal", "data.image_size=64"])
    model = classifier_of(build_model(experiment))  # guided by default: the training model wraps the classifier
    assert (model.backbone.family, model.backbone.variant) == ("mobilenetv3", "large_minimal")
    with pytest.raises(ValueError, match="'large_minimal', 'small_minimal'"):
        build_model(apply_overrides(ExperimentConfig(), ["model.variant=minimal", "data.image_size=64"]))


def _int8_tflite(bench, variant, directory) -> pathlib.Path:
    keras.utils.set_random_seed(0)
    model = bench.probability_model(build_classifier("mobilenetv3", variant, weights=None, input_size=SIZE), SIZE)
    path = directory / f"{variant}_int8.tflite"
    path.write_bytes(bench.to_tflite(model, "int8", bench.calibration_images((SIZE, SIZE, 1), 4)))
    return path


def _ops_and_float_tensors(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    floats = [t["name"] for t in interpreter.get_tensor_details() if np.dtype(t["dtype"]) == np.float32]
    return ops, floats


@pytest.mark.parametrize("variant", EDGE_VARIANTS)
def test_int8_edge_model_with_cbam_runs_as_one_xnnpack_partition(bench, variant, tmp_path):
    path = _int8_tflite(bench, variant, tmp_path)
    ops, floats = _ops_and_float_tensors(path)
    assert CBAM_OPS <= ops and "HARD_SWISH" not in ops  # CBAM's gates are in the graph...
    assert not floats  # ...quantised to int8 like everything else...
    assert litert.delegate_partitions(path) == 1  # ...and delegated with the rest, as one partition
    assert litert.undelegated_ops(path) == {}
    assert litert.is_fully_accelerated(path) is True


def test_int8_method_model_splits_into_many_partitions(bench, tmp_path):
    """Why the edge variant exists: XNNPACK runs int8 HARD_SWISH on no path."""
    path = _int8_tflite(bench, "small", tmp_path)
    assert "HARD_SWISH" in _ops_and_float_tensors(path)[0]
    assert litert.delegate_partitions(path) > 10
    assert set(litert.undelegated_ops(path)) == {"HARD_SWISH"}
    assert litert.is_fully_accelerated(path) is False
