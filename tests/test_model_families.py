"""Every registered backbone family through the shared harness (tests/harness.py).

Parametrised from the registry: a family is tested here by being registered. Every family
and variant is built, run and saved/reloaded; the classifier checks (config JSON round trip,
fit steps, mixed precision) run on one variant per family, the smallest, to keep the suite fast.
Tiny inputs (32 px, the smallest the networks accept) throughout. Marked large (run with
``pytest -m large``): EfficientNetV2-M's reload test and EfficientNetV2-S's classifier tests.
"""

import harness
import keras
import numpy as np
import pytest
from helpers import images

from tf_fracture.backbones import available_backbones, available_variants, build_backbone
from tf_fracture.configs import backbone_card
from tf_fracture.models import build_classifier

SIZE = 32
# ~30 s to build, save and reload on a CPU (EfficientNetV2-M has 979 weights): `pytest -m large`.
LARGE_VARIANTS = {("efficientnetv2", "m")}
# Tracing EfficientNetV2-S's train step takes 40-110 s on a shared 2-core CPU; tests/test_models.py
# still runs one default-size training step of it in the default suite.
LARGE_CLASSIFIERS = {"efficientnetv2"}


def all_variants():
    return [
        pytest.param(name, variant, marks=[pytest.mark.large] if (name, variant) in LARGE_VARIANTS else [])
        for name in available_backbones()
        for variant in available_variants(name)
    ]


def fast_variants():
    return [
        pytest.param(
            name, backbone_card(name).test_variant, marks=[pytest.mark.large] if name in LARGE_CLASSIFIERS else []
        )
        for name in available_backbones()
    ]


def freeze_every_other_layer(model):
    """A mix of frozen and trainable layers (CBAM blocks among them), so a lost flag shows on reload."""
    weighted = [layer for layer in model.layers if layer.weights]
    for layer in weighted[::2]:
        layer.trainable = False
    assert model.trainable_weights and len(model.trainable_weights) < len(model.weights)


@pytest.mark.parametrize("name, variant", all_variants())
def test_backbone_builds_runs_and_reloads_with_its_frozen_layers(name, variant, tmp_path, rng):
    model = build_backbone(name, variant, weights=None, input_size=SIZE)
    assert model.input_shape == (None, SIZE, SIZE, 1)
    width = model.output_shape[-1]
    x = images(rng, batch=2, size=SIZE)
    y = model(x)
    assert tuple(y.shape) == (2, width) and keras.backend.standardize_dtype(y.dtype) == "float32"
    assert model.get_layer("features").output.shape == (None, width)
    harness.randomise_weights(model, scale=0.01, perturb=True)
    freeze_every_other_layer(model)
    harness.run_model_saving_test(model, x, tmp_path)


@pytest.mark.parametrize("name, variant", fast_variants())
def test_classifier_config_round_trip_and_fit_steps(name, variant, rng):
    model = build_classifier(name, variant, weights=None, input_size=SIZE)
    harness.randomise_weights(model, scale=0.01, perturb=True)
    x = images(rng, batch=2, size=SIZE)
    harness.run_serialization_test(model, x)

    batch = images(rng, batch=4, size=SIZE)
    labels = np.array([[0.0], [1.0], [1.0], [0.0]], "float32")
    # A deep net may have a few weights with an exactly-zero gradient on 4 images of 32 px.
    harness.run_fit_step_test(model, batch, labels, learning_rate=0.01, require_all=False)
    harness.run_frozen_fit_step_test(model, batch, labels)


@pytest.mark.parametrize("name, variant", fast_variants())
def test_classifier_mixed_precision(name, variant, rng):
    # The logit layer is pinned to float32; every variable stays float32 under the policy.
    harness.run_mixed_precision_test(
        lambda: build_classifier(name, variant, weights=None, input_size=SIZE),
        images(rng, batch=2, size=SIZE),
        expected_output_dtype="float32",
        rtol=5e-2,
    )
