"""tf_fracture.metrics: parity with scikit-learn, golden values, thresholds, bootstrap, degenerate inputs."""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn import calibration as skcal
from sklearn import metrics as sk

from tf_fracture import metrics as M


def _case(seed):
    """Random binary data; every third case has heavy ties, every fourth is strongly imbalanced."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 300))
    prevalence = 0.07 if seed % 4 == 0 else rng.uniform(0.2, 0.8)
    y = (rng.random(n) < prevalence).astype(int)
    y[:2] = [0, 1]  # both classes
    p = 1.0 / (1.0 + np.exp(-(rng.normal(size=n) + rng.uniform(0, 2) * y)))
    if seed % 3 == 0:
        p = np.round(p, 1)  # many equal scores, some exactly on the 0.5 threshold
    return y, p


SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_ranking_metrics_and_curves_match_sklearn(seed):
    y, p = _case(seed)
    np.testing.assert_allclose(M.roc_auc(y, p), sk.roc_auc_score(y, p), rtol=1e-12)
    np.testing.assert_allclose(M.average_precision(y, p), sk.average_precision_score(y, p), rtol=1e-12)
    np.testing.assert_allclose(M.brier_score(y, p), sk.brier_score_loss(y, p), rtol=1e-12)

    fpr, tpr, thr = sk.roc_curve(y, p, drop_intermediate=False)
    roc = M.roc_curve(y, p)
    np.testing.assert_allclose(roc.x, fpr, rtol=1e-12)
    np.testing.assert_allclose(roc.y, tpr, rtol=1e-12)
    np.testing.assert_array_equal(roc.thresholds, thr)

    precision, recall, thr = sk.precision_recall_curve(y, p)
    pr = M.precision_recall_curve(y, p)
    np.testing.assert_allclose(pr.y, precision, rtol=1e-12)
    np.testing.assert_allclose(pr.x, recall, rtol=1e-12)
    np.testing.assert_array_equal(pr.thresholds, thr)

    table = M.calibration_table(y, p, n_bins=7)
    observed, predicted = skcal.calibration_curve(y, p, n_bins=7)
    filled = table.counts > 0
    np.testing.assert_allclose(table.observed_fraction[filled], observed, rtol=1e-12)
    np.testing.assert_allclose(table.mean_predicted[filled], predicted, rtol=1e-12)
    assert table.counts.sum() == y.size and np.isnan(table.observed_fraction[~filled]).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_threshold_metrics_match_sklearn(seed):
    y, p = _case(seed)
    # 0.5, a threshold equal to a score (ties on the boundary), one above every score (no predicted positive).
    for threshold in (0.5, float(np.median(p)), float(p.max()) + 0.01, float(p.min())):
        predicted = (p >= threshold).astype(int)
        tn, fp, fn, tp = sk.confusion_matrix(y, predicted, labels=[0, 1]).ravel()
        counts = M.confusion_counts(y, p, threshold)
        assert counts.to_dict() == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
        np.testing.assert_array_equal(counts.matrix(), sk.confusion_matrix(y, predicted, labels=[0, 1]))
        got = M.threshold_metrics(y, p, threshold)
        want = {
            "accuracy": sk.accuracy_score(y, predicted),
            "precision": sk.precision_score(y, predicted, zero_division=0),
            "recall": sk.recall_score(y, predicted, zero_division=0),
            "specificity": sk.recall_score(1 - y, 1 - predicted, zero_division=0),
            "f1": sk.f1_score(y, predicted, zero_division=0),
            "kappa": sk.cohen_kappa_score(y, predicted),
        }
        assert got.keys() == want.keys()
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-12, atol=1e-15, err_msg=f"{name} at {threshold}")


@pytest.mark.parametrize("seed", range(0, 40, 3))
def test_evaluate_point_estimates_match_sklearn(seed):
    """The vectorised path used by `evaluate` (and its bootstrap) gives the same numbers as sklearn."""
    y_val, p_val = _case(seed + 1000)
    y, p = _case(seed)
    thresholds = M.choose_thresholds(y_val, p_val, target_sensitivity=0.9)
    result = M.evaluate(y, p, thresholds, n_resamples=0)
    np.testing.assert_allclose(result.ranking["auroc"].value, sk.roc_auc_score(y, p), rtol=1e-12)
    np.testing.assert_allclose(result.ranking["average_precision"].value, sk.average_precision_score(y, p), rtol=1e-12)
    np.testing.assert_allclose(result.ranking["brier"].value, sk.brier_score_loss(y, p), rtol=1e-12)
    for name, threshold in thresholds.named().items():
        at = result.at_thresholds[name]
        assert at.threshold == threshold
        predicted = (p >= threshold).astype(int)
        tn, fp, fn, tp = sk.confusion_matrix(y, predicted, labels=[0, 1]).ravel()
        assert at.confusion.to_dict() == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
        np.testing.assert_allclose(at.metrics["f1"].value, sk.f1_score(y, predicted, zero_division=0), rtol=1e-12)
        np.testing.assert_allclose(at.metrics["kappa"].value, sk.cohen_kappa_score(y, predicted), rtol=1e-12)
        np.testing.assert_allclose(at.metrics["precision"].value, sk.precision_score(y, predicted, zero_division=0))
        assert at.metrics["recall"].ci_low is None  # n_resamples=0: no interval


# A tiny example computed by hand (see each comment).
Y = [0, 0, 1, 1, 0, 1]
P = [0.1, 0.4, 0.35, 0.8, 0.5, 0.5]


def test_golden_values_on_a_tiny_example():
    # At 0.5: 0.8 (pos), 0.5 (neg) and 0.5 (pos) are predicted positive.
    assert M.confusion_counts(Y, P, 0.5).to_dict() == {"tn": 2, "fp": 1, "fn": 1, "tp": 2}
    got = M.threshold_metrics(Y, P, 0.5)
    # Kappa: observed 4/6, chance 1/2 -> (2/3 - 1/2) / (1/2) = 1/3.
    want = {"accuracy": 2 / 3, "precision": 2 / 3, "recall": 2 / 3, "specificity": 2 / 3, "f1": 2 / 3, "kappa": 1 / 3}
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name
    # Positive 0.35 beats 1 negative, 0.8 beats 3, 0.5 beats 2 and ties 1: 6.5 of 9 pairs.
    assert M.roc_auc(Y, P) == pytest.approx(13 / 18, rel=1e-12)
    # Recall steps of 1/3 at 0.8 (precision 1), 0.5 (2/3) and 0.35 (3/5).
    assert M.average_precision(Y, P) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, rel=1e-12)
    assert M.brier_score(Y, P) == pytest.approx((0.01 + 0.16 + 0.65**2 + 0.04 + 0.25 + 0.25) / 6, rel=1e-12)
    table = M.calibration_table(Y, P, n_bins=2)  # [0, 0.5] holds 0.1, 0.4, 0.35, 0.5, 0.5; (0.5, 1] holds 0.8
    np.testing.assert_array_equal(table.counts, [5, 1])
    np.testing.assert_allclose(table.mean_predicted, [1.85 / 5, 0.8])
    np.testing.assert_allclose(table.observed_fraction, [2 / 5, 1.0])
    assert table.ece == pytest.approx((5 * abs(0.4 - 0.37) + 1 * 0.2) / 6)


def test_youden_threshold_on_a_hand_case():
    # Scores descending: 0.9 p, 0.7 p, 0.65 n, 0.6 p, 0.3 n, 0.2 n, 0.1 n.
    # J = sens + spec - 1 = 1/3, 2/3, 5/12, 3/4, 1/2, 1/4, 0: the maximum is at 0.6.
    y = [0, 0, 0, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.65, 0.6, 0.7, 0.9]
    thresholds = M.choose_thresholds(y, p, target_sensitivity=0.5)
    assert thresholds.youden == 0.6
    assert thresholds.validation["youden"] == {"sensitivity": 1.0, "specificity": 0.75}
    # Sensitivity reaches 0.5 first (highest threshold) at 0.7 (2/3).
    assert thresholds.target_sensitivity == 0.7


def test_equal_youden_indices_choose_the_highest_threshold():
    # On the tiny example J = 1/3 at 0.8, 0.5 and 0.35: the highest, 0.8, wins.
    assert M.choose_thresholds(Y, P).youden == 0.8


@pytest.mark.parametrize("target, expected", [(1 / 3, 0.8), (0.6, 0.5), (2 / 3, 0.5), (0.9, 0.35), (1.0, 0.35)])
def test_target_sensitivity_threshold_on_the_tiny_example(target, expected):
    # Sensitivity as the threshold falls: 1/3 at 0.8, 2/3 at 0.5 and 0.4, 1 at 0.35 and 0.1.
    assert M.choose_thresholds(Y, P, target_sensitivity=target).target_sensitivity == expected


@pytest.mark.parametrize("seed", range(0, 40, 2))
def test_thresholds_match_sklearn_roc_curve(seed):
    y, p = _case(seed)
    fpr, tpr, thr = sk.roc_curve(y, p, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # without the +inf point
    thresholds = M.choose_thresholds(y, p, target_sensitivity=0.8)
    assert thresholds.youden == thr[np.argmax(np.round(tpr - fpr, 12))]  # rounding: float ties are ties
    assert thresholds.target_sensitivity == thr[np.argmax(tpr >= 0.8)]
    # The highest such threshold: any higher score gives a sensitivity below the target.
    assert M.threshold_metrics(y, p, thresholds.target_sensitivity)["recall"] >= 0.8
    higher = p[p > thresholds.target_sensitivity]
    if higher.size:
        assert M.threshold_metrics(y, p, higher.min())["recall"] < 0.8


def test_evaluate_applies_validation_thresholds_and_refuses_to_choose_on_test():
    y_val, p_val = _case(101)
    y, p = _case(102)
    thresholds = M.choose_thresholds(y_val, p_val)
    result = M.evaluate(y, p, thresholds, n_resamples=0)
    for name in ("fixed", "youden", "target_sensitivity"):
        threshold = thresholds.named()[name]
        assert result.at_thresholds[name].threshold == threshold
        assert result.at_thresholds[name].confusion == M.confusion_counts(y, p, threshold)
    assert result.thresholds.validation["n"] == y_val.size
    with pytest.raises(TypeError, match="choose_thresholds"):
        M.evaluate(y, p, {"youden": 0.5}, n_resamples=0)
    with pytest.raises(ValueError, match="thresholds were chosen on"):
        M.evaluate(y_val, p_val, thresholds, n_resamples=0)
    M.evaluate(y_val, p_val, thresholds, n_resamples=0, allow_same_data=True)


def _evaluate(y, p, n_resamples=500, seed=0, **kwargs):
    thresholds = M.choose_thresholds(*_case(7))
    return M.evaluate(y, p, thresholds, n_resamples=n_resamples, seed=seed, **kwargs)


def _estimates(result):
    out = dict(result.ranking)
    for name, at in result.at_thresholds.items():
        out.update({f"{name}/{k}": v for k, v in at.metrics.items()})
    return out


def test_bootstrap_equals_explicit_resampling_with_sklearn():
    """The level-count bootstrap gives exactly the percentiles of sklearn on explicitly resampled items."""
    y, p = _case(3)  # with ties
    n_resamples = 200
    result = _evaluate(y, p, n_resamples=n_resamples, seed=5)
    rng = np.random.default_rng(5)  # the same draws: positives, then negatives
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    pos_draws = positives[rng.integers(0, positives.size, (n_resamples, positives.size))]
    neg_draws = negatives[rng.integers(0, negatives.size, (n_resamples, negatives.size))]
    index = np.concatenate([pos_draws, neg_draws], axis=1)
    threshold = result.at_thresholds["youden"].threshold
    auroc = [sk.roc_auc_score(y[i], p[i]) for i in index]
    ap = [sk.average_precision_score(y[i], p[i]) for i in index]
    kappa = [sk.cohen_kappa_score(y[i], (p[i] >= threshold).astype(int)) for i in index]
    for estimate, values in [
        (result.ranking["auroc"], auroc),
        (result.ranking["average_precision"], ap),
        (result.at_thresholds["youden"].metrics["kappa"], kappa),
    ]:
        np.testing.assert_allclose([estimate.ci_low, estimate.ci_high], np.percentile(values, [2.5, 97.5]), rtol=1e-12)


def test_bootstrap_interval_contains_the_estimate_narrows_with_data_and_is_reproducible():
    rng = np.random.default_rng(0)

    def data(n):
        y = np.repeat([0, 1], n // 2)
        return y, 1.0 / (1.0 + np.exp(-(rng.normal(size=n) + 1.5 * y)))

    small, large = _estimates(_evaluate(*data(100))), _estimates(_evaluate(*data(1600)))
    for name, estimate in small.items():
        assert estimate.ci_low <= estimate.value <= estimate.ci_high, name
        assert estimate.ci_low < estimate.ci_high, name
        assert large[name].ci_high - large[name].ci_low < 0.6 * (estimate.ci_high - estimate.ci_low), name

    y, p = data(200)
    first, again, other = (_estimates(_evaluate(y, p, seed=s)) for s in (3, 3, 4))
    assert first == again
    assert first["auroc"] != other["auroc"]


def test_grouped_bootstrap_resamples_whole_groups():
    y, p = _case(11)
    ungrouped = _estimates(_evaluate(y, p))
    # One item per group: the same draws as the ungrouped bootstrap.
    assert _estimates(_evaluate(y, p, groups=np.arange(y.size))) == ungrouped
    # Every item three times, the copies forming one group: metrics and intervals as without copies,
    # whereas resampling the copies as independent items would understate the uncertainty.
    y3, p3, g3 = np.repeat(y, 3), np.repeat(p, 3), np.repeat(np.arange(y.size), 3)
    grouped = _estimates(_evaluate(y3, p3, groups=g3))
    naive = _estimates(_evaluate(y3, p3))
    for name, estimate in ungrouped.items():
        np.testing.assert_allclose(
            [grouped[name].value, grouped[name].ci_low, grouped[name].ci_high],
            [estimate.value, estimate.ci_low, estimate.ci_high],
            rtol=1e-12,
            atol=1e-15,
            err_msg=name,
        )
    assert naive["auroc"].ci_high - naive["auroc"].ci_low < 0.8 * (grouped["auroc"].ci_high - grouped["auroc"].ci_low)
    assert _evaluate(y3, p3, groups=g3).bootstrap["n_groups"] == y.size


def test_results_serialise_to_strict_json():
    y, p = _case(5)
    result = _evaluate(y, p, n_resamples=50)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert set(data) == {
        "n",
        "n_positive",
        "ranking",
        "at_thresholds",
        "thresholds",
        "bootstrap",
        "curves",
        "calibration",
    }
    assert data["ranking"]["auroc"]["value"] == result.ranking["auroc"].value
    assert set(data["at_thresholds"]) == {"fixed", "youden", "target_sensitivity"}
    assert data["at_thresholds"]["youden"]["confusion"] == result.at_thresholds["youden"].confusion.to_dict()
    assert data["curves"]["roc"]["thresholds"][0] is None  # +inf
    assert len(data["curves"]["roc"]["fpr"]) == len(np.unique(p)) + 1
    assert data["thresholds"]["sensitivity_target"] == 0.95
    assert data["bootstrap"]["n_resamples"] == 50


def test_aggregate_by_group_averages_each_study():
    studies = ["b", "a", "b", "c", "a", "a"]
    labels = [1, 0, 1, 0, 0, 0]
    scores = [0.9, 0.2, 0.5, 0.3, 0.4, 0.3]
    parts = ["elbow", "hand", "elbow", "hand", "hand", "hand"]
    grouped = M.aggregate_by_group(studies, labels, scores, subgroups=parts)
    np.testing.assert_array_equal(grouped.group_ids, ["a", "b", "c"])
    np.testing.assert_array_equal(grouped.labels, [0, 1, 0])
    np.testing.assert_allclose(grouped.scores, [0.3, 0.7, 0.3])
    np.testing.assert_array_equal(grouped.n_items, [3, 2, 1])
    np.testing.assert_array_equal(grouped.subgroups, ["hand", "elbow", "hand"])
    with pytest.raises(ValueError, match=r"1 groups mix labels, e.g. 'a' \(1 of 3 positive\)"):
        M.aggregate_by_group(studies, [1, 1, 1, 0, 0, 0], scores)
    with pytest.raises(ValueError, match=r"subgroups vary within groups \['a'\]"):
        M.aggregate_by_group(studies, labels, scores, subgroups=["elbow", "hand", "elbow", "hand", "wrist", "hand"])
    with pytest.raises(ValueError, match="5 group ids for 6 labels"):
        M.aggregate_by_group(studies[:5], labels, scores)


def test_evaluate_subgroups_evaluates_each_and_skips_one_class_subgroups():
    y, p = _case(21)
    parts = np.where(np.arange(y.size) % 2 == 0, "elbow", "wrist").astype(object)
    parts[(parts == "wrist") & (y == 1)] = "finger"  # finger: positives only
    thresholds = M.choose_thresholds(*_case(22))
    results = M.evaluate_subgroups(parts, y, p, thresholds, n_resamples=0)
    assert set(results) == {"elbow", "wrist", "finger"}
    assert results["finger"].result is None and "both classes" in results["finger"].skipped
    assert results["finger"].n_positive == results["finger"].n == int(np.sum(parts == "finger"))
    elbow = parts == "elbow"
    assert results["elbow"].n == int(elbow.sum())
    assert results["elbow"].result.ranking["auroc"].value == pytest.approx(sk.roc_auc_score(y[elbow], p[elbow]))
    json.dumps({k: v.to_dict() for k, v in results.items()}, allow_nan=False)


@pytest.mark.filterwarnings("ignore:.*label:UserWarning", "ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_one_class_raises_a_clear_error():
    for call in (
        lambda: M.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]),
        lambda: M.average_precision([0, 0], [0.2, 0.5]),
        lambda: M.roc_curve([0, 0], [0.2, 0.5]),
        lambda: M.choose_thresholds([1, 1], [0.2, 0.5]),
        lambda: M.evaluate([0, 0], [0.2, 0.5], M.choose_thresholds(Y, P)),
    ):
        with pytest.raises(ValueError, match=r"needs both classes, but all [23] labels are"):
            call()
    # Threshold metrics stay defined; kappa is NaN where it is undefined, as sklearn's.
    got = M.threshold_metrics([0, 0, 0], [0.1, 0.2, 0.3], 0.5)
    assert got["accuracy"] == 1.0 and got["precision"] == 0.0 and got["recall"] == 0.0 and np.isnan(got["kappa"])
    assert np.isnan(sk.cohen_kappa_score([0, 0, 0], [0, 0, 0]))


def test_constant_scores_give_auroc_one_half_and_prevalence_precision():
    y = [0, 1, 1, 0, 1]
    assert M.roc_auc(y, [0.3] * 5) == 0.5 == sk.roc_auc_score(y, [0.3] * 5)
    assert M.average_precision(y, [0.3] * 5) == pytest.approx(0.6)
    assert M.choose_thresholds(y, [0.3] * 5).youden == 0.3  # the only candidate: everything positive


def test_no_predicted_positive_gives_zero_precision_and_f1():
    got = M.threshold_metrics(Y, P, 0.95)
    assert got["precision"] == 0.0 and got["f1"] == 0.0 and got["recall"] == 0.0 and got["specificity"] == 1.0
    assert got["kappa"] == 0.0


@pytest.mark.parametrize(
    "labels, scores, message",
    [
        ([0, 1, 1, 0, 1], [0.1, np.nan, 0.3, np.inf, 0.5], r"2 of 5 scores are NaN or infinite, at indices \[1, 3\]"),
        ([0, 1, 1], [0.1, 0.2], "got 3 labels but 2 scores"),
        ([0, 2, 1, -1], [0.1, 0.2, 0.3, 0.4], r"found 2 other labels \(values \[-1, 2\]\) at indices \[1, 3\]"),
        ([0.0, 0.5], [0.1, 0.2], "found 1 other labels"),
        (["0", "1"], [0.1, 0.2], "must be 0/1 numbers"),
        ([], [], "nothing to evaluate"),
        ([[0, 1], [1, 0]], [0.1, 0.2], r"1-D array .* shape \(2, 2\)"),
    ],
)
def test_invalid_inputs_raise_errors_that_say_what_is_wrong(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        M.roc_auc(labels, scores)


def test_probability_checks_and_argument_checks():
    with pytest.raises(ValueError, match=r"1 lie outside, at indices \[2\]. Pass sigmoid\(logits\)"):
        M.evaluate(Y, [0.1, 0.4, 2.5, 0.8, 0.5, 0.5], M.choose_thresholds(*_case(1)))
    for target in (0.0, 1.5):
        with pytest.raises(ValueError, match="target_sensitivity"):
            M.choose_thresholds(Y, P, target_sensitivity=target)
    with pytest.raises(ValueError, match="n_resamples"):
        M.evaluate(Y, P, M.choose_thresholds(*_case(1)), n_resamples=-1)
    with pytest.raises(ValueError, match="n_bins"):
        M.calibration_table(Y, P, n_bins=0)
    # Keras' (n, 1) predictions and boolean labels are accepted; logits are fine for ranking metrics.
    assert M.roc_auc(np.array(Y, bool), np.array(P)[:, None]) == pytest.approx(13 / 18)
    assert M.roc_auc(Y, np.log(np.array(P) / (1 - np.array(P)))) == pytest.approx(13 / 18)


def test_metrics_import_without_tensorflow_torch_or_sklearn():
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['sklearn'] = None\n"
        "import tf_fracture.metrics as m\n"
        "t = m.choose_thresholds([0, 1, 0, 1], [0.1, 0.8, 0.4, 0.6])\n"
        "r = m.evaluate([0, 1, 1, 0], [0.2, 0.9, 0.3, 0.5], t, n_resamples=10)\n"
        "assert r.ranking['auroc'].value == 0.75\n"
        "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'torch', 'sklearn')"
        " and sys.modules[k] is not None)\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
