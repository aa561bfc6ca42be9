"""python -m tf_fracture.data.export_split: TFDS splits -> PNGs + manifest, identical to what the CNN side reads."""

import csv
import json
import os

import numpy as np
import pytest

from tf_fracture.data.export_split import main
from tf_fracture.data.io import read_image
from tf_fracture.data.sources import load_split, split_metadata

FRACATLAS = os.environ.get("TF_FRACTURE_FRACATLAS")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def export(tiny_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export") / "synthetic")
    argv = ["--dataset", "synthetic_xray", "--builder-config", "tiny", "--data-dir", tiny_dir, "--out", out]
    assert main([*argv, "--split", "test", "--split", "validation"]) == 0
    return out, argv


def _manifest(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_export_holds_the_split_the_cnn_side_reads(export, tiny_dir):
    out, _ = export
    for split in ("test", "validation"):
        rows = _manifest(os.path.join(out, split, "manifest.csv"))
        examples = list(load_split("synthetic_xray", split, builder_config="tiny", data_dir=tiny_dir))
        assert len(rows) == len(examples) == 8
        for row, example in zip(rows, examples, strict=True):  # same order, same images, same labels
            assert row["label"] == str(int(example["label"]))
            assert row["filename"] == example["filename"].numpy().decode()
            assert row["group"] == example["patient_id"].numpy().decode()
            assert row["file"] == f"images/{row['id']}.png"
            image = read_image(os.path.join(out, split, row["file"]))
            np.testing.assert_array_equal(image, example["image"].numpy()[..., 0])  # lossless
        assert set(rows[0]) >= {"id", "file", "label", "filename", "group", "fracture_kind", "num_bones"}
    assert not os.path.exists(os.path.join(out, "train"))  # only the splits asked for


def test_dataset_json(export, tiny_dir):
    out, _ = export
    with open(os.path.join(out, "dataset.json")) as f:
        info = json.load(f)
    split = load_split("synthetic_xray", "test", builder_config="tiny", data_dir=tiny_dir, decode_images=False)
    meta = split_metadata("synthetic_xray", split)
    assert info["dataset"] == "synthetic_xray" and info["builder_config"] == "tiny" and info["version"] == "1.2.0"
    assert info["splits"]["test"] == {"n": 8, "n_positive": int(meta["labels"].sum())}
    assert set(info["splits"]) == {"test", "validation"}
    assert info["class_names"] == ["normal", "fracture"]


def test_rerunning_resumes_and_leaves_a_finished_export_alone(export, capsys):
    out, argv = export
    test_dir = os.path.join(out, "test")
    rows = _manifest(os.path.join(test_dir, "manifest.csv"))
    lost = os.path.join(test_dir, rows[0]["file"])
    damaged = os.path.join(test_dir, rows[1]["file"])
    kept = os.path.join(test_dir, rows[2]["file"])
    original = open(damaged, "rb").read()
    os.remove(lost)  # an interrupted export
    with open(damaged, "wb") as f:
        f.write(original[:20])  # a half-written file
    kept_mtime = os.stat(kept).st_mtime_ns
    capsys.readouterr()
    assert main([*argv, "--split", "test", "--split", "train"]) == 0
    assert "8 images (2 written)" in capsys.readouterr().out
    assert open(damaged, "rb").read() == original and os.path.isfile(lost)
    assert os.stat(kept).st_mtime_ns == kept_mtime  # untouched
    with open(os.path.join(out, "dataset.json")) as f:
        assert set(json.load(f)["splits"]) == {"test", "validation", "train"}  # splits accumulate
    assert not [n for n in os.listdir(os.path.join(test_dir, "images")) if n.startswith(".tmp")]


def test_another_dataset_into_the_same_folder_is_refused(export, capsys):
    out, _ = export
    with pytest.raises(SystemExit):
        main(["--dataset", "synthetic_xray", "--out", out, "--split", "test"])
    assert "holds an export of synthetic_xray/tiny" in capsys.readouterr().err


def test_a_cnn_runs_config_gives_the_data(export, tiny_dir, tmp_path, capsys):
    from tf_fracture.configs import get_experiment

    # The run's own data (dataset, builder config, data dir, test split): the export is what that run scored.
    experiment = get_experiment("demo").override(
        ["data.builder_config=tiny", f"data.data_dir={tiny_dir}", "data.test_split=validation"]
    )
    experiment.to_json(tmp_path / "config.json")
    out = tmp_path / "from_run"
    assert main(["--config", str(tmp_path / "config.json"), "--out", str(out), "--split", "validation"]) == 0
    theirs = os.path.join(export[0], "validation", "manifest.csv")
    assert _manifest(out / "validation" / "manifest.csv") == _manifest(theirs)
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "config.json"), "--dataset", "mura", "--out", str(out)])
    assert "drop --dataset" in capsys.readouterr().err


def test_bad_arguments_are_refused_with_a_reason(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path)])
    assert "--dataset NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--dataset", "synthetic_xray", "--builder-config", "tiny", "--out", str(tmp_path), "--split", "test[:2]"])
    assert "whole splits by name" in capsys.readouterr().err


@pytest.mark.large
@pytest.mark.skipif(not FRACATLAS, reason="set TF_FRACTURE_FRACATLAS to the extracted FracAtlas/ folder")
def test_fracatlas_test_split(tmp_path):
    out = str(tmp_path / "fracatlas")
    data_dir = os.environ.get("TF_FRACTURE_TFDS", str(tmp_path / "tfds"))
    assert main(["--dataset", "fracatlas", "--data-dir", data_dir, "--manual-dir", FRACATLAS, "--out", out,
                 "--split", "test"]) == 0  # fmt: skip
    rows = _manifest(os.path.join(out, "test", "manifest.csv"))
    assert 300 < len(rows) < 500 and {r["label"] for r in rows} == {"0", "1"}
    assert {r["body_part"] for r in rows} <= {"hand", "leg", "hip", "shoulder", ""}
    assert len({r["id"] for r in rows}) == len(rows)
