"""Box hit rate: peaks, box areas and the chance rate on hand-made heatmaps and boxes (exact numbers)."""

import numpy as np
import pytest

from tf_fracture.data.preprocess import resize
from tf_fracture.explain import (
    box_area_fraction,
    box_hit_rate,
    boxes_after_resize,
    peak,
    peak_distance,
    peak_in_boxes,
)


def heatmap_with_peak(row, col, shape=(4, 4)):
    heatmap = np.zeros(shape, np.float32)
    heatmap[row, col] = 1.0
    return heatmap


def test_peak_is_the_argmax_pixel_centre():
    assert peak(heatmap_with_peak(1, 2)) == (0.375, 0.625)
    assert peak(heatmap_with_peak(3, 0, shape=(4, 8))) == (0.875, 0.0625)


def test_a_plateau_peaks_at_its_centre_not_at_the_image_edge():
    from tf_fracture.explain.gradcam import upsample_and_scale

    # A 2x2 map upsampled to 64 px: its top-left cell's maximum is a flat plateau over pixels 0..15 (the
    # clamped edge of bilinear interpolation); the peak is the plateau's centre, not the corner pixel.
    heatmap = upsample_and_scale(np.array([[[3.0, 1.0], [0.5, 2.0]]]), (64, 64))[0]
    assert peak(heatmap) == (7.5 / 64, 7.5 / 64)
    assert not peak_in_boxes(heatmap, [[0.0, 0.0, 0.05, 0.05]]) and peak_in_boxes(heatmap, [[0.1, 0.1, 0.15, 0.15]])
    # Two separate maxima: the one nearest their centroid, the first of equals (deterministic).
    twin = np.zeros((5, 5))
    twin[0, 0] = twin[4, 4] = twin[2, 2] = 1.0
    assert peak(twin) == (0.5, 0.5)
    twin[2, 2] = 0.0
    assert peak(twin) == (0.1, 0.1)


def test_peak_in_boxes_edges_included():
    heatmap = heatmap_with_peak(1, 2)  # peak at (0.375, 0.625)
    assert peak_in_boxes(heatmap, [[0.25, 0.5, 0.5, 0.75]])
    assert not peak_in_boxes(heatmap, [[0.0, 0.0, 0.25, 0.25]])
    assert peak_in_boxes(heatmap, [[0.0, 0.0, 0.25, 0.25], [0.375, 0.625, 1.0, 1.0]])  # second box, on its corner
    assert peak_in_boxes(heatmap, [[0.0, 0.0, 0.375, 0.625]])  # on its far corner
    assert not peak_in_boxes(heatmap, [[0.25, 0.5, 0.5, 0.6]])  # x = 0.625 just right of the box
    assert not peak_in_boxes(heatmap, np.zeros((0, 4)))


def test_box_area_fraction_counts_overlaps_once():
    assert box_area_fraction([[0.0, 0.0, 0.5, 0.5]], (4, 4)) == 4 / 16
    # Pixel centres 0.125, 0.375, 0.625, 0.875: rows/cols {0, 1} and {1, 2}, overlapping at (1, 1).
    assert box_area_fraction([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]], (4, 4)) == 7 / 16
    assert box_area_fraction([[0.0, 0.0, 1.0, 1.0]], (3, 5)) == 1.0


def test_box_hit_rate_and_its_chance_baseline():
    flat = np.zeros((4, 4), np.float32)
    result = box_hit_rate(
        [heatmap_with_peak(0, 0), heatmap_with_peak(3, 3), heatmap_with_peak(2, 2), flat],
        [
            [[0.0, 0.0, 0.5, 0.5]],  # hit, area 4/16
            [[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]],  # miss, area 7/16
            [],  # no box: left out
            [[0.0, 0.0, 1.0, 0.5]],  # a flat map has no peak: a miss, area 8/16
        ],
    )
    assert result.n == 3 and result.without_boxes == 1 and result.flat == 1
    assert result.hits == (True, False, False)
    assert result.hit_rate == pytest.approx(1 / 3)
    assert result.chance_rate == pytest.approx((4 / 16 + 7 / 16 + 8 / 16) / 3)
    assert result.to_dict()["n"] == 3
    # Peak centre (3.5, 3.5) px: 1.5 px from the first box on each axis, 0.5 from the second's corner.
    assert result.distances[:2] == (0.0, pytest.approx(np.hypot(0.5, 0.5))) and np.isnan(result.distances[2])
    assert result.to_dict()["median_peak_distance_px"] == pytest.approx(np.hypot(0.5, 0.5) / 2)


def test_peak_distance_is_the_distance_to_the_nearest_box_point(rng):
    """Against a brute-force reference: the nearest of a dense grid of points over each box."""
    for _ in range(20):
        height, width = rng.integers(4, 40, size=2)
        heatmap = rng.random((height, width))
        corners = np.sort(rng.random((3, 2, 2)), axis=1)  # 3 boxes: rows (y, x) of the min and max corner
        boxes = np.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], axis=1)
        y, x = peak(heatmap)
        nearest = np.inf
        for y0, x0, y1, x1 in boxes:
            ys, xs = np.meshgrid(np.linspace(y0, y1, 401), np.linspace(x0, x1, 401), indexing="ij")
            nearest = min(nearest, np.hypot((ys - y) * height, (xs - x) * width).min())
        step = np.hypot(height, width) / 400  # the reference grid's spacing, at most
        assert peak_distance(heatmap, boxes) == pytest.approx(nearest, abs=step)
        assert (peak_distance(heatmap, boxes) == 0) == peak_in_boxes(heatmap, boxes)
    assert peak_distance(heatmap_with_peak(0, 0), np.zeros((0, 4))) == np.inf


def test_no_boxes_gives_nan_rates():
    result = box_hit_rate([heatmap_with_peak(0, 0)], [[]])
    assert result.n == 0 and np.isnan(result.hit_rate) and np.isnan(result.chance_rate)


def test_boxes_follow_the_padding_of_the_preprocessing():
    # A bright rectangle in a 40x20 image at rows 10..20, cols 5..10: its box in the padded square image
    # must enclose the same bright pixels that tf_fracture.data.preprocess.resize puts there.
    image = np.zeros((40, 20), np.uint8)
    image[10:20, 5:10] = 255
    box = [[10 / 40, 5 / 20, 20 / 40, 10 / 20]]
    np.testing.assert_allclose(boxes_after_resize(box, (40, 20), "stretch"), box)
    padded = boxes_after_resize(box, (40, 20), "pad")
    np.testing.assert_allclose(padded, [[10 / 40, (10 + 5) / 40, 20 / 40, (10 + 10) / 40]])
    square = resize(image, 40, "pad")
    rows, cols = np.nonzero(square > 128)
    np.testing.assert_array_equal([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], padded[0] * 40)


def test_bad_boxes_and_shapes_are_refused():
    with pytest.raises(ValueError, match="normalised"):
        peak_in_boxes(heatmap_with_peak(0, 0), [[0.5, 0.0, 0.2, 1.0]])  # ymax < ymin
    with pytest.raises(ValueError, match="normalised"):
        box_area_fraction([[0.0, 0.0, 1.5, 1.0]], (4, 4))  # pixels, not normalised
    with pytest.raises(ValueError, match="one box list per heatmap"):
        box_hit_rate([heatmap_with_peak(0, 0)], [])
    with pytest.raises(ValueError, match="2-D heatmap"):
        peak(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="resize_mode"):
        boxes_after_resize([[0, 0, 1, 1]], (4, 4), "crop")
