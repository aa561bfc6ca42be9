"""Evaluation of real (tiny) run folders end to end: predict, report folder, CLI, comparison.

Two untrained MobileNetV3-small runs (with and without CBAM) at 64 px on synthetic_xray/tiny, saved as
a training run leaves them (RUN/config.json + RUN/model.keras). Their scores are arbitrary, which is
all these tests need: every expected number is recomputed from the model's own predictions.
"""

import json

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tf_fracture import metrics
from tf_fracture.configs import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.data.sources import load_split
from tf_fracture.data.synthetic import generate_radiograph
from tf_fracture.evaluate import REPORT_FILES, model_preprocessing, predict, sigmoid
from tf_fracture.evaluate.__main__ import main
from tf_fracture.models import CAM_LAYER, build_classifier, load_model

PREPROCESS = PreprocessConfig(64, unsharp_kernel=5)


def _spread_logits(model, data, seed):
    """Rescales the CAM head so that the untrained model's probabilities spread over (0, 1).

    At initialisation MobileNetV3's features are tiny (about 1e-12) though they differ from image to
    image: every probability would be 0.5 and every metric degenerate. The logit is the spatial mean
    of the CAM, a Dense on the per-position features, so it is the kernel applied to their mean.
    """
    examples = list(load_split(data, "train").as_numpy_iterator())
    images = np.stack([preprocess(e["image"][..., 0], PREPROCESS)[..., None] for e in examples]).astype(np.float32)
    per_position = keras.Model(model.input, model.get_layer(CAM_LAYER).input)
    features = np.asarray(per_position(images), dtype=np.float64).mean(axis=(1, 2))
    direction = np.random.default_rng(seed).normal(size=features.shape[1])
    projected = features @ direction
    scale = 2.0 / projected.std()
    kernel = (direction * scale)[:, None].astype(np.float32)
    model.get_layer(CAM_LAYER).set_weights([kernel, np.array([-projected.mean() * scale], np.float32)])


def _make_run(path, data, attention, seed):
    model = build_classifier(
        "mobilenetv3", "small", weights=None, input_size=64, attention=attention, preprocessing=PREPROCESS
    )
    _spread_logits(model, data, seed)
    path.mkdir(parents=True)
    model.save(path / "model.keras")
    config = ExperimentConfig(
        name=path.name,
        data=data,
        model=ModelConfig(backbone="mobilenetv3", variant="small", attention=attention),
        train=TrainConfig(target_sensitivity=0.8),
    )
    config.to_json(path / "config.json")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = DataConfig(
        dataset="synthetic_xray",
        builder_config="tiny",
        data_dir=str(tmp_path_factory.mktemp("tfds")),
        image_size=64,
        batch_size=4,
    )
    return data, _make_run(root / "cbam", data, True, 0), _make_run(root / "no_cbam", data, False, 1)


def load_split_names(data):
    from tf_fracture.data.sources import tfds_builder

    return tfds_builder(data).info.features["label"].names


def _scores(run, data, split):
    model = load_model(run / "model.keras", compile=False)
    examples = load_split(data, split)
    # The run's batch size (config.json), so that the scores are bit for bit those of the CLI.
    return predict(model, examples, None, batch_size=data.batch_size), np.array([int(e["label"]) for e in examples])


def test_predict_is_the_sigmoid_of_the_logit_on_the_models_preprocessing(runs):
    data, run, _ = runs
    model = load_model(run / "model.keras", compile=False)
    assert model_preprocessing(model) == PREPROCESS
    examples = list(load_split(data, "test").as_numpy_iterator())
    images = np.stack([preprocess(e["image"][..., 0], PREPROCESS)[..., None] for e in examples]).astype(np.float32)
    expected = sigmoid(np.asarray(model(images, training=False))[:, 0])
    scores = predict(model, load_split(data, "test"), batch_size=3)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-7)
    assert scores.dtype == np.float64 and scores.shape == (len(examples),)
    assert scores.std() > 0.05  # spread: the comparisons here and below are not between constants
    # Another preprocessing gives other scores, so the comparison above can tell them apart...
    other = PreprocessConfig(64, unsharp_kernel=7)
    sharper = np.stack([preprocess(e["image"][..., 0], other)[..., None] for e in examples]).astype(np.float32)
    assert np.abs(sigmoid(np.asarray(model(sharper))[:, 0]) - expected).max() > 1e-4
    # ...and asking for it is refused: the model's own preprocessing, never a guess.
    with pytest.raises(ValueError, match="differs from the preprocessing the model was trained with"):
        predict(model, load_split(data, "test"), other)


