"""Overlays, the explanation of files and of a dataset's positives, and `python -m tf_fracture.explain`."""

import json

import cv2
import keras
import numpy as np
import pytest
from test_explain_gradcam import blob, blob_model

from tf_fracture.data.preprocess import PreprocessConfig
from tf_fracture.explain import cam_model, overlay_figure, save_overlay
from tf_fracture.explain.__main__ import main
from tf_fracture.explain.report import Explainer, explain_examples, load_for_explanation
from tf_fracture.models import build_classifier

PREPROCESSING = PreprocessConfig(64, unsharp_kernel=3)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    keras.utils.set_random_seed(21)
    model = build_classifier(
        "mobilenetv3", "small", weights=None, input_size=64, feature_dim=32, preprocessing=PREPROCESSING
    )
    run = tmp_path_factory.mktemp("run")
    model.save(run / "model.keras")
    return run


def test_overlay_has_the_input_then_one_panel_per_map_with_titles_and_boxes(tmp_path):
    image = np.tile(np.linspace(0, 255, 40, dtype=np.float32), (40, 1))
    maps = {"alpha": np.random.default_rng(0).uniform(size=(40, 40)), "beta": np.zeros((40, 40))}
    figure = overlay_figure(image, maps, boxes=[[0.1, 0.2, 0.5, 0.6]], title="x.png  P(fracture) = 0.500")
    panels = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["input", "alpha", "beta"]
    assert all(len(ax.patches) == 1 for ax in panels)  # the box on every panel
    (x, y), width, height = (
        panels[1].patches[0].get_xy(),
        panels[1].patches[0].get_width(),
        panels[1].patches[0].get_height(),
    )
    np.testing.assert_allclose([x, y, width, height], [8, 4, 16, 16])  # normalised (0.1, 0.2, 0.5, 0.6) on 40 px
    assert len(panels[1].lines) == 1 and len(panels[2].lines) == 0  # a peak marker, none on a flat map
    assert figure._suptitle.get_text() == "x.png  P(fracture) = 0.500"
    png = cv2.imread(save_overlay(tmp_path / "sub" / "o.png", image[..., None], maps), cv2.IMREAD_COLOR)
    assert png.shape[1] > 2.5 * png.shape[0]  # three panels side by side
    with pytest.raises(ValueError, match="Heatmap 'alpha' has shape"):
        overlay_figure(image, {"alpha": np.zeros((20, 20))})


def test_peak_marker_leaves_a_small_peak_visible():
    image = np.zeros((64, 64), np.float32)
    heat = np.zeros((64, 64))
    heat[30:34, 40:44] = 1.0  # a hot spot smaller than the marker
    figure = overlay_figure(image, {"cam": heat})
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    panel = next(ax for ax in figure.axes if ax.get_title() == "cam")
    x, y = panel.transData.transform((42.0, 32.0))  # the spot's centre, at the peak
    red, green, blue = rgba[round(rgba.shape[0] - y), round(x), :3].astype(int)
    assert red > green + 30 and green < 60 and blue < 60, (red, green, blue)  # the map's hot colour, not the marker
    (ring,) = panel.lines
    assert (ring.get_xdata()[0], ring.get_ydata()[0]) == (41.5, 31.5)  # around the peak pixel (31, 41)'s centre


