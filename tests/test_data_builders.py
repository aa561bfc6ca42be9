"""The features every TFDS builder shares, made in one place."""

import pytest
import tensorflow_datasets as tfds

from tf_fracture.data.builders import radiograph_features


def test_every_radiograph_has_the_shared_features_then_its_own():
    features = radiograph_features(["normal", "fracture"], {"view": tfds.features.ClassLabel(names=["ap", "lat"])})
    assert list(features.keys()) == ["image", "label", "patient_id", "filename", "view"]
    assert features["image"].shape == (None, None, 1) and features["image"].encoding_format == "png"
    assert features["label"].names == ["normal", "fracture"]


def test_bad_label_names_and_clashing_features_are_refused():
    with pytest.raises(ValueError, match="two label names"):
        radiograph_features(["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\['label'\] would replace"):
        radiograph_features(["a", "b"], {"label": tfds.features.Text()})
