"""Grad-CAM: against an analytic NumPy computation, on a blob that moves, through the fusion's members,
and the "new node" trap (a feature map the logit was not computed from) detected, never silently zero."""

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import randomise_network_weights

from tf_fracture.backbones import FEATURE_MAP, Backbone
from tf_fracture.explain import CamModel, cam_model, explain_batch, grad_cam, heatmap_from_gradients
from tf_fracture.explain.gradcam import upsample_and_scale
from tf_fracture.models import FractureClassifier, FusionModel, build_classifier


def numpy_grad_cam(maps: np.ndarray, size: int) -> np.ndarray:
    """Upsampling with OpenCV's bilinear (half-pixel centres, like tf.image.resize), min-max to [0, 1]."""
    out = []
    for m in maps:
        m = cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        span = m.max() - m.min()
        out.append((m - m.min()) / span if span > 0 else np.zeros_like(m))
    return np.stack(out)


def test_grad_cam_equals_an_analytic_numpy_computation():
    # image (12x12x2) -> strided 1x1 conv -> A (6x6x3) -> 1x1 conv + ReLU (4) -> mean -> dense -> logit.
    # d logit / d A[i, j, k] = sum_u v_u / 36 * [z_u(i, j) > 0] * W2[k, u], with z = A W2 + b2: it varies
    # over space (the ReLU), so a wrong spatial mean or a wrong channel axis gives another map.
    r = np.random.default_rng(3)
    W1, b1 = r.normal(size=(2, 3)), r.normal(size=3)
    W2, b2 = r.normal(size=(3, 4)), np.array([0.3, -0.2, 0.1, -0.4])
    v, c = np.array([1.0, -2.0, 0.5, 1.5]), 0.2
    x_in = keras.Input((12, 12, 2))
    a = keras.layers.Conv2D(3, 1, strides=2, name="conv")(x_in)
    a = keras.layers.Identity(name=FEATURE_MAP)(a)
    z = keras.layers.Conv2D(4, 1, activation="relu", name="mix")(a)
    h = keras.layers.GlobalAveragePooling2D()(z)
    logit = keras.layers.Dense(1, name="logit")(h)
    model = keras.Model(x_in, logit)
    model.get_layer("conv").set_weights([W1[None, None], b1])
    model.get_layer("mix").set_weights([W2[None, None], b2])
    model.get_layer("logit").set_weights([v[:, None], np.array([c])])
    x = r.uniform(0, 1, (3, 12, 12, 2))

    A = x[:, ::2, ::2] @ W1 + b1  # (3, 6, 6, 3)
    pre = A @ W2 + b2
    assert 0.2 < (pre > 0).mean() < 0.8  # the ReLU both passes and blocks: the gradient varies over space
    dA = ((pre > 0) * v / 36.0) @ W2.T
    weights = dA.mean(axis=(1, 2), keepdims=True)
    expected = numpy_grad_cam(np.maximum((weights * A).sum(-1), 0), 12)
    expected_logit = np.maximum(pre, 0).mean(axis=(1, 2)) @ v + c

    result = explain_batch(model, x.astype(np.float32))
    assert list(result.heatmaps) == [model.name]
    np.testing.assert_allclose(result.logits, expected_logit, rtol=1e-5)
    heatmap = result.heatmaps[model.name]
    assert heatmap.shape == (3, 12, 12) and heatmap.dtype == np.float32
    assert all(m.max() == pytest.approx(1.0) and m.min() == pytest.approx(0.0) for m in expected)
    np.testing.assert_allclose(heatmap, expected, atol=1e-5)


def blob_model(size=32):
    """A bright patch raises the logit where it is: A = 4x4 average pool of the image, logit = mean(A)."""
    x_in = keras.Input((size, size, 1))
    a = keras.layers.AveragePooling2D(4)(x_in)
    a = keras.layers.Identity(name=FEATURE_MAP)(a)
    logit = keras.layers.Dense(1, name="logit")(keras.layers.GlobalAveragePooling2D()(a))
    model = keras.Model(x_in, logit, name="blob")
    model.get_layer("logit").set_weights([np.ones((1, 1)), np.array([-5.0])])
    return model


def blob(size, top, left, side=6):
    image = np.full((size, size), 20.0, np.float32)
    image[top : top + side, left : left + side] = 240.0
    return image


def test_the_map_moves_with_the_object():
    model = blob_model()
    images = np.stack([blob(32, 2, 3), blob(32, 22, 20)])
    maps = grad_cam(model, images)["blob"]
    for heatmap, (top, left) in zip(maps, [(2, 3), (22, 20)], strict=True):
        row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert top <= row < top + 6 and left <= col < left + 6
        assert heatmap.max() == pytest.approx(1.0)
        assert heatmap[top : top + 6, left : left + 6].mean() > 3 * heatmap.mean()


