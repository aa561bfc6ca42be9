"""Paired statistics and AUROC within strata: against scikit-learn on the subsets, against loop
transcriptions of the bootstrap (the same draws item by item), and the pairing shown to matter."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tf_fracture import metrics
from tf_fracture.metrics.bootstrap import resampled_item_weights


def drawn(rng, n=120, prevalence=0.35, noise=0.3):
    labels = (rng.random(n) < prevalence).astype(int)
    a = rng.normal(size=n) + 1.2 * labels
    b = a + noise * rng.normal(size=n)  # a second run, strongly correlated with the first
    return labels, a, b


def loop_auroc_difference(labels, a, b, n_resamples, seed, confidence=0.95):
    """The paired bootstrap spelled out: per resample, positives then negatives drawn with replacement from
    one generator (as the library draws them), both AUROCs on the SAME drawn items."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    differences, first = [], []
    # All resamples' positives in one call, then their negatives: the order the library draws them in.
    draws_pos = pos[rng.integers(0, pos.size, (n_resamples, pos.size))]
    draws_neg = neg[rng.integers(0, neg.size, (n_resamples, neg.size))]
    for p, q in zip(draws_pos, draws_neg, strict=True):
        items = np.concatenate([p, q])
        auc_a = roc_auc_score(labels[items], a[items])
        auc_b = roc_auc_score(labels[items], b[items])
        first.append(auc_a)
        differences.append(auc_a - auc_b)
    tail = 100 * (1 - confidence) / 2
    return np.percentile(differences, [tail, 100 - tail]), np.percentile(first, [tail, 100 - tail])


def test_auroc_difference_equals_scikit_learn_and_a_loop_bootstrap(rng):
    labels, a, b = drawn(rng)
    result = metrics.paired_auroc_difference(labels, a, b, n_resamples=300, seed=7)
    expected = roc_auc_score(labels, a) - roc_auc_score(labels, b)
    assert result.difference.value == pytest.approx(expected, abs=1e-12)
    assert result.auroc_a.value == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert result.n == 120 and result.n_positive == int(labels.sum())
    (low, high), (low_a, high_a) = loop_auroc_difference(labels, a, b, 300, 7)
    assert (result.difference.ci_low, result.difference.ci_high) == pytest.approx((low, high), abs=1e-12)
    assert (result.auroc_a.ci_low, result.auroc_a.ci_high) == pytest.approx((low_a, high_a), abs=1e-12)
    # Each run's own interval is evaluate's for the same seed (the same class-stratified resamples).
    thresholds = metrics.choose_thresholds(labels[::-1], np.linspace(0, 1, labels.size))
    sigmoid = 1 / (1 + np.exp(-a))
    assert metrics.evaluate(labels, sigmoid, thresholds, n_resamples=300, seed=7).ranking["auroc"] == result.auroc_a


def test_pairing_narrows_the_interval_of_the_difference(rng):
    labels, a, b = drawn(rng, n=200, noise=0.2)
    paired = metrics.paired_auroc_difference(labels, a, b, n_resamples=1000, seed=0).difference
    # Unpaired: the two runs' AUROCs from independent resamples (the wrong way to compare).
    alone_a = metrics.auroc_estimate(labels, a, n_resamples=1000, seed=1)
    alone_b = metrics.auroc_estimate(labels, b, n_resamples=1000, seed=2)
    paired_width = paired.ci_high - paired.ci_low
    assert paired_width < 0.5 * (alone_a.ci_high - alone_a.ci_low)
    assert paired_width < 0.5 * (alone_b.ci_high - alone_b.ci_low)
    assert paired.ci_low <= paired.value <= paired.ci_high


def test_auroc_difference_resamples_whole_groups(rng):
    labels, a, b = drawn(rng, n=60)
    # One group per item, named in item order: the same resamples as the ungrouped bootstrap.
    singletons = np.array([f"{i:03d}" for i in range(60)])
    grouped = metrics.paired_auroc_difference(labels, a, b, n_resamples=200, seed=3, groups=singletons)
    plain = metrics.paired_auroc_difference(labels, a, b, n_resamples=200, seed=3)
    assert grouped.difference == plain.difference and grouped.bootstrap["n_groups"] == 60
    # Pairs of items of one label as patients: other resamples, the same point estimate.
    order = np.argsort(labels, kind="stable")
    patients = np.empty(60, dtype=object)
    patients[order] = [f"p{i // 2}" for i in range(60)]
    by_patient = metrics.paired_auroc_difference(labels, a, b, n_resamples=200, seed=3, groups=patients)
    assert by_patient.difference.value == plain.difference.value
    assert by_patient.difference != plain.difference  # other intervals
    assert by_patient.bootstrap["n_groups"] == 30 and "whole groups" in by_patient.bootstrap["method"]


