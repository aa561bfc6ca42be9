"""The model's own class activation map beside Grad-CAM: a hand-built model whose CAM is known, its exact
box hit rate, the map against NumPy, and the classifier's and the fusion model's cases."""

import cv2
import keras
import numpy as np
import pytest
from test_explain_gradcam import numpy_grad_cam

from tf_fracture.backbones import FEATURE_MAP
from tf_fracture.data.preprocess import PreprocessConfig
from tf_fracture.explain import OWN_CAM, cam_model, class_activation_maps, heatmaps_of, own_cam_model
from tf_fracture.explain.cam import title
from tf_fracture.explain.report import Explainer, explain_examples, summary_lines
from tf_fracture.models import CAM_LAYER, LOGIT_LAYER, build_classifier, build_fusion

THRESHOLD, GAIN, BIAS = 100.0, 0.1, -1.0


def dark_spot_model(size=32):
    """A "lucent fracture" detector: logit = mean over 4x4 cells c of GAIN * ReLU(THRESHOLD - mean(c)) + BIAS.

    The feature map is the cells' mean grey values; a per-position ReLU unit sits between it and the CAM,
    so the CAM peaks on the darkest cell while Grad-CAM's map, the ReLU of the feature map weighted by the
    mean gradient (negative: darker raises the logit), is flat zero. The two can never be confused.
    """
    image = keras.Input((size, size, 1))
    cells = keras.layers.AveragePooling2D(4)(image)
    cells = keras.layers.Identity(name=FEATURE_MAP)(cells)
    dark = keras.layers.Dense(1, activation="relu", name="dark")(cells)
    cam = keras.layers.Dense(1, name=CAM_LAYER, dtype="float32")(dark)
    logit = keras.layers.GlobalAveragePooling2D(name=LOGIT_LAYER, dtype="float32")(cam)
    model = keras.Model(image, logit, name="dark_spot")
    model.get_layer("dark").set_weights([np.array([[-1.0]]), np.array([THRESHOLD])])
    model.get_layer(CAM_LAYER).set_weights([np.array([[GAIN]]), np.array([BIAS])])
    return model