def test_maps_are_min_max_scaled_per_image():
    maps = upsample_and_scale(np.array([[[1.0, 2.0], [3.0, 5.0]], [[0.0, 0.0], [0.0, 0.5]]]), (2, 2))
    np.testing.assert_allclose(maps, [[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.0, 1.0]]])
    np.testing.assert_allclose(upsample_and_scale(np.array([[[0.0, 4.0]]]), (1, 4)), [[[0.0, 0.25, 0.75, 1.0]]])


def test_a_constant_map_stays_zero():
    maps = upsample_and_scale(np.stack([np.full((4, 4), 3.0), np.zeros((4, 4))]), (8, 8))
    np.testing.assert_array_equal(maps, np.zeros((2, 8, 8)))
    # An object that lowers the logit everywhere: ReLU(sum_k w_k A_k) = 0 everywhere -> all zeros.
    model = blob_model()
    model.get_layer("logit").set_weights([-np.ones((1, 1)), np.zeros(1)])
    np.testing.assert_array_equal(grad_cam(model, blob(32, 5, 5)[None])["blob"], np.zeros((1, 32, 32)))


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(11)
    model = build_classifier("mobilenetv3", "small", weights=None, input_size=64, feature_dim=32)
    randomise_network_weights(model, seed=1)
    return model


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(5).uniform(0, 255, (3, 64, 64)).astype(np.float32)


def test_classifier_maps_are_non_trivial_and_per_image(classifier, inputs):
    result = explain_batch(classifier, inputs, batch_size=3)
    (name,) = result.heatmaps
    assert name == classifier.backbone.name
    maps = result.heatmaps[name]
    assert maps.shape == (3, 64, 64)
    for m in maps:
        assert m.min() == 0.0 and m.max() == pytest.approx(1.0) and m.std() > 0.05
    np.testing.assert_allclose(result.logits, classifier(inputs[..., None]).numpy()[:, 0], rtol=1e-4, atol=1e-4)
    # One image at a time gives the same maps: the batch's summed logit gives each image its own gradient.
    one_by_one = grad_cam(classifier, inputs, batch_size=1)[name]
    np.testing.assert_allclose(one_by_one, maps, atol=1e-4)


def test_a_feature_map_from_another_node_is_refused_not_silently_zero(classifier, inputs):
    # The trap: the backbone called again makes a new node; the classifier's logit does not depend on
    # that node's feature map, its gradient is None.
    image = keras.Input((64, 64, 1))
    backbone = classifier.backbone
    stray = keras.Model(backbone.input, backbone.feature_map)(image)
    broken = CamModel(keras.Model(image, [classifier(image), stray]), ("stray",))
    with pytest.raises(RuntimeError, match="gradient is None"):
        grad_cam(broken, inputs)


def signal_weights(model, seed, gain=5.0):
    """Random kernels (He-like, scaled by ``gain``), BN scales and variances in [0.5, 1.5], every offset 0.

    With randomised offsets (randomise_network_weights) or at Keras' initial weights, MobileNetV3's
    activations come to depend on the image by less than 1e-8 of their size at the feature map: the
    offsets dominate, and every image gets the same map. Without offsets the maps follow the image.
    """
    r = np.random.default_rng(seed)
    for weight in model.weights:
        value, leaf = np.asarray(weight), weight.path.rsplit("/", 1)[-1]
        if leaf == "depthwise_kernel":
            new = r.normal(0, 1, value.shape) * np.sqrt(gain / np.prod(value.shape[:2]))
        elif leaf == "kernel":
            new = r.normal(0, 1, value.shape) * np.sqrt(gain / np.prod(value.shape[:-1]))
        elif leaf in ("gamma", "moving_variance"):
            new = r.uniform(0.5, 1.5, value.shape)
        else:
            new = np.zeros(value.shape)
        weight.assign(new.astype(value.dtype))


def member(name, attention, seed):
    backbone = Backbone("mobilenetv3", "small", input_size=64, feature_dim=32, attention=attention, name=name)
    signal_weights(backbone, seed)
    return backbone


@pytest.fixture(scope="module", params=[False, True], ids=["frozen", "trained"])
def fusion(request):
    keras.utils.set_random_seed(12)
    model = FusionModel(
        [member("alpha", True, 2), member("beta", False, 3)],
        hidden_units=(8,),
        train_backbones=request.param,
        input_size=64,
    )
    r = np.random.default_rng(4)
    for layer in ("fusion_norm", "fusion_dense_0", "logit"):  # a head at its initial weights hides little
        weights = model.get_layer(layer).get_weights()
        model.get_layer(layer).set_weights([w + r.normal(0, 0.3, w.shape) for w in weights])
    return model