def test_cli_explains_each_readable_file_and_lists_the_bad_ones(run_dir, tmp_path, capsys, caplog):
    r = np.random.default_rng(1)
    good = []
    for name, size in (("a", (80, 60)), ("b", (50, 70))):
        cv2.imwrite(str(tmp_path / f"{name}.png"), r.integers(0, 256, size, dtype=np.uint8))
        good.append(str(tmp_path / f"{name}.png"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    args = [str(run_dir), good[0], str(tmp_path / "broken.png"), str(tmp_path / "missing.png"), good[1]]
    assert main([*args, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    printed = capsys.readouterr().out
    assert "P(fracture) = " in printed and "2 overlay(s)" in printed and "2 skipped" in printed
    assert "broken.png" in caplog.text and "missing.png" in caplog.text
    png = cv2.imread(str(out / "a.png"))
    assert png is not None and png.shape[1] > png.shape[0]
    # The default output folder is the run's explain/.
    assert main([str(run_dir / "model.keras"), good[0]]) == 0
    assert (run_dir / "explain" / "a.png").is_file()


def test_a_model_without_preprocessing_is_refused(tmp_path):
    model = build_classifier("mobilenetv3", "small", weights=None, input_size=64, feature_dim=32)
    model.save(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="records no preprocessing"):
        load_for_explanation(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_for_explanation(tmp_path / "nowhere")


def test_cli_refuses_files_and_dataset_together(run_dir):
    with pytest.raises(SystemExit):
        main([str(run_dir), "a.png", "--dataset", "fracatlas"])
    with pytest.raises(SystemExit):
        main([str(run_dir)])


def example(image, boxes, label=1, name="x"):
    return {"image": image.astype(np.uint8)[..., None], "label": label, "filename": name.encode(), "boxes": boxes}


def test_explain_examples_gives_the_exact_hit_rate_of_known_peaks(tmp_path):
    model = blob_model()
    explainer = Explainer(model, cam_model(model), PreprocessConfig(32, unsharp_kernel=3), "blob.keras")
    on_blob = [[2 / 32, 3 / 32, 8 / 32, 9 / 32]]  # the blob at rows 2..8, cols 3..9
    elsewhere = [[0.5, 0.5, 1.0, 1.0]]
    examples = [
        example(blob(32, 2, 3), on_blob, name="dir/hit.png"),
        example(blob(32, 2, 3), elsewhere, name="miss.png"),
        example(blob(32, 20, 20), on_blob, label=0, name="negative.png"),
        example(blob(32, 20, 20), np.zeros((0, 4)), name="nobox.png"),
        example(blob(32, 2, 3), on_blob, name="beyond_limit.png"),
    ]
    report = explain_examples(explainer, examples, tmp_path, limit=3, boxes_feature="boxes")
    rate = report["box_hit_rate"]["blob"]
    assert report["positives"] == 3 and rate["n"] == 2 and rate["without_boxes"] == 1
    assert rate["hit_rate"] == 0.5
    assert rate["chance_rate"] == pytest.approx((36 / 1024 + 256 / 1024) / 2)
    assert [i["peak_in_box"] for i in report["images"]] == [{"blob": True}, {"blob": False}, None]
    hit, miss, nobox = (i["peak_distance_px"] for i in report["images"])
    assert hit == {"blob": 0.0} and nobox is None
    assert miss["blob"] > 8  # the blob's peak (rows 2..8, columns 3..9) is far from the box at 16..32 px
    assert rate["median_peak_distance_px"] == pytest.approx(miss["blob"] / 2)
    assert json.loads((tmp_path / "box_hit_rate.json").read_text()) == report
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["hit.png", "miss.png", "nobox.png"]


def test_cli_on_a_dataset_split_writes_the_hit_rate(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [str(run_dir), "--dataset", "synthetic_xray", "--builder-config", "tiny", "--split", "test"]
    assert main([*argv, "--limit", "3", "--data-dir", str(tmp_path / "tfds"), "--out", str(out)]) == 0
    report = json.loads((out / "box_hit_rate.json").read_text())
    assert report["dataset"] == "synthetic_xray" and report["split"] == "test"
    (cam, own), (name, rate) = report["box_hit_rate"].items()  # the classifier's own CAM, then Grad-CAM
    assert cam == "cam" and name == "mobilenetv3_small_cbam_grey" and report["cam_skipped"] is None
    assert report["positives"] == len(report["images"]) == len(list(out.glob("*.png")))
    assert 1 <= report["positives"] <= 3 and rate["n"] == sum(len(i["boxes"]) > 0 for i in report["images"])
    assert 0 < rate["chance_rate"] < 1 and own["chance_rate"] == rate["chance_rate"] and own["n"] == rate["n"]
    printed = capsys.readouterr().out
    assert f"Grad-CAM {name}: box hit rate" in printed and "CAM (the model's own): box hit rate" in printed


def test_boxes_are_moved_with_the_padding_of_the_preprocessing(tmp_path):
    model = blob_model()
    explainer = Explainer(model, cam_model(model), PreprocessConfig(32, unsharp_kernel=3, resize_mode="pad"), "b")
    wide = np.full((16, 32), 20.0)
    wide[10:16, 2:8] = 240.0  # padded to 32x32: 8 rows above, so rows 18..24
    report = explain_examples(
        explainer, [example(wide, [[10 / 16, 2 / 32, 1.0, 8 / 32]])], tmp_path, boxes_feature="boxes"
    )
    np.testing.assert_allclose(report["images"][0]["boxes"], [[18 / 32, 2 / 32, 24 / 32, 8 / 32]])
    assert report["images"][0]["peak_in_box"] == {"blob": True}
