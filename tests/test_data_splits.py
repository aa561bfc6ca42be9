"""grouped_stratified_split: deterministic, patient-grouped, stratified."""

import random
import subprocess
import sys
from pathlib import Path

import pytest

from tf_fracture.data.splits import grouped_stratified_split, split_report

FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def make_population(n=1000, seed=0, positive_rate=0.3):
    """`n` keys in patients of 1-4 images; a patient's images mostly share a label; some have no id."""
    rng = random.Random(seed)
    keys, labels, groups = [], [], []
    patient = 0
    while len(keys) < n:
        size = rng.randint(1, 4)
        patient_positive = rng.random() < positive_rate
        anonymous = rng.random() < 0.1
        for _ in range(size):
            keys.append(f"img{len(keys):05d}.png")
            labels.append(int(patient_positive if rng.random() < 0.85 else not patient_positive))
            groups.append(None if anonymous else f"P{patient:04d}")
        patient += 1
    return keys[:n], labels[:n], groups[:n]


def test_deterministic_and_order_independent():
    keys, labels, groups = make_population()
    first = grouped_stratified_split(keys, labels, groups, FRACTIONS, seed=3)
    assert grouped_stratified_split(keys, labels, groups, FRACTIONS, seed=3) == first

    rows = list(zip(keys, labels, groups, strict=True))
    random.Random(99).shuffle(rows)
    shuffled_keys, shuffled_labels, shuffled_groups = map(list, zip(*rows, strict=True))
    reordered_fractions = dict(reversed(list(FRACTIONS.items())))
    assert (
        grouped_stratified_split(shuffled_keys, shuffled_labels, shuffled_groups, reordered_fractions, seed=3) == first
    )


def test_independent_of_hash_randomisation():
    """Two interpreters with different PYTHONHASHSEED give the same split."""
    code = (
        "import json, sys; sys.path.insert(0, 'tests');"
        "from test_data_splits import make_population, FRACTIONS;"
        "from tf_fracture.data.splits import grouped_stratified_split as g;"
        "k, l, gr = make_population(300);"
        "print(json.dumps(g(k, [str(x) for x in l], gr, FRACTIONS, seed=1), sort_keys=True))"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
            cwd=Path(__file__).resolve().parents[1],
        ).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1]


def test_seed_changes_assignment():
    keys, labels, groups = make_population()
    a = grouped_stratified_split(keys, labels, groups, FRACTIONS, seed=0)
    b = grouped_stratified_split(keys, labels, groups, FRACTIONS, seed=1)
    assert a != b


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_groups_are_whole_and_singletons_free(seed):
    keys, labels, groups = make_population(seed=seed)
    split = grouped_stratified_split(keys, labels, groups, FRACTIONS, seed=seed)
    assert set(split) == set(keys)
    splits_of_group = {}
    for key, group in zip(keys, groups, strict=True):
        if group is not None:
            splits_of_group.setdefault(group, set()).add(split[key])
    assert all(len(s) == 1 for s in splits_of_group.values())
    # Anonymous images are singletons: they land in more than one split.
    anonymous_splits = {split[k] for k, g in zip(keys, groups, strict=True) if g is None}
    assert len(anonymous_splits) > 1


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
@pytest.mark.parametrize("positive_rate", [0.1, 0.3, 0.5])
def test_sizes_and_class_balance_follow_fractions(seed, positive_rate):
    keys, labels, groups = make_population(seed=seed, positive_rate=positive_rate)
    split = grouped_stratified_split(keys, labels, groups, FRACTIONS, seed=seed)
    report = split_report(split, dict(zip(keys, labels, strict=True)))
    overall_rate = sum(labels) / len(labels)
    for name, fraction in FRACTIONS.items():
        size = sum(report[name].values())
        assert abs(size - fraction * len(keys)) <= 3, (name, size)
        rate = report[name].get(1, 0) / size
        assert abs(rate - overall_rate) <= 0.015, (name, rate, overall_rate)


@pytest.mark.parametrize("seed", range(5))
def test_small_split_of_a_small_set_is_not_overfilled(seed):
    """40 images in 4 strata (body part x label): 10% validation means about 4 images, not one group per stratum."""
    rng = random.Random(seed)
    keys, labels, groups = [], [], []
    patient = 0
    while len(keys) < 40:
        stratum = rng.choice(["elbow:0", "elbow:1", "wrist:0", "wrist:1"])
        for _ in range(rng.randint(1, 3)):
            keys.append(f"k{len(keys)}")
            labels.append(stratum)
            groups.append(f"p{patient}")
        patient += 1
    split = grouped_stratified_split(keys, labels, groups, {"train": 0.9, "validation": 0.1}, seed=seed)
    validation = sum(1 for v in split.values() if v == "validation")
    assert 2 <= validation <= 6, validation


def test_string_labels_and_more_than_two_classes():
    rng = random.Random(5)
    keys = [f"k{i}" for i in range(600)]
    labels = [rng.choice(["ap", "lateral", "oblique"]) for _ in keys]
    groups = [f"p{i // 3}" for i in range(600)]
    split = grouped_stratified_split(keys, labels, groups, {"a": 0.5, "b": 0.5})
    report = split_report(split, dict(zip(keys, labels, strict=True)))
    for name in ("a", "b"):
        for label in ("ap", "lateral", "oblique"):
            overall = labels.count(label) / 2
            assert abs(report[name][label] - overall) <= 6


def test_empty_string_group_is_singleton_and_zero_fraction_is_empty():
    keys = [f"k{i}" for i in range(20)]
    split = grouped_stratified_split(keys, [i % 2 for i in range(20)], [""] * 20, {"train": 0.5, "x": 0.0, "t": 0.5})
    assert sorted(split.values()).count("train") == 10
    assert "x" not in split.values()


def test_one_big_group_stays_whole():
    split = grouped_stratified_split(["a", "b", "c"], [0, 1, 0], ["p", "p", "p"], FRACTIONS)
    assert len(set(split.values())) == 1


def test_empty_input():
    assert grouped_stratified_split([], [], [], FRACTIONS) == {}


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({"train": 0.8, "test": 0.1}, "sum to 1"),
        ({"train": 0.8, "test": 0.3}, "sum to 1"),
        ({"train": 1.2, "test": -0.2}, ">= 0"),
        ({}, "at least one split"),
        ({"train": float("nan"), "test": 0.5}, ">= 0"),
    ],
)
def test_bad_fractions(fractions, message):
    with pytest.raises(ValueError, match=message):
        grouped_stratified_split(["a", "b"], [0, 1], [None, None], fractions)


def test_float_rounding_in_fractions_is_accepted():
    split = grouped_stratified_split(["a", "b", "c"], [0, 1, 0], [None] * 3, {"a": 0.7, "b": 0.2, "c": 0.1})
    assert set(split) == {"a", "b", "c"}


def test_repeated_keys():
    with pytest.raises(ValueError, match="unique"):
        grouped_stratified_split(["a", "b", "a"], [0, 1, 0], [None] * 3, FRACTIONS)


def test_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        grouped_stratified_split(["a", "b"], [0], [None, None], FRACTIONS)
