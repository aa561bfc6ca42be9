"""synthetic_xray builder: the TFDS harness on the `tiny` config, patient-level split checks, tfds.load."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tf_fracture.data.synthetic import generate_radiograph
from tf_fracture_datasets.synthetic_xray import synthetic_xray_dataset_builder
from tf_fracture_datasets.synthetic_xray.synthetic_xray_dataset_builder import SPLIT_OFFSETS, SyntheticXrayConfig


class SyntheticXrayTinyTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = synthetic_xray_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["tiny"]
    SPLITS = {"train": 24, "validation": 8, "test": 8}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("synthetic_xray")
    builder = synthetic_xray_dataset_builder.Builder(data_dir=str(data_dir), config="tiny")
    builder.download_and_prepare()
    examples = {
        split: list(tfds.as_numpy(builder.as_dataset(split=split))) for split in ("train", "validation", "test")
    }
    return data_dir, builder, examples


def test_no_patient_in_two_splits(tiny):
    _, _, examples = tiny
    patients = {split: {e["patient_id"].decode() for e in rows} for split, rows in examples.items()}
    assert {split: len(ids) for split, ids in patients.items()} == {"train": 24, "validation": 8, "test": 8}
    assert not patients["train"] & patients["validation"]
    assert not patients["train"] & patients["test"]
    assert not patients["validation"] & patients["test"]


def test_examples_are_the_generators_images(tiny):
    _, builder, examples = tiny
    assert builder.info.features["label"].names == ["normal", "fracture"]
    for split, rows in examples.items():
        labels = [int(e["label"]) for e in rows]
        assert sum(labels) == len(labels) // 2, split  # exactly balanced: the sizes are even
        for e in rows:
            index = int(e["patient_id"].decode().rsplit("p", 1)[1])
            assert SPLIT_OFFSETS[split] <= index < SPLIT_OFFSETS[split] + len(rows)
            sample = generate_radiograph(index, size=64, seed=0)
            np.testing.assert_array_equal(e["image"][..., 0], sample.image)
            assert e["image"].shape == (64, 64, 1) and e["image"].dtype == np.uint8
            assert int(e["label"]) == sample.label
            assert e["filename"].decode() == f"{sample.patient_id}.png"
            kind = builder.info.features["fracture_kind"].int2str(int(e["fracture_kind"]))
            assert kind == sample.fracture_kind and (kind == "none") == (sample.label == 0)
            assert len(e["fracture_boxes"]) == sample.label
            if sample.label:
                np.testing.assert_allclose(e["fracture_boxes"][0], sample.fracture_box, atol=1e-6)


def test_the_build_is_deterministic(tiny, tmp_path):
    _, _, first = tiny
    builder = synthetic_xray_dataset_builder.Builder(data_dir=str(tmp_path), config="tiny")
    builder.download_and_prepare()
    for e, again in zip(first["test"], tfds.as_numpy(builder.as_dataset(split="test")), strict=True):
        assert e["patient_id"] == again["patient_id"]
        np.testing.assert_array_equal(e["image"], again["image"])


def test_tfds_load_finds_the_builder_by_name(tiny):
    data_dir, _, _ = tiny
    ds = tfds.load("synthetic_xray/tiny", split="validation", data_dir=str(data_dir), as_supervised=True)
    images, labels = zip(*tfds.as_numpy(ds), strict=True)
    assert len(images) == 8 and images[0].shape == (64, 64, 1)
    assert sorted(set(int(label) for label in labels)) == [0, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_train": -1}, "`num_train` to be an integer in"),
        ({"num_test": 10**9}, "`num_test` to be an integer in"),
        ({"image_size": 16}, "`image_size` to be an integer >= 32"),
        ({"seed": -1}, "`seed` to be an integer >= 0"),
    ],
)
def test_invalid_configs_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticXrayConfig(name="bad", **kwargs)
