"""The CAM head: the classifier's logit is the spatial mean of its own class activation map."""

import keras
import numpy as np
import pytest
from harness import randomise_network_weights as randomise_weights
from helpers import images

from tf_fracture.backbones import FEATURE_MAP, available_backbones
from tf_fracture.configs import backbone_card, backbone_names
from tf_fracture.models import CAM_LAYER, build_classifier, build_fusion, cam_model, feature_extractor, load_model
from tf_fracture.models.multitask import CAM, FRACTURE, MultiTaskClassifier, with_cam

VARIANTS = {name: backbone_card(name).test_variant for name in backbone_names()}


@pytest.fixture(scope="module")
def classifiers():
    keras.utils.set_random_seed(3)
    models = {name: build_classifier(name, VARIANTS[name], weights=None, dropout=0.2) for name in available_backbones()}
    for seed, model in enumerate(models.values()):
        randomise_weights(model, seed)  # BN statistics, biases, LayerScale: nothing at its identity value
    return models


@pytest.mark.parametrize("name", available_backbones())
def test_logit_is_the_mean_of_the_cam(classifiers, name, rng):
    model = classifiers[name]
    x = images(rng, size=64)
    cam, logit = (keras.ops.convert_to_numpy(t) for t in cam_model(model)(x))
    feature_map = keras.Model(model.input, model.get_layer(FEATURE_MAP).output)(x)
    assert cam.shape == (2, *feature_map.shape[1:3], 1) and cam.dtype == np.float32
    scale = np.abs(cam).max()
    np.testing.assert_allclose(cam.mean(axis=(1, 2)), logit, atol=1e-5 * scale)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), logit, atol=1e-6 * scale)


@pytest.mark.parametrize("name", ["mobilenetv3", "efficientnetv2"])
def test_cam_head_is_pooling_then_dense(classifiers, name, rng):
    """Where nothing follows the pooling, the CAM head is exactly the published GAP + Dense head."""
    model = classifiers[name]
    x = images(rng, size=64)
    features = feature_extractor(model)(x)
    kernel, bias = model.get_layer(CAM_LAYER).get_weights()
    expected = keras.ops.convert_to_numpy(features) @ kernel + bias
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, rtol=1e-4, atol=1e-5)


def test_convnext_applies_its_head_layernorm_at_every_position(classifiers, rng):
    model = classifiers["convnext"]
    x = images(rng, size=64)
    feature_map = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer(FEATURE_MAP).output)(x))
    norm = model.get_layer("convnext_tiny_head_layernorm")
    gamma, beta = (keras.ops.convert_to_numpy(w) for w in norm.weights)
    mean, var = feature_map.mean(-1, keepdims=True), feature_map.var(-1, keepdims=True)
    normed = (feature_map - mean) / np.sqrt(var + norm.epsilon) * gamma + beta
    kernel, bias = model.get_layer(CAM_LAYER).get_weights()
    cam = keras.ops.convert_to_numpy(cam_model(model)(x)[0])
    np.testing.assert_allclose(cam, normed @ kernel + bias, rtol=1e-4, atol=1e-4 * np.abs(cam).max())


@pytest.mark.parametrize("name", ["mobilenetv3"])  # every family's weights reload: test_models.py
def test_cam_survives_a_safe_mode_reload(classifiers, name, tmp_path, rng):
    model = classifiers[name]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    again = load_model(path)
    x = images(rng, size=48)
    for a, b in zip(cam_model(model)(x), cam_model(again)(x), strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-5)


def test_the_training_model_exposes_the_classifiers_own_cam(classifiers, rng, tmp_path):
    classifier = classifiers["mobilenetv3"]
    model = with_cam(classifier)
    x = images(rng, size=64)
    outputs = model(x)
    assert set(outputs) == {FRACTURE, CAM}
    cam, logit = cam_model(classifier)(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(outputs[CAM]), keras.ops.convert_to_numpy(cam))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(outputs[FRACTURE]), keras.ops.convert_to_numpy(logit))
    assert {id(w) for w in model.weights} == {id(w) for w in classifier.weights}  # shared, nothing added
    model.save(tmp_path / "guided.keras")
    again = load_model(tmp_path / "guided.keras")
    assert isinstance(again, MultiTaskClassifier) and again.cam and again.num_parts == 0
    with pytest.raises(ValueError, match="num_parts"):
        MultiTaskClassifier(classifier)


