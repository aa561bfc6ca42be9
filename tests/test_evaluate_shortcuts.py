"""The shortcut tests: the metadata baseline against scikit-learn and the FracAtlas benchmark, AUROC within
strata against scikit-learn, occlusion and box hit rates on hand-built models whose answers are known
(one that looks only inside the box, one that looks only outside it), the counterfactual pairs, and
the report section."""

import dataclasses
import importlib.util
import pathlib
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from test_explain_cam import dark_spot, dark_spot_model, numpy_cam

from tf_fracture import metrics
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.data.synthetic import generate_radiograph, patient_id_for_index
from tf_fracture.data.targets import target_mask
from tf_fracture.evaluate import SplitPredictions, evaluate_predictions, markdown_report, predict_logits
from tf_fracture.evaluate.counterfactual import counterfactual_test, pair_inputs, split_indices
from tf_fracture.evaluate.metadata_baseline import (
    FRACATLAS_REGIONS,
    fit_logistic_regression,
    fit_metadata_baseline,
    metadata_features,
)
from tf_fracture.evaluate.occlusion import occlusion_inputs
from tf_fracture.evaluate.shortcuts import (
    NO_HARDWARE,
    ShortcutTests,
    Skipped,
    box_tests,
    counterfactual_pairs_test,
    metadata_tests,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = PreprocessConfig(32, unsharp_kernel=3)


def _benchmark():
    spec = importlib.util.spec_from_file_location("fracatlas_baselines", ROOT / "benchmarks" / "fracatlas_baselines.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fb = _benchmark()


# --- FracAtlas-like metadata ------------------------------------------------------------------------


def fracatlas_examples(rng, n):
    """Examples as the TFDS builder gives them; fractures more often in hands, with hardware, in oblique views."""
    examples = []
    for i in range(n):
        regions = [int(rng.integers(0, 4))] + ([int(rng.integers(0, 4))] if rng.random() < 0.1 else [])
        views = sorted({int(rng.integers(0, 3)) for _ in range(int(rng.integers(1, 3)))})
        hardware = bool(rng.random() < 0.15)
        logit = -1.0 + 1.5 * (regions[0] == 0) + 1.2 * hardware + 0.8 * (2 in views) - 0.7 * (regions[0] == 2)
        label = int(rng.random() < 1 / (1 + np.exp(-logit)))
        examples.append(
            {
                "image": np.zeros((8, 8, 1), np.uint8),
                "label": label,
                "filename": f"images/x/IMG{i:07d}.jpg".encode(),
                "regions": np.array(regions, np.int64),
                "views": np.array(views, np.int64),
                "mixed": bool(rng.random() < 0.05),
                "hardware": hardware,
                "multiscan": bool(rng.random() < 0.1),
                "fracture_count": np.int32(label),
                "fracture_boxes": np.full((label, 4), 0.25, np.float32),
            }
        )
    return examples


def metadata_of(examples):
    """What `split_metadata("fracatlas", ...)` returns for these examples (object arrays for the lists)."""
    out = {"labels": np.array([e["label"] for e in examples])}
    for key in ("regions", "views"):
        out[key] = np.empty(len(examples), dtype=object)
        out[key][:] = [e[key] for e in examples]
    for key in ("mixed", "hardware", "multiscan"):
        out[key] = np.array([e[key] for e in examples])
    out["body_parts"] = np.array([e["regions"][0] for e in examples])
    return out


def fracatlas_predictions(rng, examples, split, signal=1.0):
    meta = metadata_of(examples)
    labels = meta["labels"]
    scores = 1 / (1 + np.exp(-(signal * labels + rng.normal(size=len(labels)))))
    parts = np.array([FRACATLAS_REGIONS[p] for p in meta["body_parts"]], dtype=object)
    metadata = {k: v for k, v in meta.items() if k != "labels"}
    return SplitPredictions(
        scores, labels, body_parts=parts, split=split, metadata=metadata, dataset="fracatlas/default"
    )


def test_fracatlas_features_are_the_benchmarks(rng):
    examples = fracatlas_examples(rng, 60)
    features = metadata_features("fracatlas", metadata_of(examples))
    expected = fb.metadata_features(fb.split_from_examples(examples, None))
    np.testing.assert_array_equal(features.values, expected)
    assert features.names == fb.METADATA_FEATURE_NAMES
    for example in examples:  # what gives the label away must not move a feature
        example["fracture_count"] = np.int32(5)
        example["fracture_boxes"] = np.zeros((0, 4), np.float32)
    np.testing.assert_array_equal(metadata_features("fracatlas", metadata_of(examples)).values, expected)


def test_the_builders_class_names_are_the_features_names():
    import tensorflow_datasets as tfds

    from tf_fracture.evaluate.metadata_baseline import FRACATLAS_VIEWS

    features = tfds.builder_cls("fracatlas")(data_dir="/nonexistent").info.features
    assert tuple(features["regions"].feature.names) == FRACATLAS_REGIONS
    assert tuple(features["views"].feature.names) == FRACATLAS_VIEWS


@pytest.mark.parametrize("class_weight", ["balanced", None])
@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_logistic_regression_equals_scikit_learn(rng, C, class_weight):
    x = (rng.random((400, 10)) < 0.3).astype(float)
    x[:, 7] = 0.0  # a flag that never occurs (FracAtlas' hip in a small split)
    y = (rng.random(400) < 1 / (1 + np.exp(-(x @ rng.normal(size=10) - 1.0)))).astype(int)
    ours = fit_logistic_regression(x, y, C=C, class_weight=class_weight)
    theirs = LogisticRegression(C=C, class_weight=class_weight, max_iter=10000, tol=1e-12).fit(x, y)
    np.testing.assert_allclose(ours.coef, theirs.coef_[0], atol=2e-6 * max(1.0, np.abs(theirs.coef_).max()))
    assert ours.intercept == pytest.approx(theirs.intercept_[0], abs=2e-6)
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x)[:, 1], atol=1e-6)
    assert np.abs(ours.coef).max() > 0.1  # not a trivial fit that any code would match