def chained_grad_cam(fusion, member_index, x):
    """Independent of cam_model: this member's feature map -> its remaining layers -> the fusion's head,
    the other members' features held fixed; the gradient by chaining eagerly."""
    members = fusion.members
    m = members[member_index]
    to_map = keras.Model(m.input, m.get_layer(FEATURE_MAP).output)
    rest = keras.Model(m.get_layer(FEATURE_MAP).output, m.output)
    features = [mm(x, training=False) for mm in members]
    fused = fusion.get_layer("fused_features")
    head = keras.Model(fused.input, fusion.output)
    feature_map = tf.convert_to_tensor(to_map(x, training=False))
    with tf.GradientTape() as tape:
        tape.watch(feature_map)
        features[member_index] = rest(feature_map, training=False)
        logit = head(features, training=False)
        total = tf.reduce_sum(logit)
    gradient = tape.gradient(total, feature_map)
    maps = heatmap_from_gradients(feature_map.numpy(), gradient.numpy())
    return numpy_grad_cam(maps, x.shape[1]), logit.numpy()[:, 0]


def test_fusion_gives_one_map_per_member_from_its_own_feature_map(fusion, inputs):
    x = inputs[..., None]
    cam = cam_model(fusion)
    assert cam.names == ("alpha", "beta")
    result = explain_batch(cam, inputs)
    np.testing.assert_allclose(result.logits, fusion(x, training=False).numpy()[:, 0], rtol=1e-5, atol=1e-6)
    assert np.ptp(result.logits) > 5e-3  # the logits compared above depend on the image
    for index, name in enumerate(cam.names):
        maps = result.heatmaps[name]
        assert maps.shape == (3, 64, 64)
        assert all(m.max() == pytest.approx(1.0) and m.std() > 0.05 for m in maps)
        expected, logits = chained_grad_cam(fusion, index, x)
        np.testing.assert_allclose(logits, result.logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(maps, expected, atol=2e-3)
    assert np.abs(result.heatmaps["alpha"] - result.heatmaps["beta"]).mean() > 0.05
    assert np.abs(result.heatmaps["alpha"][0] - result.heatmaps["alpha"][1]).mean() > 0.05  # and follow the image


def test_fusion_has_no_own_cam_and_says_why(fusion):
    from tf_fracture.data.preprocess import PreprocessConfig
    from tf_fracture.explain.report import Explainer

    explainer = Explainer(fusion, cam_model(fusion), PreprocessConfig(64, unsharp_kernel=3), "fusion.keras")
    assert explainer.own_cam is None and "fusion model" in explainer.own_cam_skipped
    assert explainer.heatmap_names == ("alpha", "beta")  # Grad-CAM per member only


def test_bad_inputs_are_refused(classifier):
    with pytest.raises(ValueError, match="takes 64x64 images"):
        grad_cam(classifier, np.zeros((1, 32, 32)))
    with pytest.raises(ValueError, match=r"\(batch, height, width, 1\)"):
        grad_cam(classifier, np.zeros((64, 64)))
    with pytest.raises(ValueError, match="bare Backbone"):
        cam_model(classifier.backbone)
    assert isinstance(classifier, FractureClassifier)


def test_a_frozen_model_is_explained_too(classifier, inputs):
    # GradientTape watches trainable variables only: a frozen model must still give its maps.
    expected = grad_cam(classifier, inputs[:1])
    classifier.trainable = False
    try:
        frozen = grad_cam(classifier, inputs[:1])
    finally:
        classifier.trainable = True
    np.testing.assert_allclose(frozen[classifier.backbone.name], expected[classifier.backbone.name], atol=1e-6)


def test_a_multitask_model_is_explained_by_its_fracture_logit(classifier, inputs):
    from tf_fracture.models.multitask import with_body_part_head

    multitask = with_body_part_head(classifier, 3)
    expected = grad_cam(classifier, inputs[:2])
    np.testing.assert_allclose(
        grad_cam(multitask, inputs[:2])[classifier.backbone.name], expected[classifier.backbone.name]
    )


def test_mixed_precision_models_give_float32_maps(inputs):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_classifier("mobilenetv3", "small", weights=None, input_size=64, feature_dim=32)
    finally:
        keras.config.set_dtype_policy("float32")
    signal_weights(model, 4)
    result = explain_batch(model, inputs[:2])
    (maps,) = result.heatmaps.values()
    assert maps.dtype == np.float32 and result.logits.dtype == np.float32
    assert np.isfinite(maps).all() and all(m.max() == pytest.approx(1.0) for m in maps)
