"""Image hashes for the data audit: exact pixel digests and 64-bit DCT perceptual hashes.

- `image_digest` names the decoded pixels: two files with identical pixels (a PNG and a
  lossless re-save of it, the same image under two names) get the same digest, whatever their bytes.
- `perceptual_hash` is the classic DCT pHash: it survives resizing and JPEG re-encoding, so images
  whose hashes lie a few bits apart (`hamming`) are near duplicates.
- `near_pairs` finds every pair of hashes within a Hamming distance, vectorised with NumPy (4,000
  images, 8 million pairs, in well under a second).

Reference: C. Zauner, "Implementation and Benchmarking of Perceptual Image Hash Functions", 2010.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from tf_fracture.validation import check_int

HASH_BITS = 64
_HASH_SIZE = 8  # the top-left 8x8 block of DCT coefficients
_DCT_SIZE = 32  # images are reduced to 32x32 before the DCT
_POPCOUNT_8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
# Rows of the pair matrix compared at once by `near_pairs`: bounds its memory to about
# `_BLOCK_ROWS * n` bytes per temporary.
_BLOCK_ROWS = 512


def image_digest(image: np.ndarray) -> str:
    """SHA-256 of an image's decoded pixels, its shape and dtype included.

    Args:
        image: the decoded pixels, any shape and dtype.

    Returns:
        64 hex characters. Equal for equal pixels (and shape and dtype), whatever file they came from.

    Example:
        >>> image_digest(np.zeros((2, 2), np.uint8))[:12]
        '0f4c62411b61'
    """
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{image.dtype.str}{image.shape}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash (pHash) of a greyscale uint8 image.

    The image is reduced to 32x32 (`cv2.INTER_AREA`, in float32), transformed with `cv2.dct`, and
    the 64 coefficients of the top-left 8x8 block (the lowest frequencies, DC term included) are
    compared with their median: bit set where the coefficient is above it. Bits are packed in
    row-major order, the first coefficient in the most significant bit.

    Args:
        image: a `(H, W)` or `(H, W, 1)` uint8 array.

    Returns:
        An int in `[0, 2**64)`. Resized or JPEG re-encoded copies of an image land a few bits
        apart; unrelated images about 32 bits apart.

    Raises:
        ValueError: the image is not greyscale uint8 or is empty.

    Example:
        >>> noise = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
        >>> image = cv2.GaussianBlur(noise, (0, 0), 6)
        >>> h = perceptual_hash(image)
        >>> hamming(h, perceptual_hash(cv2.resize(image, None, fx=0.9, fy=0.9))) <= 4
        True
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(
            f"Expected a greyscale uint8 image of shape (H, W) or (H, W, 1), but got shape={image.shape} "
            f"dtype={image.dtype}. Reduce colour images to grey and scale other dtypes to uint8 first."
        )
    if image.size == 0:
        raise ValueError(f"Expected a non-empty image, but got shape={image.shape}.")
    small = cv2.resize(image.astype(np.float32), (_DCT_SIZE, _DCT_SIZE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:_HASH_SIZE, :_HASH_SIZE].ravel()
    bits = low > np.median(low)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of bits in which two hashes differ.

    Example:
        >>> hamming(0b1011, 0b0001)
        2
    """
    if a < 0 or b < 0:
        raise ValueError(f"Expected non-negative hashes, but got a={a}, b={b}.")
    return bin(a ^ b).count("1")


def hashes_to_array(hashes) -> np.ndarray:
    """Packs Python-int hashes (each `< 2**64`) into a uint64 array."""
    return np.array([int(h) for h in hashes], dtype=np.uint64).reshape(-1)


def popcount64(values: np.ndarray) -> np.ndarray:
    """Number of set bits of each element of a uint64 array (a uint8 array of the same shape)."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0: a hardware popcount
        return np.bitwise_count(values).astype(np.uint8, copy=False)
    return _popcount64_table(values)


def _popcount64_table(values: np.ndarray) -> np.ndarray:
    # A 256-entry table over the 8 bytes of each value: the path for NumPy < 2.0.
    values = np.ascontiguousarray(values, dtype=np.uint64)
    per_byte = _POPCOUNT_8[values.view(np.uint8)].reshape(*values.shape, 8)
    return per_byte.sum(axis=-1, dtype=np.uint8)


def near_pairs(hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair `i < j` of hashes within `threshold` bits of each other.

    Compares all `n * (n - 1) / 2` pairs, a block of rows at a time, with XOR and popcount.

    Args:
        hashes: a 1-D uint64 array (see `hashes_to_array`).
        threshold: the largest Hamming distance that counts as near, in `[0, 64]`.

    Returns:
        `(i, j, distance)`: three 1-D arrays of equal length, sorted by `i` then `j`.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64).reshape(-1)
    check_int("threshold", threshold, minimum=0, maximum=HASH_BITS)
    n = len(hashes)
    found_i, found_j, found_d = [], [], []
    for start in range(0, max(n - 1, 0), _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n - 1)
        # Row r compares hashes[r] with hashes[r + 1:]; the block covers columns start + 1 .. n - 1.
        distances = popcount64(hashes[start:stop, None] ^ hashes[None, start + 1 :])
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(start + 1, n)[None, :]
        ii, jj = np.nonzero((distances <= threshold) & (cols > rows))
        found_i.append(ii + start)
        found_j.append(jj + start + 1)
        found_d.append(distances[ii, jj])
    if not found_i:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.uint8)
    return (
        np.concatenate(found_i).astype(np.int64),
        np.concatenate(found_j).astype(np.int64),
        np.concatenate(found_d).astype(np.uint8),
    )