def numpy_cam(images):
    """The dark_spot model's CAM, ``(B, 8, 8)``, and its logits, in NumPy."""
    images = np.asarray(images, np.float64)
    cells = images.reshape(len(images), images.shape[1] // 4, 4, images.shape[2] // 4, 4).mean(axis=(2, 4))
    cam = GAIN * np.maximum(THRESHOLD - cells, 0.0) + BIAS
    return cam, cam.mean(axis=(1, 2))


def dark_spot(size, top, left, side=8, background=200, spot=20):
    image = np.full((size, size), background, np.uint8)
    image[top : top + side, left : left + side] = spot
    return image


def example(image, boxes, label=1, name="x"):
    return {"image": image[..., None], "label": label, "filename": name.encode(), "boxes": np.asarray(boxes)}


def test_the_cam_is_the_models_own_map_upsampled():
    model = dark_spot_model()
    r = np.random.default_rng(0)
    images = np.stack([dark_spot(32, 8, 16), dark_spot(32, 20, 0)]).astype(np.float32)
    images += r.normal(0, 3, images.shape).astype(np.float32)  # no ties between cells
    cam, logits = numpy_cam(images)
    maps, got_logits = class_activation_maps(own_cam_model(model)[0], images, batch_size=1)
    np.testing.assert_allclose(got_logits, logits, rtol=1e-5)
    np.testing.assert_allclose(maps, numpy_grad_cam(cam, 32), atol=1e-5)  # bilinear, min-max per image
    # Grad-CAM of the same model is flat: the own CAM is not a copy of it.
    heatmaps, _ = heatmaps_of(Explainer(model, cam_model(model), PreprocessConfig(32, unsharp_kernel=3), "m"), images)
    assert list(heatmaps) == [OWN_CAM, "dark_spot"]
    np.testing.assert_array_equal(heatmaps["dark_spot"], np.zeros((2, 32, 32)))
    np.testing.assert_allclose(heatmaps[OWN_CAM], maps)


def test_explain_examples_gives_the_cams_exact_hit_rate_beside_grad_cams(tmp_path):
    model = dark_spot_model()
    explainer = Explainer(model, cam_model(model), PreprocessConfig(32, unsharp_kernel=3), "dark_spot.keras")
    on_spot = [[8 / 32, 16 / 32, 16 / 32, 24 / 32]]
    elsewhere = [[20 / 32, 0.0, 28 / 32, 8 / 32]]
    examples = [
        example(dark_spot(32, 8, 16), on_spot, name="hit.png"),
        example(dark_spot(32, 8, 16), elsewhere, name="miss.png"),
        example(dark_spot(32, 20, 0), elsewhere, name="hit2.png"),
    ]
    report = explain_examples(explainer, examples, tmp_path, boxes_feature="boxes")
    cam, grad = report["box_hit_rate"][OWN_CAM], report["box_hit_rate"]["dark_spot"]
    assert cam["n"] == grad["n"] == 3
    assert cam["hit_rate"] == pytest.approx(2 / 3) and cam["flat"] == 0
    assert grad["hit_rate"] == 0.0 and grad["flat"] == 3  # flat maps have no peak: misses
    assert cam["chance_rate"] == grad["chance_rate"] == pytest.approx(64 / 1024)
    assert [i["peak_in_box"][OWN_CAM] for i in report["images"]] == [True, False, True]
    assert report["cam_skipped"] is None and set(report["heatmaps"]) == {OWN_CAM, "dark_spot"}
    lines = summary_lines(report)
    assert lines[0] == "CAM (the model's own): box hit rate 0.667 (2/3), chance 0.062, n = 3"
    assert lines[1].startswith("Grad-CAM dark_spot: box hit rate 0.000 (0/3)")
    png = cv2.imread(str(tmp_path / "hit.png"))
    assert png.shape[1] > 2.5 * png.shape[0]  # input, CAM and Grad-CAM side by side


def test_a_classifier_has_its_cam_and_a_model_without_one_says_why():
    classifier = build_classifier("mobilenetv3", "small", weights=None, input_size=64, feature_dim=32)
    own, reason = own_cam_model(classifier)
    assert reason is None and own.names == (OWN_CAM,)
    assert [t.shape[1:] for t in own.model.outputs] == [(2, 2, 1), (1,)]
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 1)).astype(np.float32)
    cams, logits = own(x)
    np.testing.assert_allclose(np.asarray(cams).mean(axis=(1, 2)), np.asarray(logits), rtol=1e-5, atol=1e-6)
    plain = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)], name="plain")
    missing, reason = own_cam_model(plain)
    assert missing is None and "no class activation map" in reason


def test_a_fusion_of_classifiers_shows_each_members_own_cam_beside_its_grad_cam(tmp_path):
    keras.utils.set_random_seed(5)
    members = [
        build_classifier("convnext", "tiny", weights=None, input_size=64),
        build_classifier("efficientnetv2", "s", weights=None, input_size=64),
    ]
    fusion = build_fusion(members, input_size=64)
    explainer = Explainer(fusion, cam_model(fusion), PreprocessConfig(64, unsharp_kernel=3), "fusion.keras")
    names = tuple(m.backbone.name for m in members)
    assert explainer.own_cam_skipped is None
    assert explainer.heatmap_names == tuple(f"cam:{n}" for n in names) + names
    x = np.random.default_rng(2).uniform(0, 255, (3, 64, 64)).astype(np.float32)
    maps, logits = heatmaps_of(explainer, x)
    np.testing.assert_allclose(logits, np.asarray(fusion(x[..., None], training=False))[:, 0], rtol=1e-5, atol=1e-5)
    for member, name in zip(members, names, strict=True):
        expected, _ = class_activation_maps(own_cam_model(member)[0], x)  # the member classifier's own, alone
        np.testing.assert_allclose(maps[f"cam:{name}"], expected, atol=1e-4)
    assert title(f"cam:{names[0]}") == f"CAM {names[0]}"
    boxes = [[0.0, 0.0, 0.5, 0.5]]
    report = explain_examples(explainer, [example(x[0].astype(np.uint8), boxes)], tmp_path, boxes_feature="boxes")
    assert set(report["box_hit_rate"]) == set(explainer.heatmap_names)
    assert "fusion member's own" in report["heatmaps"][f"cam:{names[0]}"]
