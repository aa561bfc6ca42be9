"""benchmarks/fracatlas_baselines.py: features without the label, HOG against a loop transcription,
table numbers equal to tf_fracture.metrics (and scikit-learn), and the whole run on tiny splits."""

import csv
import importlib.util
import os
import pathlib
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tf_fracture import metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
DUMMY = ROOT / "datasets" / "fracatlas" / "dummy_data"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("fracatlas_baselines", ROOT / "benchmarks" / "fracatlas_baselines.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


fb = _load_benchmark()


def _example(i, label, *, regions=(0,), views=(0,), mixed=False, hardware=False, multiscan=False, size=32):
    return {
        "image": np.full((size, size, 1), 40 + i % 200, np.uint8),
        "label": label,
        "patient_id": b"",
        "filename": f"images/x/IMG{i:07d}.jpg".encode(),
        "regions": np.array(regions, np.int64),
        "views": np.array(views, np.int64),
        "mixed": mixed,
        "hardware": hardware,
        "multiscan": multiscan,
        "fracture_count": np.int32(label * (1 + i % 3)),
        "fracture_boxes": np.full((label, 4), 0.25, np.float32),
    }


def test_metadata_features_ignore_the_label_carrying_features():
    assert not set(fb.LEAKY_FEATURES) & {name.split("_")[0] for name in fb.METADATA_FEATURE_NAMES}
    assert "fracture_count" not in fb.METADATA_FEATURE_NAMES
    examples = [_example(i, i % 2, regions=(i % 4,), views=(0, 1), hardware=i % 3 == 0) for i in range(8)]
    base = fb.metadata_features(fb.split_from_examples(examples, None))
    for example in examples:  # change only what gives the label away: the features must not move
        example["fracture_count"] = np.int32(7)
        example["fracture_boxes"] = np.full((3, 4), 0.5, np.float32)
    assert np.array_equal(fb.metadata_features(fb.split_from_examples(examples, None)), base)
    assert base.shape == (8, len(fb.METADATA_FEATURE_NAMES)) == (8, 10)


def test_metadata_features_match_dataset_csv_on_the_dummy_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    import tf_fracture.datasets  # noqa: F401 - registers the builders

    ds = tfds.load(
        "fracatlas",
        split="train",
        data_dir=str(tmp_path),
        download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=str(DUMMY))},
    )
    split = fb.split_from_examples(tfds.as_numpy(ds), None)
    features = fb.metadata_features(split)
    with open(DUMMY / "FracAtlas" / "dataset.csv") as f:
        rows = {row["image_id"]: row for row in csv.DictReader(f)}
    columns = [*fb.REGIONS, *fb.VIEWS, *fb.FLAGS]
    assert len(split.labels) > 0
    for filename, label, vector in zip(split.filenames, split.labels, features, strict=True):
        row = rows[os.path.basename(filename)]
        assert vector.tolist() == [float(row[c]) for c in columns], filename
        assert label == int(row["fractured"])


