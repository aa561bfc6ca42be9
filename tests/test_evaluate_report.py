"""Evaluation on NumPy predictions: thresholds from validation, MURA per study, report files, comparison.

No model here (tests/test_evaluate.py runs real tiny runs): predictions are drawn or written by hand,
so that every expected number is known independently of the code under test.
"""

import dataclasses
import json

import numpy as np
import pytest
from matplotlib import image as mpimg
from sklearn.metrics import roc_auc_score

from tf_fracture import metrics
from tf_fracture.evaluate import (
    REPORT_FILES,
    SplitPredictions,
    comparison_markdown,
    evaluate_predictions,
    markdown_report,
    write_comparison,
    write_report,
)
from tf_fracture.evaluate.__main__ import summary_table

RUN = {
    "name": "run_a",
    "path": "runs/run_a",
    "model": {"backbone": "mobilenetv3", "variant": "small", "attention": True},
}


def _split(labels, scores, split, **kwargs):
    return SplitPredictions(np.asarray(scores, float), np.asarray(labels), split=split, **kwargs)


def _drawn(rng, n, split, shift, centre=0.0):
    labels = (np.arange(n) % 3 == 0).astype(int)
    logits = rng.normal(size=n) + shift * (2 * labels - 1) + centre
    return _split(labels, 1 / (1 + np.exp(-logits)), split)


def test_thresholds_come_from_validation_not_from_the_scored_split(rng):
    # Validation scores sit higher than test scores: thresholds chosen on each differ clearly.
    validation = _drawn(rng, 90, "validation", 1.0, centre=2.0)
    test = _drawn(rng, 120, "test", 1.0, centre=-2.0)
    evaluation = evaluate_predictions(validation, test, target_sensitivity=0.8, n_resamples=0)
    from_val = metrics.choose_thresholds(validation.labels, validation.scores, target_sensitivity=0.8)
    from_test = metrics.choose_thresholds(test.labels, test.scores, target_sensitivity=0.8)
    assert abs(from_val.youden - from_test.youden) > 0.2  # the check below can tell them apart
    result = evaluation.levels["image"].result
    assert result.at_thresholds["youden"].threshold == from_val.youden
    assert result.at_thresholds["target_sensitivity"].threshold == from_val.target_sensitivity
    assert result.at_thresholds["fixed"].threshold == 0.5
    saved = evaluation.to_dict()
    assert saved["thresholds"]["youden"] == from_val.youden
    assert saved["at_thresholds"]["youden"]["threshold"] == from_val.youden
    assert saved["settings"]["thresholds_from"] == "validation"


def test_metrics_equal_the_metrics_package_and_scikit_learn(rng):
    validation, test = _drawn(rng, 80, "validation", 1.0), _drawn(rng, 100, "test", 0.7)
    evaluation = evaluate_predictions(validation, test, target_sensitivity=0.9, n_resamples=300, seed=3)
    thresholds = metrics.choose_thresholds(validation.labels, validation.scores, target_sensitivity=0.9)
    expected = metrics.evaluate(test.labels, test.scores, thresholds, n_resamples=300, seed=3).to_dict()
    saved = evaluation.to_dict()
    for key in ("ranking", "at_thresholds", "thresholds", "curves", "calibration", "n", "n_positive"):
        assert saved[key] == expected[key], key
    assert saved["ranking"]["auroc"]["value"] == pytest.approx(roc_auc_score(test.labels, test.scores), abs=1e-12)
    assert saved["counts"]["test"] == {"images": 100, "positive": 34, "negative": 66}


def test_scoring_the_validation_split_is_refused_unless_allowed(rng):
    validation = _drawn(rng, 60, "validation", 1.0)
    with pytest.raises(ValueError, match="thresholds would be chosen on split 'validation'"):
        evaluate_predictions(validation, validation, n_resamples=0)
    evaluation = evaluate_predictions(validation, validation, n_resamples=0, allow_same_split=True)
    assert evaluation.settings["allow_same_split"]
    assert "the SAME split" in markdown_report(evaluation)


