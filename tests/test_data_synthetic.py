"""The synthetic radiograph generator: determinism, labels, locality of fractures, and difficulty.

The difficulty tests are the point of the generator: global image statistics must not give the
label away (a logistic regression on them scores AUROC < 0.6), while a small CNN learns it
(``-m large``: ``.venv/bin/python -m pytest tests/test_data_synthetic.py -m large -s``).
"""

import cv2
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tf_fracture.data.synthetic import (
    FRACTURE_KINDS,
    SyntheticRadiograph,
    generate_radiograph,
    label_for_index,
    patient_id_for_index,
)


@pytest.fixture(scope="module")
def samples():
    """400 images at 64 px: enough for a stable AUROC, generated in under a second."""
    return [generate_radiograph(i, size=64, seed=0) for i in range(400)]


def global_statistics(image, bins):
    pixels = image.astype(np.float64) / 255.0
    histogram = np.histogram(pixels, bins=bins, range=(0.0, 1.0))[0] / pixels.size
    return np.concatenate([[pixels.mean(), pixels.std()], histogram])


def cross_validated_auroc(features, targets):
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    scores = cross_val_predict(model, features, targets, cv=folds, method="decision_function")
    return roc_auc_score(targets, scores)


# --- API, determinism, labels -------------------------------------------------------------------


def test_image_and_metadata():
    sample = generate_radiograph(7, size=96, seed=3)
    assert isinstance(sample, SyntheticRadiograph)
    assert sample.image.shape == (96, 96) and sample.image.dtype == np.uint8
    assert sample.label in (0, 1) and sample.index == 7 and sample.seed == 3
    assert sample.patient_id == patient_id_for_index(7, 3) == "synthetic-s3-p000000007"
    assert sample.num_bones in (1, 2)
    assert 60.0 <= sample.bone_angle <= 120.0  # vertical, give or take 30 degrees
    assert sample.bone_mask.shape == sample.fracture_mask.shape == (96, 96)
    # Not a blank or saturated frame: the dynamic range of a radiograph.
    assert sample.image.std() > 5 and np.ptp(sample.image) > 60


def test_same_seed_and_index_give_the_same_image():
    a = generate_radiograph(11, size=64, seed=5)
    b = generate_radiograph(11, size=64, seed=5)
    np.testing.assert_array_equal(a.image, b.image)
    assert (a.label, a.fracture_kind, a.fracture_box) == (b.label, b.fracture_kind, b.fracture_box)
    assert not np.array_equal(a.image, generate_radiograph(11, size=64, seed=6).image)
    assert not np.array_equal(a.image, generate_radiograph(12, size=64, seed=5).image)


def test_labels_are_balanced_in_every_pair_of_indices(samples):
    labels = np.array([s.label for s in samples])
    assert labels.reshape(-1, 2).sum(axis=1).tolist() == [1] * 200
    assert [label_for_index(i) for i in range(400)] == labels.tolist()
    # Which one of a pair is the fracture is random, not the parity of the index.
    assert 0.3 < labels[::2].mean() < 0.7


def test_patient_ids_are_unique(samples):
    assert len({s.patient_id for s in samples}) == len(samples)


def test_nuisance_and_fracture_kinds_all_occur(samples):
    kinds = {s.fracture_kind for s in samples}
    assert kinds == set(FRACTURE_KINDS)
    assert {s.fracture_kind for s in samples if s.label == 0} == {"none"}
    assert {s.num_bones for s in samples} == {1, 2}
    means = [s.image.mean() for s in samples]
    assert np.ptp(means) > 100  # exposure and collimation vary a lot


