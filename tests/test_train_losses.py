"""The localisation loss: NumPy references, partial supervision, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_fracture.data.targets import NO_TARGET
from tf_fracture.train.losses import LocalizationLoss, cell_targets

S, H = 16, 4  # image size, map size: cells of 4x4 pixels


def batch(rng):
    """3 images: a box on cells (0..1, 1), no target, a box on cell (3, 3) that only grazes it."""
    targets = np.zeros((3, S, S, 1), np.float32)
    targets[0, 1:7, 5:8] = 1.0  # rows 1..6 -> cells 0 and 1; columns 5..7 -> cell 1
    targets[1] = NO_TARGET
    targets[2, 15, 15] = 0.25  # one soft pixel still puts its cell in the box
    cams = rng.normal(size=(3, H, H, 1)).astype(np.float32)
    return targets, cams


def reference_cells(targets):
    cells = np.zeros((len(targets), H, H, 1), np.float32)
    blocks = np.maximum(targets, 0).reshape(len(targets), H, S // H, H, S // H, 1)
    cells[:] = blocks.max(axis=(2, 4)) > 0
    return cells


def test_cells_touching_the_target_are_in_the_box(rng):
    targets, _ = batch(rng)
    cells = keras.ops.convert_to_numpy(cell_targets(np.maximum(targets, 0), (H, H)))
    np.testing.assert_array_equal(cells, reference_cells(targets))
    assert cells[0, :2, 1].all() and cells[0].sum() == 2 and cells[2, 3, 3, 0] == 1 and cells[2].sum() == 1


def reference_coverage(targets):
    blocks = np.maximum(targets, 0).reshape(len(targets), H, S // H, H, S // H, 1)
    return blocks.mean(axis=(2, 4))


def test_coverage_cells_are_the_share_of_their_pixels_in_the_box(rng):
    targets, _ = batch(rng)
    cells = keras.ops.convert_to_numpy(cell_targets(np.maximum(targets, 0), (H, H), "coverage"))
    np.testing.assert_allclose(cells, reference_coverage(targets), atol=1e-6)
    # Rows 1..3 of cell 0 (3 of 4) x columns 5..7 of cell 1 (3 of 4): 9 of its 16 pixels.
    assert cells[0, 0, 1, 0] == pytest.approx(9 / 16) and cells[2, 3, 3, 0] == pytest.approx(0.25 / 16)
    with pytest.raises(ValueError, match="cells"):
        cell_targets(targets, (H, H), "any")


def test_coverage_energy_is_the_energy_at_the_image_resolution(rng):
    """Rao et al.'s energy on the map upsampled by repeating each cell, computed pixel by pixel."""
    targets, cams = batch(rng)
    pixels = np.maximum(np.repeat(np.repeat(cams, S // H, axis=1), S // H, axis=2), 0)
    box = np.maximum(targets, 0)
    share = (pixels * box).sum(axis=(1, 2, 3)) / (pixels.sum(axis=(1, 2, 3)) + 1e-6)
    loss = float(LocalizationLoss("energy", cells="coverage")(targets, cams))
    np.testing.assert_allclose(loss, np.mean(1 - share[[0, 2]]), rtol=1e-4)
    assert abs(loss - float(LocalizationLoss("energy")(targets, cams))) > 1e-3  # not the touching cells


def test_coverage_prefers_the_cell_most_inside_a_small_box():
    """A box over 3x3 pixels of one cell and 1x3 of its neighbour: "touch" cannot tell the two apart."""
    targets = np.zeros((1, S, S, 1), np.float32)
    targets[0, 1:4, 1:5] = 1.0  # columns 1..3 in cell 0, column 4 in cell 1
    most, least = np.full((1, H, H, 1), -3.0, np.float32), np.full((1, H, H, 1), -3.0, np.float32)
    most[0, 0, 0], least[0, 0, 1] = 5.0, 5.0
    touch = LocalizationLoss("energy")
    coverage = LocalizationLoss("energy", cells="coverage")
    assert float(touch(targets, most)) == pytest.approx(float(touch(targets, least)), abs=1e-6)
    assert float(coverage(targets, most)) < float(coverage(targets, least))


def test_energy_loss_is_the_share_of_positive_evidence_outside_the_box(rng):
    targets, cams = batch(rng)
    cells = reference_cells(targets)
    positive = np.maximum(cams, 0)
    share = (positive * cells).sum(axis=(1, 2, 3)) / (positive.sum(axis=(1, 2, 3)) + 1e-6)
    expected = np.mean(1 - share[[0, 2]])  # the image without a target is left out of the mean
    loss = float(LocalizationLoss("energy")(targets, cams))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_energy_loss_on_a_gate_reads_its_sigmoid_as_the_evidence(rng):
    targets, logits = batch(rng)
    cells = reference_cells(targets)
    gate = 1 / (1 + np.exp(-logits.astype(np.float64)))
    share = (gate * cells).sum(axis=(1, 2, 3)) / (gate.sum(axis=(1, 2, 3)) + 1e-6)
    loss = float(LocalizationLoss("energy", "sigmoid")(targets, logits))
    np.testing.assert_allclose(loss, np.mean(1 - share[[0, 2]]), rtol=1e-5)
    assert abs(loss - float(LocalizationLoss("energy")(targets, logits))) > 1e-3  # not the CAM's reading


def test_bce_loss_is_the_mean_cell_cross_entropy(rng):
    targets, cams = batch(rng)
    cells = reference_cells(targets)
    p = 1 / (1 + np.exp(-cams.astype(np.float64)))
    per_image = -(cells * np.log(p) + (1 - cells) * np.log(1 - p)).mean(axis=(1, 2, 3))
    loss = float(LocalizationLoss("bce")(targets, cams))
    np.testing.assert_allclose(loss, per_image[[0, 2]].mean(), rtol=1e-5)


@pytest.mark.parametrize("cells", ["touch", "coverage"])
@pytest.mark.parametrize("kind", ["energy", "bce"])
def test_images_without_a_target_add_no_loss_and_no_gradient(kind, cells, rng):
    targets, cams = batch(rng)
    cams = tf.Variable(cams)
    with tf.GradientTape() as tape:
        loss = LocalizationLoss(kind, cells=cells)(targets, cams)
    gradient = tape.gradient(loss, cams).numpy()
    assert np.all(gradient[1] == 0) and np.any(gradient[0] != 0)
    none = np.full_like(targets, NO_TARGET)
    assert float(LocalizationLoss(kind, cells=cells)(none, cams)) == 0.0  # a batch of negatives: none
    # The image without a target changes nothing: the loss of the other two alone.
    alone = LocalizationLoss(kind, cells=cells)(targets[[0, 2]], cams.numpy()[[0, 2]])
    np.testing.assert_allclose(float(loss), float(alone), rtol=1e-6)


def test_energy_is_zero_when_all_evidence_is_inside_the_box():
    targets = np.zeros((1, S, S, 1), np.float32)
    targets[0, :4, :4] = 1.0
    cams = np.full((1, H, H, 1), -3.0, np.float32)
    cams[0, 0, 0] = 5.0
    assert float(LocalizationLoss("energy")(targets, cams)) == pytest.approx(0.0, abs=1e-6)
    cams[0, 3, 3] = 5.0  # as much evidence outside: half
    assert float(LocalizationLoss("energy")(targets, cams)) == pytest.approx(0.5, abs=1e-6)


def test_config_round_trip_and_bad_kind():
    loss = LocalizationLoss("bce", "sigmoid", "coverage")
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, LocalizationLoss) and again.kind == "bce" and again.evidence == "sigmoid"
    assert again.cells == "coverage"
    with pytest.raises(ValueError, match="kind"):
        LocalizationLoss("none")
    with pytest.raises(ValueError, match="evidence"):
        LocalizationLoss("energy", "softmax")
    with pytest.raises(ValueError, match="cells"):
        LocalizationLoss("energy", cells="centre")
