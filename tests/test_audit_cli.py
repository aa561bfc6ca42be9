"""The audit's command line (`python -m tf_fracture.audit`): folder and TFDS modes, argument errors."""

import json
import subprocess
import sys

import cv2
import pytest
from audit_helpers import radiograph, tiny_tfds_builder

from tf_fracture.audit.__main__ import main


@pytest.fixture
def image_folder(tmp_path):
    """Two class folders with an exact copy (other bytes), a JPEG copy under the other label, a truncated file."""
    root = tmp_path / "images"
    (root / "fractured").mkdir(parents=True)
    (root / "normal").mkdir()
    a, b = radiograph(10), radiograph(11)
    cv2.imwrite(str(root / "fractured" / "a.png"), a, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    cv2.imwrite(str(root / "fractured" / "a_again.png"), a, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    cv2.imwrite(str(root / "normal" / "a_jpeg.jpg"), a, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(root / "normal" / "b.png"), b)
    for n in range(3):
        cv2.imwrite(str(root / "normal" / f"clean_{n}.png"), radiograph(20 + n))
    data = cv2.imencode(".jpg", b)[1].tobytes()
    (root / "normal" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "normal" / "notes.txt").write_text("not an image")
    return root


def test_folder_mode_end_to_end(image_folder, tmp_path, capsys):
    assert (image_folder / "fractured" / "a.png").read_bytes() != (
        image_folder / "fractured" / "a_again.png"
    ).read_bytes()
    out = tmp_path / "reports" / "audit.json"
    assert main(["--folder", str(image_folder), "--labels-from-parent", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for key in ("fractured/a.png", "fractured/a_again.png", "normal/a_jpeg.jpg", "normal/truncated.jpg"):
        assert key in text
    assert "clean_" not in text and "normal/b.png" not in text
    assert "positive class: fractured (1)" in text
    assert "normal/a_jpeg.jpg [normal (0)]" in text  # the label clash, by name

    data = json.loads(out.read_text())
    # `fractured` is the positive class, label 1, although it sorts first.
    assert data["label_names"] == ["normal", "fractured"]
    assert (data["positive_label"], data["positive_class"]) == (1, "fractured")
    assert data["summary"]["records"] == 8
    assert [c["key"] for c in data["corrupt_files"]] == ["normal/truncated.jpg"]
    assert "truncated JPEG" in data["corrupt_files"][0]["error"]
    [exact] = data["duplicates"]["exact"]
    assert [f["key"] for f in exact["files"]] == ["fractured/a.png", "fractured/a_again.png"]
    [near] = data["duplicates"]["near"]
    assert [(f["key"], f["label"]) for f in near["files"]] == [
        ("fractured/a.png", 1),
        ("fractured/a_again.png", 1),
        ("normal/a_jpeg.jpg", 0),
    ]
    assert near["labels_conflict"] and data["summary"]["label_conflict_groups"] == 1
    assert data["ignored_files"] == ["normal/notes.txt"]
    assert data["class_balance"] == [
        {
            "split": None,
            "total": 8,
            "counts": {"0": 6, "1": 2},
            "unlabelled": 0,
            "corrupt": 1,
            "fraction_positive": 0.25,
        }
    ]


def test_folder_mode_with_a_named_positive(image_folder, tmp_path, capsys):
    out = tmp_path / "audit.json"
    assert (
        main(["--folder", str(image_folder), "--labels-from-parent", "--positive", "Normal", "--json", str(out)]) == 0
    )
    assert "positive class: normal (1)" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["label_names"] == ["fractured", "normal"]
    assert data["class_balance"][0]["fraction_positive"] == 0.75


def test_folder_mode_without_labels(image_folder, capsys):
    assert main(["--folder", str(image_folder)]) == 0
    text = capsys.readouterr().out
    assert "unlabelled" in text and "positive class" not in text


def test_undecidable_folders_exit_2_naming_them(image_folder, capsys):
    (image_folder / "fractured").rename(image_folder / "left")
    (image_folder / "normal").rename(image_folder / "right")
    with pytest.raises(SystemExit) as exit_info:
        main(["--folder", str(image_folder), "--labels-from-parent"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "['left', 'right']" in err and "--positive NAME" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "exactly one"),
        (["mura", "--folder", "."], "exactly one"),
        (["--folder", "/no/such/folder"], "not a directory"),
        (["--folder", ".", "--data-dir", "."], "--data-dir"),
        (["mura", "--labels-from-parent"], "--folder only"),
        (["--folder", ".", "--positive", "x"], "needs --labels-from-parent"),
        (["--folder", ".", "--near-threshold", "65"], "near-threshold"),
        (["--folder", ".", "--near-threshold", "four"], "invalid int"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_positive_folder_exits_2(image_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--folder", str(image_folder), "--labels-from-parent", "--positive", "broken"])
    assert exit_info.value.code == 2
    assert "['fractured', 'normal']" in capsys.readouterr().err


def test_module_runs_as_a_script():
    # Argument errors are found before TensorFlow is imported, so this is quick.
    result = subprocess.run(
        [sys.executable, "-m", "tf_fracture.audit", "--near-threshold", "-1", "--folder", "."],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--near-threshold must be in [0, 64]" in result.stderr


def test_unknown_tfds_dataset_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no_such_dataset_for_the_audit", "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no_such_dataset_for_the_audit" in capsys.readouterr().err


def test_tfds_mode_end_to_end(tmp_path, capsys):
    tiny_tfds_builder(tmp_path)
    out = tmp_path / "audit.json"
    assert main(["audit_tiny_dataset", "--data-dir", str(tmp_path), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["label_names"] == ["normal", "fractured"]
    assert (data["positive_label"], data["positive_class"]) == (1, "fractured")
    assert [b["split"] for b in data["class_balance"]] == ["train", "test"]
    [exact] = data["duplicates"]["exact"]
    assert [(f["key"], f["split"]) for f in exact["files"]] == [("x.png", "train"), ("x_copy.png", "test")]
    assert exact["spans_splits"]
    assert data["patient_overlap"] == [{"patient_id": "p2", "files": {"train": ["y.png"], "test": ["z.png"]}}]
    text = capsys.readouterr().out
    assert "x_copy.png" in text and "positive class: fractured (1)" in text

    with pytest.raises(SystemExit) as exit_info:
        main(["audit_tiny_dataset", "--data-dir", str(tmp_path), "--positive", "broken"])
    assert exit_info.value.code == 2
    assert "['normal', 'fractured']" in capsys.readouterr().err