@pytest.mark.parametrize(("size", "cell"), [(128, 8), (64, 8), (48, 16), (70, 8)])
def test_hog_length_follows_the_descriptor_formula(size, cell):
    config = fb.HogConfig(cell=cell)
    images = np.random.default_rng(0).integers(0, 256, (2, size, size), dtype=np.uint8)
    # OpenCV's formula: ((win - block) / stride + 1)^2 blocks of (block / cell)^2 cells of `bins` bins.
    win = (size // cell) * cell
    expected = ((win - 2 * cell) // cell + 1) ** 2 * 4 * 9
    assert fb.hog_features(images, config).shape == (2, expected) == (2, config.length(size))


def _hog_reference(image, cell=8, bins=9, clip=0.2):
    """Pixel-by-pixel transcription of the descriptor in the docstring, for one image."""
    image = image.astype(np.float64)
    size = image.shape[0]
    cells = size // cell
    hist = np.zeros((cells, cells, bins))
    for y in range(cells * cell):
        for x in range(cells * cell):
            dx = image[y, min(x + 1, size - 1)] - image[y, max(x - 1, 0)]
            dy = image[min(y + 1, size - 1), x] - image[max(y - 1, 0), x]
            if x in (0, size - 1):
                dx *= 2  # one-sided difference at the border, scaled like the centred one
            if y in (0, size - 1):
                dy *= 2
            angle = np.degrees(np.arctan2(dy, dx)) % 180.0
            pos = angle / (180.0 / bins) - 0.5
            low = int(np.floor(pos))
            w = pos - low
            hist[y // cell, x // cell, low % bins] += np.hypot(dx, dy) * (1 - w)
            hist[y // cell, x // cell, (low + 1) % bins] += np.hypot(dx, dy) * w
    out = []
    for by in range(cells - 1):
        for bx in range(cells - 1):
            v = hist[by : by + 2, bx : bx + 2].ravel()
            v = v / np.sqrt((v**2).sum() + 1e-12)
            v = np.minimum(v, clip)
            out.append(v / np.sqrt((v**2).sum() + 1e-12))
    return np.concatenate(out)


def test_hog_equals_a_loop_transcription():
    images = np.random.default_rng(1).integers(0, 256, (3, 24, 24), dtype=np.uint8)
    images[1] = np.linspace(0, 255, 24, dtype=np.uint8)[None, :]  # a pure horizontal ramp
    got = fb.hog_features(images, chunk=2)  # chunks of 2 and 1: chunking must not change a row
    for i, image in enumerate(images):
        np.testing.assert_allclose(got[i], _hog_reference(image), rtol=1e-5, atol=1e-6)


def test_hog_puts_a_horizontal_edge_in_the_90_degree_bin():
    image = np.zeros((1, 32, 32), np.uint8)
    image[:, 16:, :] = 200  # bright from row 16 down: gradients at rows 15 and 16 point down, 90 degrees
    blocks = fb.hog_features(image).reshape(3, 3, 4, 9)  # block row, block column, cell (row-major), bin
    assert np.all(np.delete(blocks, 4, axis=-1) == 0)  # 90 degrees is bin 4's centre: nothing elsewhere
    assert np.all(blocks[0, :, :2] == 0)  # block row 0, its top cells (rows 0..7): no edge
    assert np.all(blocks[0, :, 2:, 4] > 0) and np.all(blocks[1, :, :, 4] > 0)  # cells over rows 8..23


def _split(labels, regions, images=None):
    n = len(labels)
    return fb.SplitData(
        filenames=np.array([f"images/x/{i}.jpg" for i in range(n)], dtype=object),
        labels=np.asarray(labels, np.int64),
        regions=tuple((r,) for r in regions),
        views=tuple((0,) for _ in range(n)),
        flags=np.zeros((n, 3), bool),
        images=images,
    )


def test_table_numbers_equal_the_metrics_module(rng):
    val_y = rng.integers(0, 2, 120)
    val_p = np.clip(0.3 * val_y + rng.uniform(0, 0.7, 120), 0, 1)
    test_y = np.r_[rng.integers(0, 2, 150), np.zeros(10, int)]
    test_p = np.clip(0.25 * test_y + rng.uniform(0, 0.75, 160), 0, 1)
    regions = np.r_[rng.integers(0, 2, 150), np.full(10, 2)]  # hand, leg, and hip with intact images only
    val, test = _split(val_y, rng.integers(0, 2, 120)), _split(test_y, regions)
    row = fb.study_rows("model", val, val_p, test, test_p, n_resamples=200, seed=3)

    thresholds = metrics.choose_thresholds(val_y, val_p)
    expected = metrics.evaluate(test_y, test_p, thresholds, n_resamples=200, seed=3)
    assert row["auroc"] == expected.ranking["auroc"].to_dict()
    assert row["average_precision"] == expected.ranking["average_precision"].to_dict()
    assert row["auroc"]["value"] == pytest.approx(roc_auc_score(test_y, test_p), abs=1e-12)
    assert row["average_precision"]["value"] == pytest.approx(average_precision_score(test_y, test_p), abs=1e-12)
    predicted = test_p >= thresholds.youden
    assert row["youden_threshold"] == thresholds.youden
    assert row["sensitivity"]["value"] == pytest.approx(predicted[test_y == 1].mean())
    assert row["specificity"]["value"] == pytest.approx(1 - predicted[test_y == 0].mean())
    for index, name in enumerate(("hand", "leg")):
        mask = regions == index
        assert row["regions"][name]["auroc"]["value"] == pytest.approx(roc_auc_score(test_y[mask], test_p[mask]))
        assert row["regions"][name]["n"] == mask.sum()
    assert row["regions"]["hip"]["auroc"] is None and "both classes" in row["regions"]["hip"]["skipped"]

    table = fb.markdown_table([row])
    assert f"| model | {row['auroc']['value']:.3f} [{row['auroc']['ci_low']:.3f}, " in table
    assert f"{row['regions']['leg']['auroc']['value']:.3f}" in table.splitlines()[2]
    assert "- hip: skipped" in table and f"{int(test_y.sum())} fractured" in table


def test_read_scores_aligns_by_filename_and_names_what_is_missing(tmp_path):
    val, test = _split([0, 1], [0, 0]), _split([1, 0, 1], [0, 1, 1])
    path = tmp_path / "s.csv"
    rows = [("test", f, 0.1 * i) for i, f in enumerate(test.filenames)][::-1]
    rows += [("validation", f, 0.5) for f in val.filenames]
    path.write_text("split,filename,score\n" + "".join(f"{s},{f},{p}\n" for s, f, p in rows))
    scores = fb.read_scores(str(path), {"validation": val, "test": test})
    np.testing.assert_allclose(scores["test"], [0.0, 0.1, 0.2])
    path.write_text("split,filename,score\n" + "".join(f"{s},{f},{p}\n" for s, f, p in rows[1:]))
    with pytest.raises(ValueError, match=r"no score for 1 of the 3 test images"):
        fb.read_scores(str(path), {"validation": val, "test": test})


def test_read_scores_takes_an_evaluated_run_folder(tmp_path):
    val, test = _split([0, 1], [0, 0]), _split([1, 0, 1], [0, 1, 1])
    for split, data in (("validation", val), ("test", test)):
        folder = tmp_path / "run" / "evaluation" / f"fracatlas-{split}"
        folder.mkdir(parents=True)
        rows = [f"{f},{y},{0.25 * i}\n" for i, (f, y) in enumerate(zip(data.filenames, data.labels, strict=True))][::-1]
        (folder / "predictions.csv").write_text("filename,label,probability\n" + "".join(rows))
    scores = fb.read_scores(str(tmp_path / "run"), {"validation": val, "test": test})
    np.testing.assert_allclose(scores["test"], [0.0, 0.25, 0.5])
    np.testing.assert_allclose(scores["validation"], [0.0, 0.25])
    (tmp_path / "run" / "evaluation" / "fracatlas-validation" / "predictions.csv").unlink()
    with pytest.raises(ValueError, match=r"--split validation --allow-same-split"):
        fb.read_scores(str(tmp_path / "run"), {"validation": val, "test": test})


def test_run_on_tiny_splits_finds_a_planted_metadata_shortcut(rng):
    splits = {}
    for name, n in (("train", 80), ("validation", 40), ("test", 40)):
        labels = np.tile([0, 1], n // 2)
        split = _split(labels, rng.integers(0, 2, n), rng.integers(0, 256, (n, 32, 32), dtype=np.uint8))
        flags = np.zeros((n, 3), bool)
        flags[:, 1] = labels == 1  # hardware on every fractured image: a perfect shortcut
        splits[name] = fb.SplitData(split.filenames, split.labels, split.regions, split.views, flags, split.images)
    rows = fb.run(splits, components=8, n_resamples=50)
    assert rows[0]["name"] == "Logistic regression, metadata flags" and len(rows) == 3
    assert rows[0]["auroc"]["value"] == 1.0
    assert rows[0]["selection"]["coefficients"]["hardware"] > 0
    assert 0.2 < rows[1]["auroc"]["value"] < 0.8  # noise images: HOG alone has nothing to find
    assert rows[2]["auroc"]["value"] > 0.9  # the combined model picks the flag up


def test_paired_against_is_the_paired_difference_within_each_region(rng):
    labels = np.r_[rng.integers(0, 2, 150), np.zeros(10, int)]
    regions = np.r_[rng.integers(0, 2, 150), np.full(10, 2)]  # hand, leg, and hip with intact images only
    test = _split(labels, regions)
    model = np.clip(0.3 * labels + rng.uniform(0, 0.7, 160), 0, 1)
    reference = np.clip(0.1 * labels + rng.uniform(0, 0.9, 160), 0, 1)
    paired = fb.paired_against(test, model, reference, n_resamples=200, seed=3)

    assert list(paired) == ["all", "hand", "hip", "leg"] and paired["hip"] is None
    for name, mask in (("all", np.ones(160, bool)), ("hand", regions == 0), ("leg", regions == 1)):
        expected = roc_auc_score(labels[mask], model[mask]) - roc_auc_score(labels[mask], reference[mask])
        assert paired[name]["difference"]["value"] == pytest.approx(expected, abs=1e-12)
        same = metrics.paired_auroc_difference(labels[mask], model[mask], reference[mask], n_resamples=200, seed=3)
        assert paired[name] == same.to_dict()
    assert paired["hand"]["n"] == (regions == 0).sum()


def test_paired_table_leaves_out_regions_with_few_images_of_a_class(rng):
    labels = np.r_[rng.integers(0, 2, 150), [1, 0, 0, 0, 0, 0]]
    regions = np.r_[rng.integers(0, 2, 150), np.full(6, 3)]  # hand, leg, and a shoulder with 1 fracture
    val, test = _split(labels[:100], regions[:100]), _split(labels, regions)
    model, reference = rng.uniform(0, 1, 156), rng.uniform(0, 1, 156)
    row = fb.study_rows("model", val, model[:100], test, model, n_resamples=20)
    row["paired_against"] = {"reference": "HOG", "auroc_difference": fb.paired_against(test, model, reference)}
    assert row["paired_against"]["auroc_difference"]["shoulder"]["n_positive"] == 1
    table = fb.markdown_table([row]).splitlines()
    assert "| Model | all images | hand | leg |" in table  # no shoulder column
    assert "- shoulder: 1 fractured and 5 intact test images: its AUROC is too noisy to read." in table


def test_run_compares_given_scores_with_hog_image_by_image(rng):
    splits = {}
    for name, n in (("train", 80), ("validation", 40), ("test", 40)):
        labels = np.tile([0, 1], n // 2)
        splits[name] = _split(labels, rng.integers(0, 2, n), rng.integers(0, 256, (n, 32, 32), dtype=np.uint8))
    perfect = {k: 0.5 * splits[k].labels + rng.uniform(0, 0.4, 40) for k in ("validation", "test")}
    rows = fb.run(splits, components=8, n_resamples=50, scores={"oracle": perfect})
    hog, oracle = rows[1], rows[3]
    assert hog["name"] == "HOG + RBF SVM (32 px)" and "paired_against" not in hog
    paired = oracle["paired_against"]
    assert paired["reference"] == hog["name"]
    difference = paired["auroc_difference"]["all"]["difference"]["value"]
    assert difference == pytest.approx(1.0 - hog["auroc"]["value"], abs=1e-12)  # the oracle ranks perfectly
    table = fb.markdown_table(rows)
    assert "Paired against HOG + RBF SVM (32 px)" in table
    assert f"| oracle | {difference:.3f} [" in table


@pytest.mark.large
def test_real_fracatlas(tmp_path_factory):
    manual = os.environ.get("TF_FRACTURE_FRACATLAS")
    if not manual:
        pytest.skip("set TF_FRACTURE_FRACATLAS to the extracted FracAtlas/ folder")
    data_dir = os.environ.get("TF_FRACTURE_TFDS_DIR") or str(tmp_path_factory.mktemp("tfds"))
    splits = fb.load_splits(data_dir, manual, 64)
    rows = fb.run(splits, n_resamples=100)
    assert {len(s.labels) for s in splits.values()} == {3147, 394}
    assert rows[0]["auroc"]["value"] > 0.6  # FracAtlas' metadata shortcut