def test_a_model_without_preprocessing_is_refused(runs):
    data = runs[0]
    model = build_classifier("mobilenetv3", "small", weights=None, input_size=64)
    with pytest.raises(ValueError, match="carries no preprocessing"):
        predict(model, load_split(data, "test"))


def test_cli_writes_the_report_of_one_run(runs, capsys):
    data, run, _ = runs
    assert main([str(run), "--resamples", "200"]) == 0
    out = run / "evaluation" / "synthetic_xray-test"
    printed = capsys.readouterr().out
    assert str(out / "report.md") in printed and "AUROC" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)

    # Recompute independently: thresholds on the validation split's scores, metrics on the test split's.
    val_scores, val_labels = _scores(run, data, "validation")
    test_scores, test_labels = _scores(run, data, "test")
    thresholds = metrics.choose_thresholds(val_labels, val_scores, target_sensitivity=0.8)  # from config.json
    expected = metrics.evaluate(test_labels, test_scores, thresholds, n_resamples=200, seed=0).to_dict()
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("ranking", "at_thresholds", "thresholds", "curves", "calibration", "n", "n_positive", "bootstrap"):
        assert saved[key] == expected[key], key  # the same scores (same batches): the same numbers, exactly
    assert saved["thresholds"]["sensitivity_target"] == 0.8
    assert saved["ranking"]["auroc"]["value"] == pytest.approx(roc_auc_score(test_labels, test_scores), abs=1e-6)
    assert saved["ranking"]["auroc"]["ci_low"] is not None
    assert saved["split"] == "test" and saved["validation_split"] == "validation"
    assert saved["dataset"] == {"name": "synthetic_xray", "builder_config": "tiny"}
    assert saved["counts"]["test"]["images"] == 8 and saved["counts"]["validation"]["images"] == 8
    assert saved["run"]["name"] == "cbam" and saved["run"]["model"]["attention"] is True
    assert saved["class_names"] == list(load_split_names(data))

    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "filename,label,probability"
    filenames = [e["filename"].decode() for e in load_split(data, "test", decode_images=False).as_numpy_iterator()]
    assert [r.split(",")[0] for r in rows[1:]] == filenames
    np.testing.assert_allclose([float(r.split(",")[2]) for r in rows[1:]], test_scores, atol=1e-6)
    report = (out / "report.md").read_text()
    assert "# Evaluation of `cbam` on synthetic_xray `test`" in report and "CBAM on" in report
    assert "## Shortcut tests" in report and "### Counterfactual pairs" in report


