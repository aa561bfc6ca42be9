"""Image hashes (`tf_fracture.data.hashing`) against independent references: NumPy DCT, Python popcount."""

import cv2
import numpy as np
import pytest
from audit_helpers import THRESHOLD, jpeg, radiograph

from tf_fracture.data.hashing import (
    _popcount64_table,
    hamming,
    hashes_to_array,
    image_digest,
    near_pairs,
    perceptual_hash,
    popcount64,
)


def dct_matrix(n):
    """Orthonormal DCT-II matrix, written from the definition (the reference for cv2.dct)."""
    k, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    m[0] /= np.sqrt(2.0)
    return m


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


def test_image_digest():
    image = radiograph(0)
    assert image_digest(image) == image_digest(image.copy())
    assert image_digest(image[:, ::-1][:, ::-1]) == image_digest(image)  # a non-contiguous view, same pixels
    changed = image.copy()
    changed[10, 10] ^= 1
    assert image_digest(changed) != image_digest(image)
    assert image_digest(image.reshape(48, 192)) != image_digest(image)  # same bytes, other shape
    assert len(image_digest(image)) == 64
