"""export/heatmap.py: a class activation map drawn as the predictor draws it, checked against hand-computed values."""

import cv2
import numpy as np
import pytest

from tf_fracture_export.heatmap import ALPHA, cam_heat, heatmap_names, overlay, write_heatmap


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_cam_heat_upsamples_the_logits_with_half_pixel_centres_then_applies_the_sigmoid():
    # 2x2 -> 4x4: output pixel centres (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 in input cells, the
    # outer ones clamped to the edge: each row [a, (3a + b) / 4, (a + 3b) / 4, b], and likewise down.
    cam = np.array([[0.0, 2.0], [4.0, 6.0]])
    logits = np.array([[0.0, 0.5, 1.5, 2.0], [1.0, 1.5, 2.5, 3.0], [3.0, 3.5, 4.5, 5.0], [4.0, 4.5, 5.5, 6.0]])
    heat = cam_heat(cam, 4)
    assert heat.shape == (4, 4) and heat.dtype == np.float32
    np.testing.assert_allclose(heat, sigmoid(logits), atol=1e-6)
    np.testing.assert_allclose(cam_heat(cam[..., None], 4), heat)  # (h, w, 1) as the model gives it
    # On the probability's fixed scale: a map at logit 0 is 0.5 everywhere, whatever the size; a very
    # negative one is cold (not stretched to a hot spot as a per-image normalisation would).
    np.testing.assert_allclose(cam_heat(np.zeros((3, 3)), 8), 0.5)
    assert cam_heat(np.full((3, 3), -30.0) + np.eye(3), 8).max() < 1e-12 + sigmoid(-29)


def test_cam_heat_keeps_the_maps_orientation():
    cam = np.full((3, 3), -4.0)
    cam[0, 2] = 4.0  # top right
    heat = cam_heat(cam, 30)  # 10 px a cell: the top-right cell's centre is pixel (4.5, 24.5)
    assert heat.max() == pytest.approx(sigmoid(4.0), abs=1e-6)
    np.testing.assert_allclose(heat[:5, 25:], sigmoid(4.0), atol=1e-6)  # inside its centre: the cell's value
    for corner in (heat[0, 0], heat[29, 0], heat[29, 29]):
        assert corner == pytest.approx(sigmoid(-4.0), abs=1e-6)
    with pytest.raises(ValueError, match=r"one class activation map \(h, w\)"):
        cam_heat(np.zeros((2, 3, 3)), 8)


def test_overlay_blends_the_jet_colour_with_an_opacity_that_grows_with_the_heat():
    image = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    grey = np.repeat(image[..., None].astype(float), 3, axis=-1)
    # Cold: the radiograph as it is, in BGR.
    np.testing.assert_array_equal(overlay(image, np.zeros((5, 5))), grey.astype(np.uint8))
    # Hot: JET's top colour, dark red (BGR 0, 0, 128), at opacity ALPHA.
    hot = overlay(image[..., None], np.ones((5, 5)))
    np.testing.assert_allclose(hot, np.rint((1 - ALPHA) * grey + ALPHA * np.array([0, 0, 128])), atol=0)
    # Half: JET's middle colour (BGR 126, 255, 130) at half the opacity.
    half = overlay(image, np.full((5, 5), 0.5))
    np.testing.assert_allclose(half, np.rint((1 - ALPHA / 2) * grey + ALPHA / 2 * np.array([126, 255, 130])), atol=1)
    assert hot.dtype == np.uint8 and hot.shape == (5, 5, 3)
    with pytest.raises(ValueError, match="one shape"):
        overlay(image, np.zeros((4, 4)))


def test_heatmap_names_follow_the_inputs_and_never_collide_or_overwrite_an_input(tmp_path):
    out = tmp_path / "maps"
    out.mkdir()
    (out / "x_heatmap.png").write_bytes(b"an input that happens to be there")
    paths = ["a/x.png", "b/x.png", "x.dcm", "odd name#1.jpg", str(out / "x_heatmap.png"), "c/y.jpeg"]
    names = heatmap_names([*paths, "a/x.png"], out)  # the same file twice: two files still
    assert [name.name for name in names] == [
        "x_2_heatmap.png",  # x_heatmap.png is one of the inputs: never written over
        "x_3_heatmap.png",
        "x_4_heatmap.png",
        "odd_name_1_heatmap.png",
        "x_heatmap_heatmap.png",
        "y_heatmap.png",
        "x_5_heatmap.png",
    ]
    assert {name.parent for name in names} == {out}


def test_write_heatmap_writes_the_overlay_as_a_png(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    cam = rng.normal(0, 3, (2, 2))
    path = write_heatmap(tmp_path / "deep" / "a_heatmap.png", image[..., None], cam)
    assert path == tmp_path / "deep" / "a_heatmap.png"
    np.testing.assert_array_equal(cv2.imread(str(path)), overlay(image, cam_heat(cam, 16)))  # PNG: lossless
    with pytest.raises(ValueError, match="square input"):
        write_heatmap(tmp_path / "b.png", np.zeros((16, 12), np.uint8), cam)
