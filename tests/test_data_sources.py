"""TFDS splits for an experiment: loading, store keys, metadata, and the manual-data error."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tf_fracture.configs import DataConfig, get_experiment
from tf_fracture.data.sources import load_split, source_name, split_metadata

FRACATLAS = os.environ.get("TF_FRACTURE_FRACATLAS")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return DataConfig(dataset="synthetic_xray", builder_config="tiny", data_dir=str(tmp_path_factory.mktemp("tfds")))


def test_load_split_reads_the_configured_split(tiny):
    sizes = {split: sum(1 for _ in load_split(tiny, split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 24, "validation": 8, "test": 8}
    example = next(iter(load_split(tiny, "train")))
    assert example["image"].shape == (64, 64, 1) and example["image"].dtype.name == "uint8"
    # The same order every time (the evaluation relies on it).
    names = [[e["filename"].numpy() for e in load_split(tiny, "test")] for _ in range(2)]
    assert names[0] == names[1]


def test_load_split_by_name_with_keyword_overrides(tiny):
    by_name = load_split("synthetic_xray", "test", builder_config="tiny", data_dir=tiny.data_dir, decode_images=False)
    example = next(iter(by_name))
    assert example["image"].dtype.name == "string"  # still encoded: decoding skipped
    assert [e["filename"].numpy() for e in by_name] == [e["filename"].numpy() for e in load_split(tiny, "test")]


def test_unknown_split_lists_valid_ones(tiny):
    with pytest.raises(ValueError, match="Valid splits: train, validation, test"):
        load_split(tiny, "valid")


def test_source_name():
    assert source_name(DataConfig(dataset="fracatlas"), "test") == "fracatlas/default/1.0.0/test"
    assert source_name("mura", "validation") == "mura/grouped_val/1.0.0/validation"
    assert source_name(get_experiment("demo").data, "train") == "synthetic_xray/default/1.2.0/train"


def test_split_metadata_of_synthetic_xray(tiny):
    split = load_split(tiny, "validation", decode_images=False)
    meta = split_metadata("synthetic_xray", split)
    examples = list(load_split(tiny, "validation"))
    assert all(len(v) == 8 for v in meta.values())
    np.testing.assert_array_equal(meta["labels"], [int(e["label"]) for e in examples])
    assert list(meta["filenames"]) == [e["filename"].numpy().decode() for e in examples]
    assert list(meta["groups"]) == [e["patient_id"].numpy().decode() for e in examples]
    assert "body_parts" not in meta
    for boxes, label, e in zip(meta["boxes"], meta["labels"], examples, strict=True):
        assert boxes.shape == ((1, 4) if label == 1 else (0, 4)) and boxes.dtype == np.float32
        np.testing.assert_array_equal(boxes, e["fracture_boxes"].numpy().reshape(-1, 4))
    assert set(meta["fracture_kind"][meta["labels"] == 0]) == {0}  # 'none' exactly for the normals


def test_missing_manual_dir_says_which_flag_to_set(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--manual-dir.*data\.manual_dir"):
        load_split("fracatlas", "test", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere' does not exist or is empty.*--manual-dir"):
        load_split(DataConfig(dataset="mura", data_dir=str(tmp_path), manual_dir=str(tmp_path / "nowhere")), "train")


@pytest.mark.large
@pytest.mark.skipif(not FRACATLAS, reason="set TF_FRACTURE_FRACATLAS to the extracted FracAtlas/ folder")
def test_fracatlas_from_manual_dir(tmp_path):
    data = DataConfig(dataset="fracatlas", data_dir=str(tmp_path), manual_dir=FRACATLAS)
    meta = split_metadata("fracatlas", load_split(data, "test", decode_images=False))
    n = len(meta["labels"])
    assert 300 < n < 500 and set(meta["labels"]) == {0, 1}
    assert all(len(v) == n for v in meta.values())
    assert set(meta["body_parts"]) <= {-1, 0, 1, 2, 3}
    np.testing.assert_array_equal(meta["body_parts"], [r[0] if len(r) else -1 for r in meta["regions"]])
    # Fractured images have boxes, non-fractured ones none.
    assert all(len(b) > 0 for b in meta["boxes"][meta["labels"] == 1][:20])
    assert all(len(b) == 0 for b in meta["boxes"][meta["labels"] == 0])


def test_an_unregistered_builder_says_how_to_register_it():
    # The library never imports the registry (tests/test_audit_imports.py); a fresh script that did not
    # import tf_fracture.datasets gets told what to do, not TFDS' "dataset not found".
    code = (
        "from tf_fracture.data.sources import load_split\n"
        "try:\n"
        "    load_split('synthetic_xray', 'train', builder_config='tiny', data_dir='/nonexistent')\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "import tf_fracture.datasets" in out.stdout, out.stdout + out.stderr