def test_cli_runs_the_shortcut_tests_the_data_allow(runs):
    data, run, _ = runs
    out = run / "evaluation" / "shortcuts"
    assert main([str(run), "--resamples", "50", "--out", str(out)]) == 0
    shortcuts = json.loads((out / "metrics.json").read_text())["shortcut_tests"]
    # synthetic_xray has no strata and no metadata flags: skipped, with the reason.
    assert "no body parts or hardware" in shortcuts["strata"]["skipped"]
    assert "synthetic_xray has no metadata flags" in shortcuts["metadata_baseline"]["skipped"]

    model = load_model(run / "model.keras", compile=False)
    examples = list(load_split(data, "test").as_numpy_iterator())
    boxed = [e for e in examples if e["label"] == 1 and len(e["fracture_boxes"])]
    inputs = np.stack([preprocess(e["image"][..., 0], PREPROCESS) for e in boxed]).astype(np.float32)
    occlusion = shortcuts["occlusion"]
    assert occlusion["n"] == len(boxed) > 0 and occlusion["skipped"] is None
    original = np.asarray(model(inputs[..., None]))[:, 0]
    assert occlusion["box_removed"]["logit"]["mean_reference"] == pytest.approx(original.mean(), rel=1e-4, abs=1e-5)
    maps = shortcuts["localisation"]["maps"]
    assert list(maps) == ["cam", model.backbone.name] and maps["cam"]["n"] == len(boxed)

    # The counterfactual pairs recomputed here: every test scene rendered with and without its fracture.
    indices = [int(e["patient_id"].decode().rsplit("p", 1)[1]) for e in examples]
    pairs = [
        [preprocess(generate_radiograph(i, size=64, seed=0, fracture=f).image, PREPROCESS) for i in indices]
        for f in (False, True)
    ]
    clean, fractured = (np.asarray(model(np.stack(p)[..., None].astype(np.float32)))[:, 0] for p in pairs)
    counterfactual = shortcuts["counterfactual"]
    assert counterfactual["n_pairs"] == len(examples) == 8
    assert counterfactual["rendering"]["indices"] == indices
    share = np.mean((fractured > clean) + 0.5 * (fractured == clean))
    assert counterfactual["share_fractured_higher"]["value"] == pytest.approx(share)
    assert counterfactual["logit"]["mean_change"]["value"] == pytest.approx(np.mean(fractured - clean), abs=1e-4)


def test_cli_refuses_thresholds_from_the_scored_split(runs, capsys):
    _, run, _ = runs
    assert main([str(run), "--validation-split", "test", "--resamples", "0", "--out", str(run / "same")]) == 2
    assert "thresholds would be chosen on split 'test'" in capsys.readouterr().err


def test_cli_compares_the_ablation_side_by_side(runs, tmp_path, capsys):
    _, with_cbam, without = runs
    out = tmp_path / "ablation"
    argv = [str(with_cbam), str(without), "--out", str(out), "--resamples", "100", "--no-shortcut-tests"]
    assert main(argv) == 0
    assert str(out / "comparison.md") in capsys.readouterr().out
    for name in ("cbam", "no_cbam"):
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(REPORT_FILES)
    rows = json.loads((out / "comparison.json").read_text())["runs"]
    assert [(r["run"], r["attention"]) for r in rows] == [("cbam", True), ("no_cbam", False)]
    for row in rows:
        run_metrics = json.loads((out / row["run"] / "metrics.json").read_text())
        assert row["metrics"]["AUROC"] == run_metrics["ranking"]["auroc"]
    table = (out / "comparison.md").read_text()
    data = "| synthetic_xray `test` |"
    assert (
        f"| `cbam` {data} mobilenetv3 small | on |" in table
        and f"| `no_cbam` {data} mobilenetv3 small | off |" in table
    )
    assert "All runs scored on the same images (synthetic_xray `test`, n = 8)" in table
    assert json.loads((out / "cbam" / "metrics.json").read_text())["shortcut_tests"] is None
    # Both runs scored the same test images in the same order: their AUROC difference with a paired CI.
    (pair,) = json.loads((out / "comparison.json").read_text())["paired_auroc_differences"]
    (scores_a, labels), (scores_b, _) = _scores(with_cbam, runs[0], "test"), _scores(without, runs[0], "test")
    expected = metrics.paired_auroc_difference(labels, scores_a, scores_b, n_resamples=100, seed=0)
    assert pair["comparable"] and (pair["a"], pair["b"]) == ("cbam", "no_cbam")
    assert pair["difference"] == expected.difference.to_dict()
    diff = expected.difference
    assert "| `cbam` | `no_cbam` |" in table and f"{diff.value:.3f} [{diff.ci_low:.3f}, {diff.ci_high:.3f}] |" in table
