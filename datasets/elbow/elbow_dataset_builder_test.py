"""Elbow builder: file-name rules, manifest, patient-grouped split (dummy data: dummy_data_generation.py)."""

import logging
import shutil
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from tf_fracture_datasets.elbow import elbow_dataset_builder
from tf_fracture_datasets.elbow.labels import (
    DEFAULT_LABEL_RULES,
    LabelRulesError,
    label_from_filename,
    parse_label,
    parse_view,
    patient_id_from_filename,
    view_from_filename,
)

DUMMY = Path(__file__).parent / "dummy_data"
NORMAL, INJURY = 0, 1


class ElbowTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = elbow_dataset_builder.Builder
    # 26 images: one matches no rule, one is unreadable.
    SPLITS = {"train": 19, "validation": 2, "test": 3}


@pytest.mark.parametrize(
    "name, expected",
    [
        ("P0012_AP_supracondylar_fracture.png", INJURY),
        ("supracondylar.png", INJURY),
        ("P1_Fracture.PNG", INJURY),
        ("fractured_radial_head.jpg", INJURY),
        ("olecranon-fx-2.png", INJURY),
        ("lateral dislocation 3.jpg", INJURY),
        ("P2_dislocated.png", INJURY),
        ("posterior_subluxation.png", INJURY),
        ("P9_fracture_dislocation.png", INJURY),
        ("contusion_fracture.png", INJURY),  # a fracture next to a contusion is still a fracture
        ("P7_contusion.png", NORMAL),
        ("bruising 4.jpg", NORMAL),
        ("P3_fracture_cast.png", NORMAL),
        ("fracture in plaster.png", NORMAL),
        ("P4_fracture_K-wires.png", NORMAL),
        ("P4 fracture kwire.png", NORMAL),
        ("supracondylar_fracture_wires.png", NORMAL),
        ("fracture_plate_2.png", NORMAL),
        ("P9_ORIF_plate_screws.png", NORMAL),
        ("olecranon_fracture_screw_fixation.png", NORMAL),
        ("dislocation_reduced.png", NORMAL),
        ("normal_12.png", NORMAL),
        ("NORMAL.jpg", NORMAL),
        ("P8_AP_no_fracture.png", NORMAL),
        ("nonfractured_1.png", NORMAL),
        ("gibberish.png", None),
        ("scan_0042.png", None),
        ("IMG_20240101.jpg", None),
        ("", None),
        # Whole tokens only: no keyword hides inside another word.
        ("abnormalities.png", None),
        ("castle.png", None),
        ("template.png", None),
        ("pinpoint.png", None),
    ],
)
def test_label_from_filename(name, expected):
    assert label_from_filename(name) == expected


def test_folders_and_extension_are_ignored():
    assert label_from_filename("fractures/normal_1.png") == NORMAL
    assert label_from_filename("normal/P1_fracture.png") == INJURY
    assert label_from_filename("P1.fracture") is None  # the extension is not a word


def test_rules_argument_is_used():
    rules = DEFAULT_LABEL_RULES.with_changes(remove={"treatment": ["cast"]})
    assert label_from_filename("P3_fracture_cast.png") == NORMAL
    assert label_from_filename("P3_fracture_cast.png", rules) == INJURY


@pytest.mark.parametrize(
    "name, view",
    [
        ("P0012_AP_supracondylar_fracture.png", "ap"),
        ("P1 PA.png", "ap"),
        ("frontal_view_2.png", "ap"),
        ("lateral dislocation 3.jpg", "lateral"),
        ("P5_LAT_fracture.png", "lateral"),
        ("P5_AP_lateral_condyle_fracture.png", "ap"),  # the lateral condyle is anatomy, not the view
        ("P5_lateral_epicondyle_avulsion.png", "unknown"),
        ("P5_AP_and_lateral.png", "unknown"),  # both: ambiguous
        ("normal_12.png", "unknown"),
        ("apex_fracture.png", "unknown"),
    ],
)
def test_view_from_filename(name, view):
    assert view_from_filename(name) == view


@pytest.mark.parametrize(
    "name, patient",
    [
        ("P0012_AP_supracondylar_fracture.png", "12"),
        ("P12_lateral.png", "12"),
        ("p7_contusion.png", "7"),
        ("patient_21_AP_dislocation.png", "21"),
        ("Patient-4 AP K-wires.png", "4"),
        ("pt 9 fracture.png", "9"),
        ("P0_normal.png", "0"),
        ("lateral dislocation 3.jpg", None),
        ("normal_12.png", None),
        ("AP12_fracture.png", None),  # "AP12" is not patient 12
        ("ward9/normal_1.png", None),  # folders are not searched
    ],
)
def test_patient_id_from_filename(name, patient):
    assert patient_id_from_filename(name) == patient