def test_metadata_baseline_equals_the_benchmarks_fit(rng):
    train, val, test = (fracatlas_examples(rng, n) for n in (400, 120, 150))
    data = {k: fb.split_from_examples(e, None) for k, e in (("train", train), ("val", val), ("test", test))}
    feats = {k: fb.metadata_features(s) for k, s in data.items()}
    theirs = fb.fit_logistic(feats["train"], data["train"].labels, feats["val"], data["val"].labels)
    ours = fit_metadata_baseline(
        metadata_features("fracatlas", metadata_of(train)),
        data["train"].labels,
        metadata_features("fracatlas", metadata_of(val)),
        data["val"].labels,
    )
    # The benchmark fits with scikit-learn's default tolerance (1e-4): its coefficients are ~1e-3 from the
    # optimum (which ours reaches, see the test above), enough to swap two nearly tied flag combinations.
    assert ours.C == theirs.selection["C"]
    for c, auroc in theirs.selection["validation_auroc_by_C"].items():
        assert ours.validation_auroc_by_C[c] == pytest.approx(auroc, abs=5e-3)
    test_features = metadata_features("fracatlas", metadata_of(test))
    np.testing.assert_allclose(ours.scores(test_features), theirs.scores(feats["test"]), atol=2e-3)


def test_metadata_tests_on_fracatlas_against_scikit_learn(rng):
    train, val, test = (fracatlas_examples(rng, n) for n in (400, 120, 200))
    validation = fracatlas_predictions(rng, val, "validation")
    scored = fracatlas_predictions(rng, test, "test")
    strata, baseline = metadata_tests(
        "fracatlas", validation, scored, metadata_of(train), n_resamples=200, seed=2, groups=None
    )
    # The baseline: scikit-learn's regression with the benchmark's C, fitted on train, scored on test.
    features = {k: fb.metadata_features(fb.split_from_examples(e, None)) for k, e in (("tr", train), ("te", test))}
    sk = LogisticRegression(C=baseline.baseline.C, class_weight="balanced", max_iter=10000, tol=1e-12)
    sk_scores = sk.fit(features["tr"], metadata_of(train)["labels"]).predict_proba(features["te"])[:, 1]
    saved = baseline.to_dict()
    assert saved["auroc"]["value"] == pytest.approx(roc_auc_score(scored.labels, sk_scores), abs=1e-9)
    assert saved["model_auroc"]["value"] == pytest.approx(roc_auc_score(scored.labels, scored.scores), abs=1e-12)
    assert saved["model_minus_baseline"]["value"] == pytest.approx(
        saved["model_auroc"]["value"] - saved["auroc"]["value"]
    )
    expected = metrics.paired_auroc_difference(scored.labels, scored.scores, baseline.scores, n_resamples=200, seed=2)
    assert saved["model_minus_baseline"] == expected.difference.to_dict()
    assert saved["n_train"] == 400 and saved["features"] == list(fb.METADATA_FEATURE_NAMES)
    assert 0.6 < saved["auroc"]["value"]  # the flags carry the label here, as on FracAtlas

    # Strata: each region (first listed) and the images without hardware, equal to scikit-learn's.
    rows = strata.to_dict()["strata"]
    parts = np.asarray(scored.body_parts)
    masks = {f"region {r}": parts == r for r in np.unique(parts)}
    masks[NO_HARDWARE] = ~scored.metadata["hardware"]
    assert list(rows) == list(masks)
    for name, mask in masks.items():
        row = rows[name]
        assert row["n"] == mask.sum() and row["n_positive"] == scored.labels[mask].sum()
        if row["skipped"]:
            assert len(set(scored.labels[mask])) == 1
            continue
        y = scored.labels[mask]
        assert row["auroc"]["value"] == pytest.approx(roc_auc_score(y, scored.scores[mask]), abs=1e-12), name
        assert row["baseline_auroc"]["value"] == pytest.approx(roc_auc_score(y, sk_scores[mask]), abs=1e-9), name
        assert row["auroc"]["ci_low"] is not None