def test_fracture_argument_overrides_the_label():
    assert generate_radiograph(0, size=32, fracture=True).label == 1
    assert generate_radiograph(0, size=32, fracture=False).label == 0
    assert generate_radiograph(0, size=32, fracture=False).fracture_kind == "none"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"index": -1}, "`index` to be an integer >= 0"),
        ({"index": 1.5}, "`index` to be an integer >= 0"),
        ({"index": 0, "seed": -2}, "`seed` to be an integer >= 0"),
        ({"index": 0, "size": 16}, "`size` to be an integer >= 32"),
        ({"index": 0, "fracture": "yes"}, "`fracture` to be True, False or None"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    index = kwargs.pop("index")
    with pytest.raises(ValueError, match=message):
        generate_radiograph(index, **kwargs)


@pytest.mark.parametrize("size", [32, 64, 256])
def test_any_size_renders(size):
    sample = generate_radiograph(3, size=size, fracture=True)
    assert sample.image.shape == (size, size)
    assert sample.fracture_mask.any()


# --- fractures are local, on a bone ----------------------------------------------------------------


@pytest.mark.parametrize("index", range(16))
def test_a_fracture_changes_only_pixels_near_the_bone(index):
    normal = generate_radiograph(index, size=128, fracture=False)
    fractured = generate_radiograph(index, size=128, fracture=True)
    difference = fractured.image.astype(int) - normal.image.astype(int)
    changed = np.abs(difference) > 2
    # Local: nothing changes beyond a few pixels (the blur) from either image's bone.
    bones = (normal.bone_mask | fractured.bone_mask).astype(np.uint8)
    near_bone = cv2.dilate(bones, np.ones((7, 7), np.uint8)).astype(bool)
    assert not difference[~near_bone].any()
    # No global cue: the mean brightness moves by under 1.5 grey levels (across images it varies by >100).
    assert abs(difference.mean()) < 1.5
    # The fracture region lies on bone (where the bone was, or where a fragment moved to) ...
    assert fractured.fracture_mask.any() and not normal.fracture_mask.any()
    assert not (fractured.fracture_mask & ~(normal.bone_mask | fractured.bone_mask)).any()
    # ... is visible there (at least 8 grey levels, above the noise of most images) ...
    region = cv2.dilate(fractured.fracture_mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.abs(difference[region]).max() >= 8
    if fractured.fracture_kind == "lucent_line":
        # ... and holds every change when no fragment moves. (A displaced fragment moves all the way
        # to the image border, so there the changes run along the bone.)
        assert not (changed & ~region).any()
    # ... and inside the reported box.
    ymin, xmin, ymax, xmax = (round(v * 128) for v in fractured.fracture_box)
    rows, cols = np.nonzero(fractured.fracture_mask)
    assert (ymin, xmin, ymax, xmax) == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    assert normal.fracture_box is None


# --- difficulty -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [16, 32])
def test_global_statistics_do_not_reveal_the_label(samples, bins):
    features = np.stack([global_statistics(s.image, bins) for s in samples])
    labels = np.array([s.label for s in samples])
    auroc = cross_validated_auroc(features, labels)
    print(f"logistic regression on mean, std and a {bins}-bin histogram: AUROC {auroc:.3f}")
    assert auroc < 0.6


def test_global_statistics_do_reveal_nuisance(samples):
    """The same features and model find what global statistics *do* carry: the exposure."""
    features = np.stack([global_statistics(s.image, 32) for s in samples])
    exposure = np.array([s.exposure for s in samples])
    auroc = cross_validated_auroc(features, (exposure > np.median(exposure)).astype(int))
    print(f"the same, predicting exposure above the median: AUROC {auroc:.3f}")
    assert auroc > 0.65


def small_cnn(size):
    import keras

    inputs = keras.Input((size, size, 1))
    x = keras.layers.RandomFlip("horizontal_and_vertical", seed=0)(inputs)
    for i, filters in enumerate((32, 48, 64, 96)):
        for j in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}_{j}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{i}_{j}")(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    # Max pooling: a fracture is a small local finding anywhere in the image.
    x = keras.layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="logit")(x))


def standardised_batch(indices, size, seed=0):
    samples = [generate_radiograph(i, size=size, seed=seed) for i in indices]
    x = np.stack([s.image for s in samples]).astype("float32")[..., None]
    # Per-image standardisation removes the exposure, which carries no label information.
    x = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / (x.std(axis=(1, 2, 3), keepdims=True) + 1.0)
    return x, np.array([s.label for s in samples])


def train_small_cnn(*, size=64, num_train=2000, num_validation=500, epochs=20, seed=0, verbose=2):
    """Trains `small_cnn` on CPU and returns its validation AUROC (about 3-4 min on 2 cores)."""
    import keras

    x_train, y_train = standardised_batch(range(num_train), size)
    x_val, y_val = standardised_batch(range(10**6, 10**6 + num_validation), size)
    keras.utils.set_random_seed(seed)
    model = small_cnn(size)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, validation_data=(x_val, y_val), verbose=verbose)
    return roc_auc_score(y_val, model.predict(x_val, verbose=0)[:, 0])


@pytest.mark.large
def test_a_small_cnn_learns_fractures():
    auroc = train_small_cnn()
    print(f"small CNN, 2000 train / 500 validation images at 64 px, 20 epochs: validation AUROC {auroc:.3f}")
    assert auroc > 0.8