def _mura_like():
    """Three studies per split by hand: images of a study share a label and a body part."""
    validation = _split(
        [1, 1, 0, 0, 0, 1, 0],
        [0.9, 0.5, 0.3, 0.1, 0.6, 0.7, 0.2],
        "validation",
        groups=np.array(["a/1", "a/1", "b/1", "b/1", "b/1", "c/1", "d/1"], dtype=object),
        body_parts=np.array(["XR_WRIST"] * 5 + ["XR_HAND"] * 2, dtype=object),
    )
    test = _split(
        [1, 1, 1, 0, 0, 1, 0, 0],
        [0.8, 0.4, 0.6, 0.35, 0.45, 0.2, 0.1, 0.3],
        "test",
        groups=np.array(["s/2", "s/2", "s/2", "t/1", "t/1", "u/3", "v/1", "v/1"], dtype=object),
        body_parts=np.array(["XR_WRIST"] * 5 + ["XR_HAND"] * 3, dtype=object),
    )
    return validation, test


def test_mura_is_scored_per_study_by_the_mean_of_its_images():
    validation, test = _mura_like()
    evaluation = evaluate_predictions(validation, test, n_resamples=0)
    study = evaluation.levels["study"]
    # Studies in sorted order s/2, t/1, u/3, v/1; by hand: means of their image probabilities.
    np.testing.assert_allclose(study.scores, [0.6, 0.4, 0.2, 0.2])
    np.testing.assert_array_equal(study.labels, [1, 0, 1, 0])
    # Study thresholds are chosen on the validation split's study means (a/1 0.7, b/1 1/3, c/1 0.7, d/1 0.2).
    val_thresholds = metrics.choose_thresholds([1, 0, 1, 0], [0.7, 1 / 3, 0.7, 0.2], target_sensitivity=0.9)
    assert study.thresholds.youden == pytest.approx(val_thresholds.youden)
    expected = metrics.evaluate([1, 0, 1, 0], [0.6, 0.4, 0.2, 0.2], val_thresholds, n_resamples=0)
    assert study.result.ranking["auroc"].value == pytest.approx(expected.ranking["auroc"].value)
    assert study.result.ranking["auroc"].value == pytest.approx(roc_auc_score([1, 0, 1, 0], [0.6, 0.4, 0.2, 0.2]))
    assert study.result.at_thresholds["youden"].confusion == expected.at_thresholds["youden"].confusion
    # Per body part at study level: the wrist has studies s/2 (1) and t/1 (0); the hand u/3 (1), v/1 (0).
    assert set(study.body_parts) == {"XR_HAND", "XR_WRIST"}
    assert study.body_parts["XR_WRIST"].n == 2 and study.body_parts["XR_WRIST"].result.ranking["auroc"].value == 1.0
    assert study.body_parts["XR_HAND"].result.ranking["auroc"].value == 0.5
    saved = evaluation.to_dict()
    assert saved["primary_level"] == "study"
    assert saved["per_study"]["n"] == 4
    assert saved["counts"]["test"]["studies"] == 4 and saved["counts"]["test"]["positive_studies"] == 2
    assert saved["counts"]["test"]["body_parts"] == {"XR_HAND": 3, "XR_WRIST": 5}
    assert saved["settings"]["bootstrap_unit"] == "study"
    # Per image too, with the image-level thresholds from validation images.
    image_thresholds = metrics.choose_thresholds(validation.labels, validation.scores, target_sensitivity=0.9)
    assert saved["thresholds"]["youden"] == image_thresholds.youden
    assert saved["ranking"]["auroc"]["value"] == pytest.approx(roc_auc_score(test.labels, test.scores))
    assert saved["per_body_part"]["XR_WRIST"]["n"] == 5


def test_image_intervals_resample_whole_studies(rng):
    validation, test = _mura_like()
    by_study = evaluate_predictions(validation, test, n_resamples=200, seed=1).levels["image"].result
    expected = metrics.evaluate(
        test.labels,
        test.scores,
        metrics.choose_thresholds(validation.labels, validation.scores, target_sensitivity=0.9),
        groups=test.groups,
        n_resamples=200,
        seed=1,
    )
    assert by_study.ranking["auroc"] == expected.ranking["auroc"]
    assert by_study.bootstrap["n_groups"] == 4


def _png_size(path):
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.std() > 0.05  # not blank
    return pixels.shape[1], pixels.shape[0]