def test_fusion_gives_each_members_own_cam_and_keeps_it_through_a_safe_mode_reload(classifiers, rng, tmp_path):
    # ConvNeXt's head (LayerNorm + projection at every position) and MobileNetV3's plain one.
    members = [classifiers["convnext"], classifiers["mobilenetv3"]]
    fusion = build_fusion(members)
    assert fusion.member_cams and len(fusion.member_cam_heads) == 2
    x = images(rng, size=64)
    *cams, logit = (keras.ops.convert_to_numpy(t) for t in cam_model(fusion)(x))
    np.testing.assert_allclose(logit, keras.ops.convert_to_numpy(fusion(x, training=False)), rtol=1e-5, atol=1e-5)
    for member, cam in zip(members, cams, strict=True):
        own, member_logit = (keras.ops.convert_to_numpy(t) for t in cam_model(member)(x, training=False))
        np.testing.assert_allclose(cam, own, rtol=1e-5, atol=1e-5)  # the member classifier's own map
        np.testing.assert_allclose(cam.mean(axis=(1, 2)), member_logit, rtol=1e-4, atol=1e-4)
    assert np.ptp(cams[0]) > 0.1  # ConvNeXt's map varies here (these tiny random MobileNets' maps are flat)
    # The heads are copies, frozen, not part of the fusion's logit: nothing trains them.
    assert not any(head.trainable for head in fusion.member_cam_heads)
    fusion.save(tmp_path / "fusion.keras")
    again = load_model(tmp_path / "fusion.keras")  # safe_mode=True
    assert again.member_cams
    for a, b in zip(cam_model(fusion)(x), cam_model(again)(x), strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-5)


def test_fusion_of_bare_backbones_has_no_cam_and_says_what_to_do(classifiers):
    fusion = build_fusion([classifiers["mobilenetv3"].backbone, classifiers["efficientnetv2"]])
    assert not fusion.member_cams
    with pytest.raises(ValueError, match=r"bare backbones.*Build the fusion from classifiers"):
        cam_model(fusion)


def test_the_cbam_gate_map_is_the_gate_the_forward_pass_applied(rng, tmp_path):
    keras.utils.set_random_seed(8)
    classifier = build_classifier("mobilenetv3", "small", weights=None, input_size=64, feature_stride=16)
    randomise_weights(classifier, 4)
    block = [layer for layer in classifier.layers if type(layer).__name__ == "CBAM"][-1]
    model = with_cam(classifier, localization_map="cbam_gate")
    assert {id(w) for w in model.weights} == {id(w) for w in classifier.weights}  # shared, nothing added
    x = images(rng, size=64)
    block_input = keras.Model(classifier.input, block.input)
    bn = block.spatial_gate.bn
    for training in (False, True):
        state = [v.numpy() for v in bn.variables]
        logits = keras.ops.convert_to_numpy(model(x, training=training)[CAM])
        after_model = [v.numpy() for v in bn.variables]
        for v, value in zip(bn.variables, state, strict=True):
            v.assign(value)
        classifier(x, training=training)  # the classifier alone: BatchNorm's statistics move the same way
        for a, b in zip(after_model, [v.numpy() for v in bn.variables], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        for v, value in zip(bn.variables, state, strict=True):
            v.assign(value)
        inner = block.channel_gate(block_input(x, training=training))
        gate = keras.ops.convert_to_numpy(block.spatial_gate.attention(inner, training=training))
        for v, value in zip(bn.variables, state, strict=True):
            v.assign(value)
        assert logits.shape == gate.shape == (len(x), 4, 4, 1) and np.ptp(gate) > 1e-2
        np.testing.assert_allclose(1 / (1 + np.exp(-logits)), gate, rtol=1e-4, atol=1e-5)
    model.save(tmp_path / "gate.keras")
    again = load_model(tmp_path / "gate.keras")  # safe_mode=True
    assert again.localization_map == "cbam_gate"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(x)[CAM]), keras.ops.convert_to_numpy(model(x)[CAM]), rtol=1e-5, atol=1e-5
    )
    plain = build_classifier("mobilenetv3", "small", weights=None, input_size=64, attention=False)
    with pytest.raises(ValueError, match="no CBAM block"):
        with_cam(plain, localization_map="cbam_gate")