def test_paired_change_by_hand_and_against_a_loop_bootstrap():
    reference = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    changed = np.array([-1.0, 1.0, 3.0, 1.0, 2.5])  # down, tie, up, down, down
    result = metrics.paired_change(reference, changed, n_resamples=0)
    assert result.mean_change.value == pytest.approx(np.mean(changed - reference))
    assert (result.n_lower, result.n_tied, result.n_higher) == (3, 1, 1)
    assert result.share_lower.value == pytest.approx(3.5 / 5) and result.share_higher.value == pytest.approx(1.5 / 5)
    assert result.mean_change.ci_low is None

    r = np.random.default_rng(4)
    reference, changed = r.normal(size=40), r.normal(size=40) - 0.3
    result = metrics.paired_change(reference, changed, n_resamples=500, seed=9)
    draws = np.random.default_rng(9).integers(0, 40, (500, 40))
    d = changed - reference
    means = d[draws].mean(axis=1)
    higher = ((d > 0) + 0.5 * (d == 0))[draws].mean(axis=1)
    assert (result.mean_change.ci_low, result.mean_change.ci_high) == pytest.approx(
        tuple(np.percentile(means, [2.5, 97.5])), abs=1e-12
    )
    assert (result.share_higher.ci_low, result.share_higher.ci_high) == pytest.approx(
        tuple(np.percentile(higher, [2.5, 97.5])), abs=1e-12
    )
    assert result.share_lower.ci_low == pytest.approx(1 - result.share_higher.ci_high)


def test_mean_estimate_and_groups():
    values = np.array([1, 0, 1, 1, 0, 1], float)
    assert metrics.mean_estimate(values, n_resamples=0).value == pytest.approx(4 / 6)
    # Two patients of three images each, all ones and all zeros: a resample holds 0, 1 or 2 copies of
    # the first patient, so the means are 0, 1/2 or 1 only (items resampled alone give sixths).
    grouped = np.repeat([1.0, 0.0], 3)
    estimate = metrics.mean_estimate(grouped, n_resamples=400, seed=0, groups=np.repeat(["a", "b"], 3))
    assert estimate.ci_low == 0.0 and estimate.ci_high == 1.0
    draws = resampled_item_weights(6, 50, np.random.default_rng(0), groups=np.repeat(["a", "b"], 3))
    weights = np.concatenate(list(draws))
    assert weights.shape == (50, 6) and set(np.unique(weights @ grouped / 6)) <= {0.0, 0.5, 1.0}


def test_paired_inputs_are_checked():
    with pytest.raises(ValueError, match="one pair per item"):
        metrics.paired_change([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.paired_change([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="needs both classes"):
        metrics.paired_auroc_difference([1, 1], [0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError, match="n_resamples"):
        metrics.mean_estimate([1.0], n_resamples=-1)
    with pytest.raises(ValueError, match="one per item"):
        metrics.paired_change([1.0, 2.0], [1.0, 3.0], groups=["a"])


def test_stratified_auroc_equals_scikit_learn_on_each_subset(rng):
    n = 300
    labels = (rng.random(n) < 0.4).astype(int)
    region = rng.choice(["hand", "leg", "hip"], n)
    hardware = rng.random(n) < 0.2
    # A score that is mostly the region: AUROC overall > within region.
    prevalence = {"hand": 0.8, "leg": 0.2, "hip": 0.5}
    scores = np.array([prevalence[r] for r in region]) + 0.1 * rng.normal(size=n) + 0.2 * labels
    strata = {"hand": region == "hand", "leg": region == "leg", "without hardware": ~hardware}
    result = metrics.stratified_auroc(labels, scores, strata, n_resamples=200, seed=5)
    assert list(result) == ["hand", "leg", "without hardware"]
    for name, mask in strata.items():
        assert result[name].n == mask.sum() and result[name].n_positive == labels[mask].sum()
        assert result[name].auroc.value == pytest.approx(roc_auc_score(labels[mask], scores[mask]), abs=1e-12)
        expected = metrics.auroc_estimate(labels[mask], scores[mask], n_resamples=200, seed=5)
        assert result[name].auroc == expected and result[name].skipped is None
    assert result["hand"].to_dict()["auroc"]["value"] == result["hand"].auroc.value


def test_a_stratum_of_one_class_or_none_is_kept_with_its_reason():
    labels = np.array([0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.7])
    result = metrics.stratified_auroc(
        labels, scores, {"positives": labels == 1, "empty": np.zeros(5, bool)}, n_resamples=0
    )
    assert result["positives"].auroc is None and "one class only (3 of 3 positive)" in result["positives"].skipped
    assert result["empty"].n == 0 and result["empty"].skipped == "no item in this stratum"
    with pytest.raises(ValueError, match="boolean mask of shape"):
        metrics.stratified_auroc(labels, scores, {"bad": np.array([0, 1, 0, 1, 1])})