def test_report_folder_holds_every_file_and_readable_figures(tmp_path, rng):
    validation, test = _mura_like()
    evaluation = evaluate_predictions(validation, test, n_resamples=50, run=RUN, dataset="mura")
    out = write_report(evaluation, tmp_path / "report")
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    for name in ("confusion_matrix.png", "roc.png", "pr.png", "calibration.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        width, height = _png_size(out / name)
        assert 500 <= width <= 1000 and 500 <= height <= 1000, (name, width, height)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(evaluation.to_dict()))
    report = (out / "report.md").read_text()
    for text in ("## Per image", "## Per study", "### Per body part", "XR_WRIST", "CBAM on", "![ROC curve](roc.png)"):
        assert text in report
    # One fractured hand study and one intact: its AUROC is flagged, not read as a finding.
    hand = [line for line in report.splitlines() if line.startswith("| XR_HAND | 2 |")]
    assert hand and all("too few to read: 1 of one class" in line for line in hand)
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "study,body_part,label,probability" and len(rows) == 1 + len(test)
    assert rows[1] == "s/2,XR_WRIST,1,0.800000"


def test_comparison_puts_runs_side_by_side(tmp_path, rng):
    validation = _drawn(rng, 80, "validation", 1.0)
    good = evaluate_predictions(validation, _drawn(rng, 90, "test", 2.0), n_resamples=100, run=RUN, dataset="d")
    weak_run = {"name": "run_b", "path": "runs/run_b", "model": {"backbone": "mobilenetv3", "attention": False}}
    weak = evaluate_predictions(validation, _drawn(rng, 90, "test", 0.2), n_resamples=100, run=weak_run, dataset="d")
    out = write_comparison([good, weak], tmp_path / "cmp")
    rows = json.loads((out / "comparison.json").read_text())["runs"]
    assert [r["run"] for r in rows] == ["run_a", "run_b"]
    assert [r["attention"] for r in rows] == [True, False]
    assert rows[0]["metrics"]["AUROC"] == good.levels["image"].result.ranking["auroc"].to_dict()
    assert rows[1]["metrics"]["AUROC"]["value"] < rows[0]["metrics"]["AUROC"]["value"]
    table = (out / "comparison.md").read_text().splitlines()
    run_a = next(line for line in table if line.startswith("| `run_a`"))
    run_b = next(line for line in table if line.startswith("| `run_b`"))
    assert "| on |" in run_a and "| off |" in run_b
    auroc = good.levels["image"].result.ranking["auroc"]
    assert f"{auroc.value:.3f} [{auroc.ci_low:.3f}, {auroc.ci_high:.3f}]" in run_a
    _png_size(out / "comparison_roc.png")
    text = summary_table([good, weak])
    assert "run_a" in text.splitlines()[1] and "run_b" in text.splitlines()[2]
    with pytest.raises(ValueError, match="distinct folder names"):
        write_comparison([good, good], tmp_path / "twice")


