"""vlm_torch.data: exported splits read without TensorFlow; CLAHE + unsharp as the CNN side; bad images listed."""

import logging
import os

import cv2
import numpy as np
import pytest

from tf_fracture.data.io import ImageReadError
from tf_fracture.data.preprocess import clahe, preprocess, unsharp_mask
from vlm_torch.data import (
    Record,
    available_splits,
    iter_batches,
    load_image,
    preprocess_config,
    read_dataset_info,
    read_split,
)


def write_export(root, split="test", labels=(0, 1, 1, 0, 1), size=(40, 30), extra_header="", extra=""):
    """A tiny export as tf_fracture.data.export_split writes it: OUT/<split>/{manifest.csv, images/<id>.png}."""
    images_dir = os.path.join(root, split, "images")
    os.makedirs(images_dir, exist_ok=True)
    rng = np.random.default_rng(len(labels))
    lines = ["id,file,label,group" + extra_header]
    images = {}
    for i, label in enumerate(labels):
        image_id = f"img{i}"
        image = cv2.GaussianBlur(rng.integers(0, 256, size, dtype=np.uint8), (5, 5), 0)
        cv2.imwrite(os.path.join(images_dir, f"{image_id}.png"), image)
        images[image_id] = image
        lines.append(f"{image_id},images/{image_id}.png,{label},patient{i // 2}" + extra)
    with open(os.path.join(root, split, "manifest.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return images


def test_read_split_gives_records_in_manifest_order(tmp_path):
    images = write_export(str(tmp_path), extra_header=",body_part", extra=",hand")
    records = read_split(str(tmp_path), "test")
    assert [r.id for r in records] == list(images)
    assert [r.label for r in records] == [0, 1, 1, 0, 1]
    assert records[3].extra == {"group": "patient1", "body_part": "hand"}
    assert records[0].path == os.path.join(str(tmp_path), "test", "images", "img0.png")
    assert available_splits(str(tmp_path)) == ["test"]


def test_load_image_is_the_original_without_preprocessing(tmp_path):
    images = write_export(str(tmp_path))
    record = read_split(str(tmp_path), "test")[2]
    np.testing.assert_array_equal(load_image(record, preprocess=False), images["img2"])
    # The image size only matters to the preprocessing (the family resizes for its processor).
    np.testing.assert_array_equal(load_image(record, preprocess=False, image_size=16), images["img2"])


def test_preprocessing_is_the_cnn_sides(tmp_path):
    images = write_export(str(tmp_path))
    record = read_split(str(tmp_path), "test")[1]
    original = images["img1"]
    # At the model's image size: resize, CLAHE 2.5 on 4x4 tiles, 5x5 unsharp amount 2 (DataConfig's defaults).
    out = load_image(record, preprocess=True, image_size=24)
    assert out.shape == (24, 24) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, preprocess(original, preprocess_config(24)))
    config = preprocess_config(24)
    settings = (config.clahe_clip_limit, config.clahe_grid, config.unsharp_kernel, config.unsharp_amount)
    assert settings == (2.5, 4, 5, 2.0)
    # Without an image size: the same filters at the original size.
    native = load_image(record, preprocess=True)
    np.testing.assert_array_equal(native, unsharp_mask(clahe(original, 2.5, 4), 5, 2.0))
    assert not np.array_equal(native, original)


def test_missing_manifest_lists_the_splits_there(tmp_path):
    write_export(str(tmp_path), split="validation")
    with pytest.raises(FileNotFoundError, match=r"No split 'test'.*the splits there: validation.*export-split"):
        read_split(str(tmp_path), "test")
    with pytest.raises(FileNotFoundError, match="holds no exported split"):
        read_split(str(tmp_path / "nothing"), "test")
    with pytest.raises(FileNotFoundError, match=r"No dataset\.json.*export-split"):
        read_dataset_info(str(tmp_path))


def test_missing_image_files_are_an_error_naming_them(tmp_path):
    write_export(str(tmp_path))
    os.remove(tmp_path / "test" / "images" / "img3.png")
    with pytest.raises(FileNotFoundError, match=r"names 1 image\(s\) missing.*images/img3\.png.*rerun the export"):
        read_split(str(tmp_path), "test")


@pytest.mark.parametrize("label", ["2", "", "fracture", "1.0"])
def test_a_bad_label_is_an_error_naming_the_line(tmp_path, label):
    write_export(str(tmp_path))
    manifest = tmp_path / "test" / "manifest.csv"
    lines = manifest.read_text().splitlines()
    lines[3] = f"img2,images/img2.png,{label},p"
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"line 4 \(id 'img2'\): label '{label}' is not 0"):
        read_split(str(tmp_path), "test")


def test_a_manifest_without_a_column_or_with_a_repeated_id(tmp_path):
    write_export(str(tmp_path))
    manifest = tmp_path / "test" / "manifest.csv"
    text = manifest.read_text()
    manifest.write_text(text.replace("id,file,label", "id,path,label"))
    with pytest.raises(ValueError, match=r"missing column.*file"):
        read_split(str(tmp_path), "test")
    manifest.write_text(text.replace("img1,images/img1.png", "img0,images/img1.png"))
    with pytest.raises(ValueError, match="id 'img0' appears twice"):
        read_split(str(tmp_path), "test")


def test_batches_skip_and_list_bad_images(tmp_path, caplog):
    write_export(str(tmp_path), labels=(0, 1, 1, 0, 1, 0, 1))
    records = read_split(str(tmp_path), "test")
    with open(records[1].path, "wb") as f:
        f.write(b"not an image")
    with open(records[4].path, "r+b") as f:  # a truncated PNG
        f.truncate(60)
    skipped = {}
    with caplog.at_level(logging.WARNING):
        batches = list(iter_batches(records, 2, preprocess=False, skipped=skipped))
    assert [[r.id for r in batch] for batch, _ in batches] == [["img0", "img2"], ["img3", "img5"], ["img6"]]
    assert all(len(batch) == len(images) for batch, images in batches)
    assert batches[1][1][0].shape == (40, 30)
    assert set(skipped) == {records[1].path, records[4].path}
    assert "2 unreadable image(s), skipped" in caplog.text and records[4].path in caplog.text
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        next(iter_batches(records, 0, preprocess=False))


def test_load_image_of_a_missing_file_raises_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(Record("x", str(tmp_path / "x.png"), 0), preprocess=False)