def test_datasets_without_metadata_flags_say_so(rng):
    labels = np.array([0, 1] * 10)
    plain = SplitPredictions(rng.random(20), labels, split="test", metadata={"num_bones": np.ones(20)})
    strata, baseline = metadata_tests("synthetic_xray", plain, dataclasses.replace(plain, split="t"), None)
    assert isinstance(strata, Skipped) and "no body parts or hardware" in strata.reason
    assert isinstance(baseline, Skipped) and "synthetic_xray has no metadata flags" in baseline.reason
    # MURA's flags are its body parts (one-hot): a baseline there too.
    parts = np.array([0, 3] * 10)
    mura = dataclasses.replace(
        plain, body_parts=np.where(parts == 0, "XR_ELBOW", "XR_HAND"), metadata={"body_parts": parts}
    )
    train = {"labels": np.array([0, 1, 1, 1, 0, 0, 0, 1]), "body_parts": np.array([0, 0, 3, 3, 0, 3, 0, 3])}
    strata, baseline = metadata_tests("mura", mura, mura, train, n_resamples=0)
    assert baseline.baseline.feature_names[0] == "body_part_XR_ELBOW" and len(baseline.baseline.feature_names) == 7
    assert list(strata.model) == ["body part XR_ELBOW", "body part XR_HAND"]
    # The train split given as a reason (not readable): the baseline carries it.
    _, baseline = metadata_tests("mura", mura, mura, "cannot read the train split 'train'")
    assert baseline.reason == "cannot read the train split 'train'"


# --- occlusion and box hit rates on hand-built models -----------------------------------------------


def test_occlusion_inputs_fill_exactly_the_resized_box():
    image = np.full((32, 32), 180, np.uint8)
    image[8:16, 16:24] = 30
    box = [(8 / 32, 16 / 32, 16 / 32, 24 / 32)]
    inputs = occlusion_inputs(image, box, CONFIG)
    original = preprocess(image, CONFIG).astype(np.float32)
    inside = np.zeros((32, 32), bool)
    inside[8:16, 16:24] = True
    np.testing.assert_array_equal(inputs.box, inside)
    assert inputs.fill == pytest.approx(original.mean(), rel=1e-6)
    np.testing.assert_array_equal(inputs.original, original)
    np.testing.assert_array_equal(inputs.box_removed, np.where(inside, np.float32(inputs.fill), original))
    np.testing.assert_array_equal(inputs.box_only, np.where(inside, original, np.float32(inputs.fill)))


