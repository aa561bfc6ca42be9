"""The data audit: hashes against independent references, planted findings, the command line."""

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from tf_fracture.data import audit as audit_module
from tf_fracture.data.audit import AuditRecord, audit, find_duplicates, main
from tf_fracture.data.hashing import (
    _popcount64_table,
    hamming,
    hashes_to_array,
    image_digest,
    near_pairs,
    perceptual_hash,
    popcount64,
)

THRESHOLD = 4


def radiograph(seed, size=96):
    """A smooth, structured greyscale image: low-frequency background and a bright oblique 'bone'."""
    rng = np.random.default_rng(seed)
    background = cv2.resize(rng.random((6, 6), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    image = 40 + 80 * background
    centre = tuple(int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
    axes = (int(rng.integers(size // 3, size // 2)), int(rng.integers(size // 12, size // 6)))
    cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, 200.0, -1)
    image = cv2.GaussianBlur(image, (5, 5), 0) + rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg(image, quality=90):
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def dct_matrix(n):
    """Orthonormal DCT-II matrix, written from the definition (the reference for cv2.dct)."""
    k, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    m[0] /= np.sqrt(2.0)
    return m


# --- hashes ---------------------------------------------------------------------------------------


def test_phash_matches_numpy_reference():
    # A 32x32 image is not resized, so the hash is fully determined by the DCT and the median rule.
    for seed in range(5):
        image = radiograph(seed, size=32)
        d = dct_matrix(32)
        low = (d @ image.astype(np.float64) @ d.T)[:8, :8].ravel()
        bits = "".join("1" if c > np.median(low) else "0" for c in low)
        assert perceptual_hash(image) == int(bits, 2)


@pytest.mark.parametrize("scale", [0.9, 1.1, 0.75])
def test_phash_survives_resizing(scale):
    for seed in range(4):
        image = radiograph(seed)
        resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        assert hamming(perceptual_hash(image), perceptual_hash(resized)) <= THRESHOLD


def test_phash_survives_jpeg_reencoding():
    for seed in range(4):
        image = radiograph(seed)
        copy = jpeg(image, 90)
        assert not np.array_equal(copy, image)
        assert hamming(perceptual_hash(image), perceptual_hash(copy)) <= THRESHOLD


def test_phash_separates_different_images():
    hashes = [perceptual_hash(radiograph(seed)) for seed in range(8)]
    distances = [hamming(a, b) for n, a in enumerate(hashes) for b in hashes[n + 1 :]]
    assert min(distances) > 3 * THRESHOLD, distances


def test_phash_input_checks():
    image = radiograph(0)
    assert perceptual_hash(image[:, :, None]) == perceptual_hash(image)
    assert 0 <= perceptual_hash(image) < 2**64
    for bad in (np.stack([image] * 3, -1), image.astype(np.float32), image.astype(np.uint16), image[:0]):
        with pytest.raises(ValueError, match="Expected"):
            perceptual_hash(bad)


def test_popcount_and_hamming_match_python():
    rng = np.random.default_rng(0)
    values = [0, 1, 2**63, 2**64 - 1, 0x5555555555555555] + [int(v) for v in rng.integers(0, 2**64, 200, np.uint64)]
    array = hashes_to_array(values)
    expected = np.array([bin(v).count("1") for v in values])
    np.testing.assert_array_equal(popcount64(array), expected)
    np.testing.assert_array_equal(_popcount64_table(array), expected)  # the NumPy < 2 path
    for a, b in zip(values, values[::-1], strict=True):
        assert hamming(a, b) == bin(a ^ b).count("1")
    with pytest.raises(ValueError, match="non-negative"):
        hamming(-1, 0)


def test_near_pairs_matches_brute_force():
    rng = np.random.default_rng(1)
    base = [int(v) for v in rng.integers(0, 2**64, 350, np.uint64)]
    # Plant close copies: flip 0..6 random bits. 700 hashes span two blocks of rows.
    near = [b ^ sum(1 << int(bit) for bit in rng.choice(64, int(rng.integers(0, 7)), replace=False)) for b in base]
    values = base + near
    i, j, d = near_pairs(hashes_to_array(values), THRESHOLD)
    got = {(int(a), int(b), int(c)) for a, b, c in zip(i, j, d, strict=True)}
    expected = {
        (a, b, bin(values[a] ^ values[b]).count("1"))
        for a in range(len(values))
        for b in range(a + 1, len(values))
        if bin(values[a] ^ values[b]).count("1") <= THRESHOLD
    }
    assert got == expected
    assert len(expected) > 100  # the planted pairs are there


def test_connected_components_match_search():
    rng = np.random.default_rng(2)
    n = 60
    edges = rng.integers(0, n, (40, 2))
    component = audit_module._connected_components(n, edges[:, 0], edges[:, 1])
    neighbours = {v: set() for v in range(n)}
    for a, b in edges:
        neighbours[int(a)].add(int(b))
        neighbours[int(b)].add(int(a))
    for start in range(n):
        seen, todo = {start}, [start]
        while todo:
            for w in neighbours[todo.pop()] - seen:
                seen.add(w)
                todo.append(w)
        assert component[start] == min(seen)
        assert {v for v in range(n) if component[v] == component[start]} == seen


def test_image_digest():
    image = radiograph(0)
    assert image_digest(image) == image_digest(image.copy())
    assert image_digest(image[:, ::-1][:, ::-1]) == image_digest(image)  # a non-contiguous view, same pixels
    changed = image.copy()
    changed[10, 10] ^= 1
    assert image_digest(changed) != image_digest(image)
    assert image_digest(image.reshape(48, 192)) != image_digest(image)  # same bytes, other shape
    assert len(image_digest(image)) == 64


def test_near_search_of_4000_images_takes_seconds():
    rng = np.random.default_rng(3)
    records = [
        AuditRecord(f"{n}.png", int(n % 2), digest=f"{n:064x}", phash=int(h))
        for n, h in enumerate(rng.integers(0, 2**64, 4000, np.uint64))
    ]
    start = time.perf_counter()
    groups = find_duplicates(records, near_threshold=THRESHOLD)
    assert time.perf_counter() - start < 10.0  # 8 million pairs; about 0.1 s on one core
    assert groups == []  # random 64-bit hashes are never 4 bits apart


# --- the audit --------------------------------------------------------------------------------------


def planted_records():
    """Clean images plus one of each finding: the flagged keys are known."""
    images = {f"clean_{n}.png": radiograph(100 + n) for n in range(6)}
    dup, near = radiograph(1), radiograph(2)
    split_of = ["train", "train", "train", "validation", "test", "test"]
    records = [AuditRecord(key, n % 2, split_of[n], f"p{n}", image=im) for n, (key, im) in enumerate(images.items())]
    return [
        *records,
        # The same pixels in train and test: a leak between splits.
        AuditRecord("dup_train.png", 1, "train", "pa", image=dup),
        AuditRecord("dup_test.png", 1, "test", "pb", image=dup.copy()),
        # A JPEG re-encoding of an image, with the other label.
        AuditRecord("near_a.png", 1, "train", "pc", image=near),
        AuditRecord("near_b.jpg", 0, "train", "pd", image=jpeg(near)),
        # One patient, two different images, in two splits.
        AuditRecord("patient_train.png", 0, "train", "leaky", image=radiograph(3)),
        AuditRecord("patient_test.png", 0, "test", "leaky", image=radiograph(4)),
        AuditRecord("broken.png", 1, "validation", "pe", error="truncated PNG data (no IEND chunk)"),
    ]


FLAGGED = {
    "dup_train.png",
    "dup_test.png",
    "near_a.png",
    "near_b.jpg",
    "patient_train.png",
    "patient_test.png",
    "broken.png",
}


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


def test_report_dict_round_trips_through_json():
    report = audit(planted_records(), near_threshold=THRESHOLD, source="planted", label_names=["neg", "pos"])
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
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


def test_hashed_records_give_the_same_findings():
    records = planted_records()
    hashed = [r.hashed() for r in records]
    assert all(r.image is None for r in hashed)
    assert find_duplicates(hashed, THRESHOLD) == find_duplicates(records, THRESHOLD)


def test_near_group_lists_exact_copies_of_its_members():
    image = radiograph(5)
    records = [
        AuditRecord("a.png", 0, image=image),
        AuditRecord("a_copy.png", 0, image=image.copy()),
        AuditRecord("a_jpeg.jpg", 1, image=jpeg(image)),
    ]
    exact, near = find_duplicates(records, THRESHOLD)
    assert (exact.kind, exact.keys, exact.labels_conflict) == ("exact", ("a.png", "a_copy.png"), False)
    assert (near.kind, near.keys, near.labels_conflict) == ("near", ("a.png", "a_copy.png", "a_jpeg.jpg"), True)


def test_find_duplicates_checks_threshold():
    for bad in (-1, 65, 2.5, True):
        with pytest.raises(ValueError, match="near_threshold"):
            find_duplicates([], bad)


def test_record_key_is_checked():
    with pytest.raises(ValueError, match="key"):
        AuditRecord("", 0)


# --- the command line ---------------------------------------------------------------------------


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

    data = json.loads(out.read_text())
    assert data["label_names"] == ["fractured", "normal"]
    assert data["summary"]["records"] == 8
    assert [c["key"] for c in data["corrupt_files"]] == ["normal/truncated.jpg"]
    assert "truncated JPEG" in data["corrupt_files"][0]["error"]
    [exact] = data["duplicates"]["exact"]
    assert [f["key"] for f in exact["files"]] == ["fractured/a.png", "fractured/a_again.png"]
    [near] = data["duplicates"]["near"]
    assert [(f["key"], f["label"]) for f in near["files"]] == [
        ("fractured/a.png", 0),
        ("fractured/a_again.png", 0),
        ("normal/a_jpeg.jpg", 1),
    ]
    assert near["labels_conflict"] and data["summary"]["label_conflict_groups"] == 1
    assert data["ignored_files"] == ["normal/notes.txt"]
    assert data["class_balance"] == [
        {
            "split": None,
            "total": 8,
            "counts": {"0": 2, "1": 6},
            "unlabelled": 0,
            "corrupt": 1,
            "fraction_positive": 0.75,
        }
    ]


def test_folder_mode_without_labels(image_folder, capsys):
    assert main(["--folder", str(image_folder)]) == 0
    assert "unlabelled" in capsys.readouterr().out
    records, names, _ = audit_module.records_from_folder(image_folder)
    assert names is None and all(r.label is None for r in records)


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "exactly one"),
        (["mura", "--folder", "."], "exactly one"),
        (["--folder", "/no/such/folder"], "not a directory"),
        (["--folder", ".", "--data-dir", "."], "--data-dir"),
        (["mura", "--labels-from-parent"], "--folder only"),
        (["--folder", ".", "--near-threshold", "65"], "near-threshold"),
        (["--folder", ".", "--near-threshold", "four"], "invalid int"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_module_runs_as_a_script():
    # Argument errors are found before TensorFlow is imported, so this is quick.
    result = subprocess.run(
        [sys.executable, "-m", "tf_fracture.data.audit", "--near-threshold", "-1", "--folder", "."],
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
    import tensorflow_datasets as tfds  # a dependency; imported here to keep the other tests light

    images = {"x.png": radiograph(30), "y.png": radiograph(31), "z.png": radiograph(32)}

    class AuditTinyDataset(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            # DatasetInfo directly: dataset_info_from_configs looks for metadata files in the builder's package.
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                        "label": tfds.features.ClassLabel(names=["normal", "fractured"]),
                        "patient_id": tfds.features.Text(),
                        "filename": tfds.features.Text(),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples([("x.png", 0, "p1"), ("y.png", 1, "p2")]),
                "test": self._generate_examples([("x_copy.png", 0, "p3"), ("z.png", 1, "p2")]),
            }

        def _generate_examples(self, rows):
            for name, label, patient in rows:
                image = images[name.replace("_copy", "")]
                yield name, {"image": image[:, :, None], "label": label, "patient_id": patient, "filename": name}

    AuditTinyDataset(data_dir=str(tmp_path)).download_and_prepare()
    out = tmp_path / "audit.json"
    assert main(["audit_tiny_dataset", "--data-dir", str(tmp_path), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["label_names"] == ["normal", "fractured"]
    assert [b["split"] for b in data["class_balance"]] == ["train", "test"]
    [exact] = data["duplicates"]["exact"]
    assert [(f["key"], f["split"]) for f in exact["files"]] == [("x.png", "train"), ("x_copy.png", "test")]
    assert exact["spans_splits"]
    assert data["patient_overlap"] == [{"patient_id": "p2", "files": {"train": ["y.png"], "test": ["z.png"]}}]
    assert "x_copy.png" in capsys.readouterr().out


def test_near_candidates_are_confirmed_by_thumbnail_correlation():
    from tf_fracture.data.audit import THUMBNAIL_SIZE

    rng = np.random.default_rng(5)
    base = rng.normal(size=THUMBNAIL_SIZE**2).astype(np.float32)
    base /= np.linalg.norm(base)
    other = rng.normal(size=THUMBNAIL_SIZE**2).astype(np.float32)
    other -= other.dot(base) * base  # orthogonal: correlation 0
    other /= np.linalg.norm(other)
    # Same pHash, different pixels: candidates; only the pair with matching thumbnails is confirmed.
    records = [
        AuditRecord("a.png", 0, digest="a", phash=7, thumbnail=base),
        AuditRecord("b.png", 1, digest="b", phash=7, thumbnail=base * 0.999 + other * 0.045),
        AuditRecord("c.png", 0, digest="c", phash=7, thumbnail=other),
    ]
    confirmed = find_duplicates(records, near_threshold=4)
    assert [g.keys for g in confirmed] == [("a.png", "b.png")]
    unconfirmed = find_duplicates(records, near_threshold=4, min_correlation=None)
    assert [g.keys for g in unconfirmed] == [("a.png", "b.png", "c.png")]
