"""Exact and near duplicate search (`tf_fracture.audit.duplicates`) and the records it reads."""

import time

import numpy as np
import pytest
from audit_helpers import THRESHOLD, jpeg, planted_records, radiograph

from tf_fracture.audit.duplicates import _connected_components, find_duplicates
from tf_fracture.audit.records import THUMBNAIL_SIZE, AuditRecord, thumbnail_vector
from tf_fracture.data.hashing import image_digest, perceptual_hash
from tf_fracture.data.io import scale_to_uint8


def test_connected_components_match_search():
    rng = np.random.default_rng(2)
    n = 60
    edges = rng.integers(0, n, (40, 2))
    component = _connected_components(n, edges[:, 0], edges[:, 1])
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


def test_hashed_records_give_the_same_findings():
    records = planted_records()
    hashed = [r.hashed() for r in records]
    assert all(r.image is None for r in hashed)
    assert find_duplicates(hashed, THRESHOLD) == find_duplicates(records, THRESHOLD)


def test_hashed_record_holds_the_fingerprints_of_its_grey_pixels():
    image = radiograph(7)
    rgb = np.stack([image] * 3, -1)
    record = AuditRecord("a.png", 1, image=rgb).hashed()
    assert record.image is None
    assert record.digest == image_digest(rgb)  # of the pixels as decoded
    assert record.phash == perceptual_hash(image)  # of their grey reduction
    np.testing.assert_allclose(record.thumbnail, thumbnail_vector(image))
    assert record.thumbnail.shape == (THUMBNAIL_SIZE**2,)
    assert np.linalg.norm(record.thumbnail) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(record.thumbnail.mean())) < 1e-6
    broken = AuditRecord("b.png", 0, error="truncated")
    assert broken.hashed() is broken and not broken.hashable


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


def test_near_candidates_are_confirmed_by_thumbnail_correlation():
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


def test_16_bit_images_are_hashed_through_the_readers_mapping():
    # The audit must see a 16-bit image as the reader and the builders do: one hot pixel must not
    # turn it black before hashing (the per-image min-max stretch did).
    rng = np.random.default_rng(0)
    image = rng.integers(1000, 3000, (64, 64)).astype(np.uint16)
    image[0, 0] = 65535
    record = AuditRecord(key="a.png", label=0, image=image).hashed()
    expected = scale_to_uint8(image)
    assert expected.mean() > 60  # the old stretch gave about 8
    assert record.phash == perceptual_hash(expected)
    np.testing.assert_array_equal(record.thumbnail, thumbnail_vector(expected))