def test_paired_auroc_differences_only_between_runs_scored_on_the_same_images(tmp_path, rng):
    from tf_fracture.evaluate import not_pairable, paired_differences

    validation = _drawn(rng, 80, "validation", 1.0)
    test = _drawn(rng, 90, "test", 1.5)
    names = np.array([f"img{i:03d}.png" for i in range(90)], dtype=object)
    patients = np.array([f"p{i // 3}" for i in range(90)], dtype=object)  # three images per patient
    scored = dataclasses.replace(test, filenames=names, dataset="d/default")
    labels = scored.labels
    other_scores = np.clip(scored.scores + 0.2 * rng.normal(size=90), 0, 1)
    runs = {}
    for name, scores in (("run_a", scored.scores), ("run_b", other_scores)):
        predictions = dataclasses.replace(scored, scores=scores)
        runs[name] = evaluate_predictions(validation, predictions, n_resamples=150, seed=4, run={"name": name})
    (pair,) = paired_differences([runs["run_a"], runs["run_b"]])
    expected = metrics.paired_auroc_difference(labels, scored.scores, other_scores, n_resamples=150, seed=4)
    assert pair["comparable"] and pair["difference"] == expected.difference.to_dict()
    assert pair["difference"]["value"] == pytest.approx(
        roc_auc_score(labels, scored.scores) - roc_auc_score(labels, other_scores), abs=1e-12
    )
    # Patients repeat (unique per item): whole patients resampled, as the runs' own intervals do.
    by_patient = {
        k: dataclasses.replace(r, predictions=dataclasses.replace(r.predictions, patients=patients))
        for k, r in runs.items()
    }
    (pair,) = paired_differences(list(by_patient.values()))
    grouped = metrics.paired_auroc_difference(
        labels, scored.scores, other_scores, n_resamples=150, seed=4, groups=patients
    )
    assert pair["difference"] == grouped.difference.to_dict() and pair["bootstrap"]["n_groups"] == 30

    def changed(**fields):
        e = runs["run_b"]
        return dataclasses.replace(e, predictions=dataclasses.replace(e.predictions, **fields))

    a = runs["run_a"]
    assert not_pairable(a, runs["run_b"]) is None
    assert "different splits" in not_pairable(a, dataclasses.replace(runs["run_b"], split="validation"))
    assert "another order" in not_pairable(a, changed(filenames=names[::-1].copy()))
    assert "no file names" in not_pairable(a, changed(filenames=None))
    assert "different data" in not_pairable(a, changed(dataset="d/other"))
    assert "different labels" in not_pairable(a, changed(labels=1 - labels))
    reordered = dataclasses.replace(
        runs["run_b"], run={"name": "run_c"}, predictions=changed(filenames=names[::-1].copy()).predictions
    )
    out = write_comparison([a, runs["run_b"], reordered], tmp_path / "cmp")
    pairs = json.loads((out / "comparison.json").read_text())["paired_auroc_differences"]
    assert [(p["a"], p["b"], p["comparable"]) for p in pairs] == [
        ("run_a", "run_b", True),
        ("run_a", "run_c", False),
        ("run_b", "run_c", False),
    ]
    table = (out / "comparison.md").read_text()
    assert (
        "| `run_a` | `run_c` | | | not comparable pairwise: different images, or the same in another order |" in table
    )
    diff = expected.difference
    assert f"| {diff.value:.3f} [{diff.ci_low:.3f}, {diff.ci_high:.3f}] |" in table
    # The heading says which runs were not scored on the first one's images, and why.
    assert "**Warning: the runs were not all scored on the same images as `run_a`" in table
    assert "`run_c`: different images, or the same in another order" in table and "All runs scored" not in table
    same = comparison_markdown([a, runs["run_b"]])
    assert "All runs scored on the same images (d/default `test`, n = 90)" in same
    assert "values with 95% bootstrap CIs" in same


def test_comparison_without_resamples_says_no_intervals(rng):
    validation = _drawn(rng, 40, "validation", 1.0)
    runs = [
        evaluate_predictions(validation, _drawn(rng, 50, "test", 1.0), n_resamples=0, run={"name": n}, dataset="d")
        for n in ("run_a", "run_b")
    ]
    text = comparison_markdown(runs)
    assert "no intervals (computed with --resamples 0)" in text and "95% bootstrap CIs" not in text
    row = next(line for line in text.splitlines() if line.startswith("| `run_a`"))
    assert "| d `test` |" in row and "| 50 (" in row


def test_intervals_resample_whole_patients_only_where_patients_repeat(rng):
    validation, test = _drawn(rng, 60, "validation", 1.0), _drawn(rng, 60, "test", 1.0)
    thresholds = metrics.choose_thresholds(validation.labels, validation.scores, target_sensitivity=0.9)
    # Patients with two images each (both of one label): the bootstrap draws whole patients.
    pairs = np.array([f"p{i}" for i in np.argsort(np.argsort(test.labels, kind="stable")) // 2], dtype=object)
    grouped = SplitPredictions(test.scores, test.labels, patients=pairs, split="test")
    evaluation = evaluate_predictions(validation, grouped, n_resamples=200)
    expected = metrics.evaluate(test.labels, test.scores, thresholds, groups=pairs, n_resamples=200)
    assert evaluation.levels["image"].result.ranking == expected.ranking
    assert evaluation.settings["bootstrap_unit"] == "patient" and "study" not in evaluation.levels
    # One image per patient: the usual class-stratified bootstrap.
    single = SplitPredictions(test.scores, test.labels, patients=np.arange(60).astype(str), split="test")
    evaluation = evaluate_predictions(validation, single, n_resamples=200)
    expected = metrics.evaluate(test.labels, test.scores, thresholds, n_resamples=200)
    assert evaluation.levels["image"].result.ranking == expected.ranking
    assert evaluation.settings["bootstrap_unit"] == "image"


def test_importing_the_evaluation_loads_neither_tensorflow_nor_pyplot():
    import subprocess
    import sys

    code = (
        "import sys, tf_fracture.evaluate, tf_fracture.evaluate.__main__; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib.pyplot') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