def test_occlusion_inputs_follow_the_padding_of_the_image():
    config = PreprocessConfig(32, unsharp_kernel=3, resize_mode="pad")
    wide = np.full((16, 32), 180, np.uint8)  # padded with 8 black rows above and below
    box = [(0.5, 0.25, 1.0, 0.5)]  # rows 8..16, cols 8..16 of the wide image: rows 16..24 once padded
    inputs = occlusion_inputs(wide, box, config)
    np.testing.assert_array_equal(inputs.box, target_mask(wide.shape, config=config, boxes=box) > 0)
    rows, cols = np.nonzero(inputs.box)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (16, 23, 8, 15)
    assert inputs.content[8:24].all() and not inputs.content[:8].any() and not inputs.content[24:].any()
    assert inputs.fill == pytest.approx(inputs.original[8:24].mean(), rel=1e-6)  # the padding left out
    np.testing.assert_array_equal(inputs.box_only[:8], inputs.original[:8])  # the padding stays as it was
    assert (inputs.box_only[8:16] == np.float32(inputs.fill)).all() and (
        inputs.box_removed[:8] == inputs.original[:8]
    ).all()
    with pytest.raises(ValueError, match="at least one fracture box"):
        occlusion_inputs(wide, np.zeros((0, 4)), config)


def box_example(image, boxes, label=1):
    return {"image": image[..., None], "label": label, "fracture_boxes": np.asarray(boxes, np.float32)}


ON = (8 / 32, 16 / 32, 16 / 32, 24 / 32)  # the dark spot of dark_spot(32, 8, 16)
ELSEWHERE = (20 / 32, 0.0, 28 / 32, 8 / 32)


