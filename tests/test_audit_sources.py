"""Where audit records come from (`tf_fracture.audit.sources`): folders, FracAtlas's layout, TFDS builders."""

import os

import cv2
import pytest
from audit_helpers import radiograph, tiny_tfds_builder

from tf_fracture.audit import audit, records_from_folder, records_from_tfds

FRACATLAS_DUMMY = os.path.join(os.path.dirname(__file__), "..", "datasets", "fracatlas", "dummy_data", "FracAtlas")
FRACATLAS = os.environ.get("TF_FRACTURE_FRACATLAS")


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    return tiny_tfds_builder(data_dir), data_dir


def class_folders(root, counts):
    """`counts` images in each named folder under `root`."""
    seed = 0
    for folder, n in counts.items():
        (root / folder).mkdir(parents=True)
        for _ in range(n):
            cv2.imwrite(str(root / folder / f"{seed}.png"), radiograph(seed, size=32))
            seed += 1
    return root


def test_fracatlas_layout_counts_fractured_as_positive():
    # FracAtlas's folders sort `Fractured` before `Non_fractured`; numbering them in that order
    # would read the positive fraction as 18/25 instead of 7/25.
    source = records_from_folder(os.path.join(FRACATLAS_DUMMY, "images"), labels_from_parent=True)
    assert (source.label_names, source.positive_label) == (("Non_fractured", "Fractured"), 1)
    labels = {r.key: r.label for r in source.records}
    assert len(labels) == 25
    assert {k for k, label in labels.items() if label == 1} == {
        f"Fractured/{name}" for name in os.listdir(os.path.join(FRACATLAS_DUMMY, "images", "Fractured"))
    }
    report = audit(source.records, label_names=source.label_names, positive_label=source.positive_label)
    (balance,) = report.class_balance
    assert balance.counts == {0: 18, 1: 7}
    assert balance.fraction_positive == pytest.approx(7 / 25)
    assert "positive class: Fractured (1)" in report.to_text()


def test_named_positive_folder(tmp_path):
    root = class_folders(tmp_path / "images", {"cats": 2, "dogs": 3})
    with pytest.raises(ValueError, match=r"\['cats', 'dogs'\].*--positive"):
        records_from_folder(root, labels_from_parent=True)
    source = records_from_folder(root, labels_from_parent=True, positive="cats")
    assert (source.label_names, source.positive_label) == (("dogs", "cats"), 1)
    assert sorted(r.label for r in source.records) == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="birds"):
        records_from_folder(root, labels_from_parent=True, positive="birds")
    with pytest.raises(ValueError, match="labels_from_parent"):
        records_from_folder(root, positive="cats")


def test_other_numbers_of_folders_are_sorted_and_positive_only_by_name(tmp_path):
    root = class_folders(tmp_path / "images", {"normal": 1, "displaced": 2, "hairline": 1})
    source = records_from_folder(root, labels_from_parent=True)
    assert (source.label_names, source.positive_label) == (("displaced", "hairline", "normal"), None)
    source = records_from_folder(root, labels_from_parent=True, positive="hairline")
    assert source.positive_label == 1
    report = audit(source.records, label_names=source.label_names, positive_label=source.positive_label)
    assert report.class_balance[0].fraction_positive == pytest.approx(1 / 4)


def test_tfds_builder_is_read_without_the_registry(tiny_tfds):
    builder, _ = tiny_tfds
    source = records_from_tfds(builder)
    assert source.name == "TFDS dataset audit_tiny_dataset"
    assert (source.label_names, source.positive_label) == (("normal", "fractured"), 1)
    assert sorted((r.key, r.split, r.label, r.patient_id) for r in source.records) == [
        ("x.png", "train", 0, "p1"),
        ("x_copy.png", "test", 0, "p3"),
        ("y.png", "train", 1, "p2"),
        ("z.png", "test", 1, "p2"),
    ]
    assert records_from_tfds(builder, positive="normal").positive_label == 0


@pytest.mark.large
@pytest.mark.skipif(
    not FRACATLAS, reason="TF_FRACTURE_FRACATLAS is not set (CI sets it to ../shared/fracatlas/FracAtlas)"
)
def test_real_fracatlas_positive_fraction_and_findings():
    # About 15 s on 2 CPU cores: the numbers datasets/fracatlas/README.md reports.
    source = records_from_folder(os.path.join(FRACATLAS, "images"), labels_from_parent=True)
    report = audit(source.records, label_names=source.label_names, positive_label=source.positive_label)
    assert source.label_names == ("Non_fractured", "Fractured")
    (balance,) = report.class_balance
    assert balance.total == 4083
    assert round(balance.fraction_positive, 3) == 0.176
    summary = report.summary()
    assert summary["corrupt_files"] == 59
    assert (summary["exact_duplicate_groups"], summary["exact_duplicate_files"]) == (78, 161)
    assert (summary["near_duplicate_groups"], summary["near_duplicate_files"]) == (14, 37)
    clashes = {g.keys for g in report.conflicting_groups}
    assert ("Fractured/IMG0004262.jpg", "Non_fractured/IMG0002952.jpg") in clashes
    assert sum(g.kind == "exact" for g in report.conflicting_groups) == 3
    assert sum(g.kind == "near" for g in report.conflicting_groups) == 1
    assert "positive class: Fractured (1)" in report.to_text()