def test_patient_id_custom_pattern():
    assert patient_id_from_filename("MRN-00123_fracture.png", r"MRN-(\d+)") == "00123"


def test_manifest_cells():
    assert parse_label(" Injury ") == INJURY and parse_label("0") == NORMAL and parse_label("") is None
    assert parse_view("LAT") == "lateral" and parse_view("AP") == "ap" and parse_view("") is None
    with pytest.raises(ValueError, match="normal, injury"):
        parse_label("fracture")
    with pytest.raises(ValueError, match="ap, lateral, unknown"):
        parse_view("oblique")


def build(tmp_path, manual_dir=DUMMY, config=None):
    builder = elbow_dataset_builder.Builder(data_dir=str(tmp_path / "data"), config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    by_split = {
        split: {e["filename"].decode(): e for e in tfds.as_numpy(builder.as_dataset(split=split))}
        for split in builder.info.splits
    }
    return builder, by_split


@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    return build(tmp_path_factory.mktemp("elbow"))


def assert_no_patient_in_two_splits(by_split):
    seen = {}
    for split, rows in by_split.items():
        for example in rows.values():
            patient = example["patient_id"].decode()
            if patient:
                assert seen.setdefault(patient, split) == split, f"patient {patient} in {seen[patient]} and {split}"
    return seen


def test_no_patient_in_two_splits(default_build):
    _, by_split = default_build
    patients = assert_no_patient_in_two_splits(by_split)
    assert set(patients) == {"12", "3", "7", "21", "4", "5", "8", "9", "30"}


def test_unmatched_and_unreadable_files_are_excluded_and_listed(default_build, tmp_path, caplog):
    builder, by_split = default_build
    every_file = {name for rows in by_split.values() for name in rows}
    assert "scan_0042.png" not in every_file and "P31_AP_fracture.jpg" not in every_file
    assert "notes.txt" not in every_file
    assert len(every_file) == 24
    assert builder.info.metadata["unmatched"] == {"scan_0042.png": "no rule matches"}
    assert builder.info.metadata["label_rules"] == DEFAULT_LABEL_RULES.to_dict()
    assert builder.info.metadata["label_rules_file"] == ""
    assert set(builder.info.metadata["unreadable"]) == {"P31_AP_fracture.jpg"}
    with caplog.at_level(logging.WARNING):
        build(tmp_path)
    assert "match no labelling rule" in caplog.text and "\n  scan_0042.png: no rule matches" in caplog.text
    assert "P31_AP_fracture.jpg" in caplog.text


def test_examples_carry_what_the_names_say(default_build):
    _, by_split = default_build
    rows = {name: example for split in by_split.values() for name, example in split.items()}
    views = ("ap", "lateral", "unknown")
    example = rows["P0012_AP_supracondylar_fracture.png"]
    assert (example["label"], views[example["view"]], example["patient_id"]) == (INJURY, "ap", b"12")
    example = rows["ward2/P30_lateral_normal.png"]
    assert (example["label"], views[example["view"]], example["patient_id"]) == (NORMAL, "lateral", b"30")
    assert rows["P3_fracture_cast.png"]["label"] == NORMAL
    assert rows["lateral dislocation 3.jpg"]["patient_id"] == b""
    assert rows["P7_AP_contusion.jpg"]["image"].shape[-1] == 1


def test_scan_manual_dir():
    scan = elbow_dataset_builder.scan_manual_dir(str(DUMMY), elbow_dataset_builder.ElbowConfig(name="scan"))
    assert scan.unmatched == {"scan_0042.png": "no rule matches"} and scan.missing == {}
    assert len(scan.items) == 25  # 26 images (notes.txt is not one), one unmatched; unreadable is found later
    items = {item.key: item for item in scan.items}
    assert items["ward2/P30_AP_normal.png"] == elbow_dataset_builder.ElbowItem(
        key="ward2/P30_AP_normal.png", label=NORMAL, view="ap", patient_id="30", source="filename"
    )
    assert items["Patient-4 AP K-wires.png"].label == NORMAL


def test_split_is_deterministic(default_build, tmp_path):
    _, first = default_build
    _, second = build(tmp_path)
    assert {s: sorted(r) for s, r in first.items()} == {s: sorted(r) for s, r in second.items()}


def test_manifest_overrides_file_names(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY, manual)
    (manual / "manifest.csv").write_text(
        "path,label,patient_id,view\n"
        "scan_0042.png,injury,40,AP\n"  # an unmatched name, labelled by the manifest
        "normal_12.png,injury,,\n"  # the manifest's label wins over the name
        "lateral dislocation 3.jpg,,41,\n"  # label from the name, patient from the manifest
        "P7_contusion.png,,,lateral\n"  # view from the manifest
        "missing.png,normal,,\n"  # no such file: reported
    )
    builder, by_split = build(tmp_path, manual)
    rows = {name: example for split in by_split.values() for name, example in split.items()}
    assert rows["scan_0042.png"]["label"] == INJURY and rows["scan_0042.png"]["patient_id"] == b"40"
    assert rows["scan_0042.png"]["view"] == 0
    assert rows["normal_12.png"]["label"] == INJURY
    assert rows["lateral dislocation 3.jpg"]["label"] == INJURY
    assert rows["lateral dislocation 3.jpg"]["patient_id"] == b"41"
    assert rows["P7_contusion.png"]["view"] == 1 and rows["P7_contusion.png"]["patient_id"] == b"7"
    assert builder.info.metadata["unmatched"] == {}
    assert set(builder.info.metadata["missing"]) == {"missing.png"}
    assert len(rows) == 25
    assert_no_patient_in_two_splits(by_split)


def test_too_few_images_for_three_splits(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in ("P1_fracture.png", "P2_normal.png"):
        shutil.copy(DUMMY / "normal_12.png", manual / name)
    with pytest.raises(ValueError, match="too few"):
        build(tmp_path, manual)


def test_bad_manifest_rows_are_named(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY, manual)
    (manual / "manifest.csv").write_text("path,label\nnormal_12.png,maybe\n")
    with pytest.raises(ValueError, match=r"line 2 \(normal_12\.png\)"):
        build(tmp_path, manual)
    (manual / "manifest.csv").write_text("file,class\nnormal_12.png,normal\n")
    with pytest.raises(ValueError, match="path,label"):
        build(tmp_path, manual)


def test_custom_config_rules(tmp_path):
    # Rules in which a cast does not make a fracture normal, and contusions are not labelled.
    rules = DEFAULT_LABEL_RULES.with_changes(remove={"treatment": ["cast"], "minor": ["contusion"]})
    config = elbow_dataset_builder.ElbowConfig(name="strict", label_rules=rules)
    builder, by_split = build(tmp_path, config=config)
    rows = {name: example for split in by_split.values() for name, example in split.items()}
    assert rows["P3_fracture_cast.png"]["label"] == INJURY
    assert builder.info.metadata["unmatched"]["P7_contusion.png"] == "no rule matches"


def test_rule_file_in_manual_dir_is_applied(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY, manual)
    (manual / "label_rules.json").write_text(
        '{"comment": "our scans are all fractures", "add": {"injury": ["scan"]}, "remove": {"treatment": ["cast"]}}'
    )
    builder, by_split = build(tmp_path, manual)
    rows = {name: example for split in by_split.values() for name, example in split.items()}
    assert rows["scan_0042.png"]["label"] == INJURY  # unmatched by default
    assert rows["P3_fracture_cast.png"]["label"] == INJURY  # normal by default
    assert builder.info.metadata["unmatched"] == {}
    assert builder.info.metadata["label_rules_file"].endswith("manual/label_rules.json")
    assert "scan" in builder.info.metadata["label_rules"]["injury"]
    scan = elbow_dataset_builder.scan_manual_dir(str(manual), elbow_dataset_builder.ElbowConfig(name="scan"))
    assert scan.rules == DEFAULT_LABEL_RULES.with_changes(add={"injury": ["scan"]}, remove={"treatment": ["cast"]})


def test_bad_rule_file_stops_the_build_naming_it(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY, manual)
    (manual / "label_rules.json").write_text('{"add": {"injuries": ["scan"]}}')
    with pytest.raises(LabelRulesError, match=r"manual/label_rules\.json: `add` names the unknown category 'injuries'"):
        build(tmp_path, manual)
    config = elbow_dataset_builder.ElbowConfig(name="other_name", rules_file="rules/ward7.json")
    (manual / "rules").mkdir()
    (manual / "rules" / "ward7.json").write_text("{not json")
    with pytest.raises(LabelRulesError, match=r"rules/ward7\.json is not valid JSON"):
        elbow_dataset_builder.scan_manual_dir(str(manual), config)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patient_id_pattern": r"P\d+"}, "group"),
        ({"patient_id_pattern": r"P(\d+"}, "not a valid regex"),
        ({"train": 0.8, "validation": 0.1, "test": 0.2}, "summing to 1"),
        ({"label_rules": {"normal": ["x"]}}, "LabelRules"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        elbow_dataset_builder.ElbowConfig(name="bad", **kwargs)


if __name__ == "__main__":
    tfds.testing.test_main()
