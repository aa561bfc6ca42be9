"""Builds the fracatlas dataset from the real FracAtlas copy (CI sets TF_FRACTURE_FRACATLAS)."""

import collections
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tf_fracture.audit.duplicates import find_duplicates
from tf_fracture.audit.records import AuditRecord
from tf_fracture_datasets.fracatlas import fracatlas_dataset_builder

ROOT = os.environ.get("TF_FRACTURE_FRACATLAS")
pytestmark = pytest.mark.skipif(
    not ROOT, reason="TF_FRACTURE_FRACATLAS is not set (CI sets it to ../shared/fracatlas/FracAtlas)"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not os.path.isfile(os.path.join(ROOT, "dataset.csv")):
        pytest.fail(f"TF_FRACTURE_FRACATLAS={ROOT!r} does not hold FracAtlas (no dataset.csv)")
    builder = fracatlas_dataset_builder.Builder(data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=ROOT))
    examples = {}
    for split in ("train", "validation", "test"):
        for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            examples[ex["filename"].decode()] = (split, int(ex["label"]), ex["image"][:, :, 0])
    return builder, examples


def test_everything_is_kept_or_excluded_with_a_reason(built):
    builder, examples = built
    excluded = builder.info.metadata["excluded"]
    on_disk = {
        f"images/{folder}/{name}"
        for folder in ("Fractured", "Non_fractured")
        for name in os.listdir(os.path.join(ROOT, "images", folder))
    }
    assert set(examples) | {k for k in excluded if k.startswith("images/")} == on_disk
    assert not set(examples) & set(excluded)
    # What the audit found on this copy: truncated JPEGs, the folder/CSV label clash, duplicates.
    reasons = collections.Counter(reason.split(":")[0].split(" duplicate")[0] for reason in excluded.values())
    assert reasons["unreadable"] == 59
    assert "images/Fractured/IMG0003298.jpg" in excluded
    assert sum("another label" in r for r in excluded.values()) >= 8
    assert len(examples) == sum(builder.info.splits[s].num_examples for s in ("train", "validation", "test"))


def test_split_is_stratified(built):
    _, examples = built
    by_split = collections.defaultdict(list)
    for split, label, _ in examples.values():
        by_split[split].append(label)
    total = len(examples)
    overall = np.mean([label for _, label, _ in examples.values()])
    for split, fraction in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        assert abs(len(by_split[split]) / total - fraction) < 0.01
        assert abs(np.mean(by_split[split]) - overall) < 0.02


def test_no_duplicate_image_in_two_splits(built):
    _, examples = built
    records = [AuditRecord(key, label, split=split, image=image) for key, (split, label, image) in examples.items()]
    groups = find_duplicates(records)
    assert not [g.keys for g in groups if g.spans_splits]
    assert not [g.keys for g in groups if g.labels_conflict]
    assert not [g.keys for g in groups if g.kind == "exact"]