def test_occlusion_drops_for_a_model_that_looks_inside_the_box_and_not_for_one_that_looks_outside():
    model = dark_spot_model()  # scores the dark spot: a lucent "fracture"
    examples = [
        box_example(dark_spot(32, 8, 16), [ON]),  # the box on the spot: the model looks inside it
        box_example(dark_spot(32, 20, 0), [ELSEWHERE]),
        box_example(dark_spot(32, 8, 16), [ON], label=0),  # negatives are left out
        box_example(dark_spot(32, 16, 8), np.zeros((0, 4))),  # no box: left out, counted
    ]
    localisation, occlusion = box_tests(model, examples, CONFIG, boxes_feature="fracture_boxes", n_resamples=0)
    saved = occlusion.to_dict()
    assert saved["n"] == 2 and localisation.without_boxes == 1
    # Expected logits from NumPy: the spot removed leaves no dark cell (logit = BIAS); the box alone keeps it.
    originals = np.stack([preprocess(dark_spot(32, t, left), CONFIG) for t, left in ((8, 16), (20, 0))])
    _, logits = numpy_cam(originals)
    removed = saved["box_removed"]["logit"]
    assert removed["mean_change"]["value"] == pytest.approx(np.mean(-1.0 - logits), rel=1e-5)
    assert removed["share_lower"]["value"] == 1.0 and removed["n_lower"] == 2
    only = saved["box_only"]["logit"]
    assert only["mean_change"]["value"] == pytest.approx(0.0, abs=1e-6) and only["n_lower"] == 0
    assert saved["box_removed"]["probability"]["mean_change"]["value"] < -0.1

    # The spot outside the box (a marker, hardware): masking the box changes nothing, the box alone loses it.
    outside = [box_example(dark_spot(32, 8, 16), [ELSEWHERE]), box_example(dark_spot(32, 20, 0), [ON])]
    _, occlusion = box_tests(model, outside, CONFIG, boxes_feature="fracture_boxes", n_resamples=0)
    saved = occlusion.to_dict()
    assert saved["box_removed"]["logit"]["mean_change"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert (
        saved["box_removed"]["logit"]["n_lower"] == 0 and saved["box_removed"]["logit"]["share_lower"]["value"] == 0.5
    )
    assert saved["box_only"]["logit"]["share_lower"]["value"] == 1.0
    assert saved["box_only"]["logit"]["mean_change"]["value"] < -0.1


def test_box_hit_rates_of_a_known_cam_beside_chance():
    model = dark_spot_model()
    examples = [
        box_example(dark_spot(32, 8, 16), [ON]),
        box_example(dark_spot(32, 8, 16), [ELSEWHERE]),
        box_example(dark_spot(32, 20, 0), [ELSEWHERE]),
        box_example(dark_spot(32, 20, 0), [ON, ELSEWHERE]),
    ]
    localisation, _ = box_tests(model, examples, CONFIG, boxes_feature="fracture_boxes", n_resamples=300)
    saved = localisation.to_dict()["maps"]
    cam, grad = saved["cam"], saved["dark_spot"]
    assert cam["n"] == 4 and cam["hit_rate"]["value"] == 0.75  # all but the second
    assert cam["chance_rate"] == pytest.approx((1 + 1 + 1 + 2) / 4 * 64 / 1024)
    assert cam["above_chance"]["value"] == pytest.approx(0.75 - cam["chance_rate"])
    assert 0.0 <= cam["hit_rate"]["ci_low"] <= 0.75 <= cam["hit_rate"]["ci_high"] <= 1.0
    assert grad["hit_rate"]["value"] == 0.0 and grad["flat"] == 4  # Grad-CAM of this model is flat


def test_no_fractured_image_with_a_box_skips_both_with_the_reason():
    examples = [box_example(dark_spot(32, 8, 16), np.zeros((0, 4))), box_example(dark_spot(32, 8, 16), [ON], 0)]
    localisation, occlusion = box_tests(dark_spot_model(), examples, CONFIG, boxes_feature="fracture_boxes")
    assert isinstance(localisation, Skipped) and isinstance(occlusion, Skipped)
    assert "no fractured image with a fracture box" in occlusion.reason and "(1 without a box)" in occlusion.reason


# --- counterfactual pairs -------------------------------------------------------------------------------


class FakeRender:
    """generate_radiograph's interface: a bright scene, with a dark spot (the "fracture") when asked."""

    def __init__(self):
        self.calls = []

    def __call__(self, index, *, size, seed, fracture):
        self.calls.append((index, size, seed, fracture))
        image = dark_spot(size, 4 * (index % 5), 8, background=190 + index % 20) if fracture else None
        if image is None:
            image = np.full((size, size), 190 + index % 20, np.uint8)
        return type("Sample", (), {"image": image})()


def test_counterfactual_pairs_of_a_model_that_sees_the_fracture_and_of_one_that_does_not():
    model = dark_spot_model()
    render = FakeRender()
    test = counterfactual_test(
        lambda x: predict_logits(model, x), range(10), image_size=32, seed=3, config=CONFIG,
        batch_size=4, n_resamples=200, render=render,
    )  # fmt: skip
    assert sorted(render.calls) == sorted((i, 32, 3, f) for i in range(10) for f in (False, True))
    saved = test.to_dict()
    assert test.n_pairs == 10 and saved["share_fractured_higher"]["value"] == 1.0
    clean = np.stack([preprocess(render(i, size=32, seed=3, fracture=False).image, CONFIG) for i in range(10)])
    fractured = np.stack([preprocess(render(i, size=32, seed=3, fracture=True).image, CONFIG) for i in range(10)])
    expected = numpy_cam(fractured)[1] - numpy_cam(clean)[1]
    assert saved["logit"]["mean_change"]["value"] == pytest.approx(expected.mean(), rel=1e-5)
    assert saved["rendering"] == {"image_size": 32, "seed": 3, "indices": list(range(10))}
    # A model blind to the spot ranks the pairs at chance: every pair tied, share 0.5.
    blind = counterfactual_test(
        lambda x: np.zeros(len(x)), range(6), image_size=32, seed=3, config=CONFIG, render=FakeRender()
    )
    assert blind.logit.share_higher.value == 0.5 and blind.logit.n_tied == 6


def test_pairs_are_the_same_scene_with_and_without_the_fracture_preprocessed_like_the_data():
    config = PreprocessConfig(48, unsharp_kernel=3)
    clean, fractured = pair_inputs(7, image_size=64, seed=1, config=config)
    with_fracture = generate_radiograph(7, size=64, seed=1, fracture=True)
    np.testing.assert_array_equal(
        clean, preprocess(generate_radiograph(7, size=64, seed=1, fracture=False).image, config)
    )
    np.testing.assert_array_equal(fractured, preprocess(with_fracture.image, config))
    # They differ, and mostly near the fracture (CLAHE spreads a little of the change over its tile).
    changed = np.abs(fractured - clean) > 8
    near = target_mask((64, 64), config=config, boxes=[with_fracture.fracture_box]) > 0
    assert changed.any() and changed[near].mean() > 5 * changed[~near].mean()


def test_scene_indices_are_read_from_patient_ids_or_the_test_says_why():
    ids = [patient_id_for_index(i, 4) for i in (200000003, 200000000, 17)]
    assert split_indices(ids, 4) == [200000003, 200000000, 17]
    assert split_indices([ids[0].encode()], 4) == [200000003]
    assert "does not name a synthetic_xray scene of seed 0" in split_indices(ids, 0)
    labels = np.array([generate_radiograph(i, size=32, seed=4).label for i in (200000003, 200000000, 17)])
    builder = type("Config", (), {"image_size": 32, "seed": 4})()
    test = SplitPredictions(np.full(3, 0.5), labels, patients=np.array(ids, dtype=object), split="test")
    logits = lambda x: np.zeros(len(x))  # noqa: E731
    result = counterfactual_pairs_test(logits, "synthetic_xray", test, builder, CONFIG, max_pairs=2, n_resamples=0)
    assert result.n_pairs == 2 and result.indices == (200000003, 200000000)
    skipped = counterfactual_pairs_test(logits, "fracatlas", test, builder, CONFIG)
    assert isinstance(skipped, Skipped) and "only synthetic_xray" in skipped.reason
    wrong = dataclasses.replace(test, labels=1 - labels)
    assert (
        "not those of the scenes" in counterfactual_pairs_test(logits, "synthetic_xray", wrong, builder, CONFIG).reason
    )
    assert (
        "turned off" in counterfactual_pairs_test(logits, "synthetic_xray", test, builder, CONFIG, max_pairs=0).reason
    )


# --- metrics.json and the report ---------------------------------------------------------------------


def test_the_report_shows_every_test_or_why_it_was_skipped(rng):
    train, val, test = (fracatlas_examples(rng, n) for n in (300, 100, 150))
    validation = fracatlas_predictions(rng, val, "validation")
    scored = fracatlas_predictions(rng, test, "test")
    strata, baseline = metadata_tests("fracatlas", validation, scored, metadata_of(train), n_resamples=100)
    localisation, occlusion = box_tests(
        dark_spot_model(),
        [box_example(dark_spot(32, 8, 16), [ON]), box_example(dark_spot(32, 20, 0), [ON])],
        CONFIG,
        boxes_feature="fracture_boxes",
        n_resamples=100,
    )
    evaluation = evaluate_predictions(validation, scored, n_resamples=100, dataset="fracatlas")
    shortcuts = ShortcutTests(strata, baseline, localisation, occlusion, Skipped("only synthetic_xray can render"))
    evaluation = dataclasses.replace(evaluation, shortcuts=shortcuts)
    saved = evaluation.to_dict()["shortcut_tests"]
    assert list(saved) == ["strata", "metadata_baseline", "localisation", "occlusion", "counterfactual"]
    assert saved["counterfactual"] == {"skipped": "only synthetic_xray can render"}
    assert all(saved[k]["skipped"] is None for k in ("strata", "metadata_baseline", "localisation", "occlusion"))
    report = markdown_report(evaluation)
    section = report[report.index("## Shortcut tests") : report.index("## Figures")]
    base = saved["metadata_baseline"]
    assert f"| metadata baseline | {base['auroc']['value']:.3f} [" in section
    diff = base["model_minus_baseline"]
    assert f"| model - baseline (paired bootstrap) | {diff['value']:.3f} [{diff['ci_low']:.3f}, " in section
    hand = saved["strata"]["strata"]["region hand"]
    assert f"| region hand | {hand['n']} | {hand['n_positive']} | {hand['auroc']['value']:.3f} [" in section
    assert f"| {NO_HARDWARE} |" in section
    assert "| CAM (the model's own) | 0.500 [" in section and "| Grad-CAM dark_spot | 0.000 [" in section
    removed = saved["occlusion"]["box_removed"]["logit"]["mean_change"]
    assert f"| fracture box masked out | {removed['value']:.3f} [" in section
    assert "### Counterfactual pairs\n\nSkipped: only synthetic_xray can render." in section
    none = dataclasses.replace(evaluation, shortcuts=None)
    assert none.to_dict()["shortcut_tests"] is None and "Not run (`--no-shortcut-tests`)" in markdown_report(none)
