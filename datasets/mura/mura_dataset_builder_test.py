"""MURA builder on a tiny fake MURA-v1.1 tree with planted problems (see dummy_data_generation.py)."""

import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tf_fracture.data.io import read_image
from tf_fracture_datasets.mura import mura_dataset_builder

DUMMY = Path(__file__).parent / "dummy_data"
CORRUPT = "train/XR_WRIST/patient00006/study1_positive/image1.png"
UNLABELLED = "train/XR_WRIST/patient00013/study1_negative/image1.png"
RELABELLED = "train/XR_WRIST/patient00009/study1_negative/image1.png"
RGB = "train/XR_ELBOW/patient00011/study1_negative/image1.png"


class MuraOfficialTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = mura_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["official"]
    # 20 train rows: one unreadable, one without a study label.
    SPLITS = {"train": 18, "valid": 5}


class MuraGroupedValTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = mura_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["grouped_val"]
    SPLITS = {"train": 17, "validation": 1, "test": 5}


def build(tmp_path, config, manual_dir=DUMMY):
    builder = mura_dataset_builder.Builder(data_dir=str(tmp_path / "data"), config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def examples(builder):
    return {
        split: {e["filename"].decode(): e for e in tfds.as_numpy(builder.as_dataset(split=split))}
        for split in builder.info.splits
    }


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    return examples(build(tmp_path_factory.mktemp("grouped"), "grouped_val"))


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    builder = build(tmp_path_factory.mktemp("official"), "official")
    return builder, examples(builder)


@pytest.mark.parametrize("fixture", ["official", "grouped"])
def test_no_patient_in_two_splits(fixture, request):
    by_split = request.getfixturevalue(fixture)
    by_split = by_split[1] if fixture == "official" else by_split
    seen = {}
    for split, rows in by_split.items():
        for example in rows.values():
            patient = example["patient_id"].decode()
            assert seen.setdefault(patient, split) == split, f"{patient} is in {seen[patient]} and {split}"


def test_grouped_val_carves_validation_from_train_only(official, grouped):
    _, by_split = official
    assert set(grouped["train"]) | set(grouped["validation"]) == set(by_split["train"])
    assert set(grouped["test"]) == set(by_split["valid"])
    assert grouped["validation"], "the carved validation split is empty"


def test_problems_are_skipped_and_listed(official, tmp_path, caplog):
    builder, by_split = official
    metadata = builder.info.metadata
    assert set(metadata["unreadable"]) == {CORRUPT}
    assert "truncated" in metadata["unreadable"][CORRUPT]
    assert set(metadata["left_out"]) == {f"MURA-v1.1/{UNLABELLED}"}  # the CSV row, as written
    assert set(metadata["label_disagreements"]) == {"train/XR_WRIST/patient00009/study1_negative"}
    assert CORRUPT not in by_split["train"] and UNLABELLED not in by_split["train"]
    # Reloaded from disk, the lists are still there.
    reloaded = mura_dataset_builder.Builder(data_dir=str(Path(builder.data_dir).parents[2]), config="official")
    assert set(reloaded.info.metadata["unreadable"]) == {CORRUPT}
    # And the build says so in its log, naming each file.
    with caplog.at_level(logging.WARNING):
        build(tmp_path, "official")
    assert CORRUPT in caplog.text and UNLABELLED in caplog.text


def test_features(official):
    _, by_split = official
    train = by_split["train"]
    # Labels are per study, from labeled_studies.csv even where the folder name disagrees.
    assert train[RELABELLED]["label"] == 1
    assert train["train/XR_ELBOW/patient00001/study1_positive/image2.png"]["label"] == 1
    assert train["train/XR_ELBOW/patient00002/study1_negative/image1.png"]["label"] == 0
    example = train["train/XR_ELBOW/patient00003/study2_negative/image1.png"]
    assert example["patient_id"] == b"patient00003"
    assert example["study_id"] == b"XR_ELBOW/patient00003/study2"
    names = mura_dataset_builder.BODY_PARTS
    assert names[example["body_part"]] == "XR_ELBOW"
    assert names[train[RELABELLED]["body_part"]] == "XR_WRIST"
    # The RGB PNG is reduced to one grey channel.
    assert train[RGB]["image"].ndim == 3 and train[RGB]["image"].shape[-1] == 1
    # Pixels are stored losslessly.
    stored = train["train/XR_WRIST/patient00004/study1_negative/image2.png"]["image"][..., 0]
    expected = read_image(DUMMY / "MURA-v1.1/train/XR_WRIST/patient00004/study1_negative/image2.png")
    np.testing.assert_array_equal(stored, expected)


def test_zip_gives_the_same_dataset(official, tmp_path):
    _, from_folder = official
    manual = tmp_path / "manual"
    manual.mkdir()
    with zipfile.ZipFile(manual / "MURA-v1.1.zip", "w") as z:
        for path in sorted((DUMMY / "MURA-v1.1").rglob("*")):
            z.write(path, path.relative_to(DUMMY).as_posix())
    from_zip = examples(build(tmp_path, "official", manual))
    assert {s: set(v) for s, v in from_zip.items()} == {s: set(v) for s, v in from_folder.items()}
    for split, rows in from_zip.items():
        for name, example in rows.items():
            np.testing.assert_array_equal(example["image"], from_folder[split][name]["image"])
            assert example["label"] == from_folder[split][name]["label"]


def test_missing_data_says_where_to_get_it(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "MURA-v1.0.zip").write_bytes(b"not this one")
    with pytest.raises(FileNotFoundError, match=r"aimi\.stanford\.edu"):
        build(tmp_path, "official", tmp_path / "manual")


def test_missing_csv_is_named(tmp_path):
    copy = tmp_path / "manual" / "MURA-v1.1"
    shutil.copytree(DUMMY / "MURA-v1.1", copy)
    (copy / "valid_labeled_studies.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"valid_labeled_studies\.csv"):
        build(tmp_path, "official", tmp_path / "manual")


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_bad_validation_fraction(fraction):
    with pytest.raises(ValueError, match="validation_fraction"):
        mura_dataset_builder.MuraConfig(name="x", validation_fraction=fraction)


if __name__ == "__main__":
    tfds.testing.test_main()
