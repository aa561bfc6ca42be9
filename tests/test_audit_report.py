"""The audit and its report (`tf_fracture.audit.report`): planted findings, text, JSON, class names."""

import json

import pytest
from audit_helpers import FLAGGED, THRESHOLD, planted_records

from tf_fracture.audit import AuditRecord, audit


def test_audit_flags_exactly_the_planted_problems():
    report = audit(planted_records(), near_threshold=THRESHOLD, source="planted", label_names=["negative", "positive"])

    (exact,) = report.exact_groups
    assert exact.keys == ("dup_test.png", "dup_train.png")
    assert exact.spans_splits and not exact.labels_conflict

    (near,) = report.near_groups
    assert near.keys == ("near_a.png", "near_b.jpg")
    assert near.labels_conflict and not near.spans_splits
    assert 0 <= near.max_distance <= THRESHOLD
    assert report.conflicting_groups == (near,)

    (overlap,) = report.patient_overlap
    assert overlap.patient_id == "leaky"
    assert overlap.files == {"train": ("patient_train.png",), "test": ("patient_test.png",)}

    assert report.corrupt == (("broken.png", "validation", "truncated PNG data (no IEND chunk)"),)
    assert set(report.flagged_keys) == FLAGGED

    balance = {b.split: b for b in report.class_balance}
    assert [b.split for b in report.class_balance] == ["train", "validation", "test"]
    assert balance["train"].total == 7 and balance["train"].counts == {0: 4, 1: 3}
    assert balance["train"].fraction_positive == pytest.approx(3 / 7)
    assert (balance["validation"].total, balance["validation"].corrupt, balance["validation"].counts) == (2, 1, {1: 2})
    assert balance["test"].total == 4
    summary = report.summary()
    assert summary["exact_duplicate_groups_across_splits"] == 1
    assert summary["near_duplicate_groups_across_splits"] == 0
    assert summary["label_conflict_groups"] == 1
    assert summary["flagged_files"] == len(FLAGGED)


def test_report_text_names_every_flagged_file_and_only_those():
    report = audit(planted_records(), near_threshold=THRESHOLD, source="planted")
    text = report.to_text()
    assert text.startswith("Data audit of planted: 13 files")
    assert text.index("Summary") < text.index("Class balance") < text.index("Exact duplicates")
    for key in FLAGGED:
        assert key in text
    assert "clean_" not in text
    assert "ACROSS SPLITS" in text and "LABEL CLASH" in text and "patient leaky" in text


def test_report_text_names_the_class_wherever_it_shows_a_label():
    report = audit(planted_records(), near_threshold=THRESHOLD, source="planted", label_names=["normal", "Fractured"])
    text = report.to_text()
    assert "positive class: Fractured (1)" in text
    header = next(line for line in text.splitlines() if line.lstrip().startswith("split"))
    assert "normal (0)" in header and "Fractured (1)" in header and "positive fraction" in header
    train = next(line for line in text.splitlines() if line.lstrip().startswith("train"))
    assert train.split()[-1] == "0.429"  # 3 of 7
    # Duplicate groups and label clashes show the name next to the number.
    assert "near_a.png [Fractured (1)], near_b.jpg [normal (0)]" in text
    assert any("Fractured (1)" in line and "dup_train.png" in line for line in text.splitlines())


def test_positive_label_chooses_what_the_fraction_counts():
    records = planted_records()
    names = ["Fractured", "Non_fractured"]
    first = audit(records, THRESHOLD, label_names=names, positive_label=0)
    assert first.class_balance[0].fraction_positive == pytest.approx(4 / 7)
    assert "positive class: Fractured (0)" in first.to_text()
    data = first.to_dict()
    assert (data["positive_label"], data["positive_class"]) == (0, "Fractured")
    assert data["class_balance"][0]["fraction_positive"] == pytest.approx(4 / 7)

    none = audit(records, THRESHOLD, label_names=names, positive_label=None)
    assert all(b.fraction_positive is None for b in none.class_balance)
    assert "positive class: none" in none.to_text()
    assert (none.to_dict()["positive_label"], none.to_dict()["positive_class"]) == (None, None)


@pytest.mark.parametrize("bad", [2, -1, True, "1"])
def test_positive_label_must_be_a_label_index(bad):
    with pytest.raises(ValueError, match="positive_label"):
        audit([AuditRecord("a.png", 0)], label_names=["normal", "fractured"], positive_label=bad)


def test_report_dict_round_trips_through_json():
    report = audit(planted_records(), near_threshold=THRESHOLD, source="planted", label_names=["neg", "pos"])
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert (data["positive_label"], data["positive_class"]) == (1, "pos")
    assert set(data["flagged_files"]) == FLAGGED
    assert data["corrupt_files"] == [
        {"key": "broken.png", "split": "validation", "error": data["corrupt_files"][0]["error"]}
    ]
    [exact] = data["duplicates"]["exact"]
    assert [f["key"] for f in exact["files"]] == ["dup_test.png", "dup_train.png"] and exact["spans_splits"]
    assert [f["key"] for f in data["label_conflicts"][0]["files"]] == ["near_a.png", "near_b.jpg"]
    assert data["patient_overlap"] == [
        {"patient_id": "leaky", "files": {"train": ["patient_train.png"], "test": ["patient_test.png"]}}
    ]
    assert data["class_balance"][0]["counts"] == {"0": 4, "1": 3}
