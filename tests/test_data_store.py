"""The preprocessed-image store: memory and disk round trips, keyed folders, damaged stores, no TensorFlow."""

import json
import os

import numpy as np
import pytest

from tf_fracture.data.store import open_store, store_key, store_path, write_store


def batches(rng, sizes=(3, 2), side=8):
    return [
        (rng.integers(0, 256, (n, side, side, 1), dtype=np.uint8), rng.integers(0, 2, n, dtype=np.int64)) for n in sizes
    ]


@pytest.mark.parametrize("count", [None, 5])
def test_memory_store_round_trip(rng, count):
    data = batches(rng)
    store = write_store(None, "", {"source": "x"}, iter(data), count)
    np.testing.assert_array_equal(store.images, np.concatenate([b[0] for b in data]))
    np.testing.assert_array_equal(store.labels, np.concatenate([b[1] for b in data]))
    assert len(store) == 5 and store.image_shape == (8, 8, 1) and store.path is None
    images, labels = store.gather([4, 0, 4])
    np.testing.assert_array_equal(images, store.images[[4, 0, 4]])
    np.testing.assert_array_equal(labels, store.labels[[4, 0, 4]])


def test_memory_store_refuses_a_wrong_count(rng):
    with pytest.raises(ValueError, match="Expected 4 images, but the source holds more"):
        write_store(None, "", {}, iter(batches(rng)), 4)


def test_disk_store_round_trip_in_its_keyed_folder(rng, tmp_path):
    identity = {"source": "fake/train", "preprocess": {"image_size": 8}}
    key = store_key(identity)
    assert key == store_key(dict(reversed(list(identity.items()))))  # order-free
    assert key != store_key({**identity, "source": "fake/validation"})
    assert open_store(str(tmp_path), key) is None
    data = batches(rng)
    store = write_store(str(tmp_path), key, identity, iter(data))
    assert store.path == store_path(str(tmp_path), key) and isinstance(store.images, np.memmap)
    np.testing.assert_array_equal(store.images, np.concatenate([b[0] for b in data]))
    assert os.listdir(tmp_path) == [os.path.basename(store.path)]  # no partial folder left
    with open(os.path.join(store.path, "manifest.json")) as file:
        manifest = json.load(file)
    assert manifest["key"] == key and manifest["count"] == 5 and manifest["source"] == "fake/train"
    again = open_store(str(tmp_path), key)
    np.testing.assert_array_equal(again.labels, store.labels)


def test_interrupted_write_leaves_nothing_to_read(rng, tmp_path):
    def failing():
        yield from batches(rng)
        raise KeyboardInterrupt

    key = store_key({"source": "x"})
    with pytest.raises(KeyboardInterrupt):
        write_store(str(tmp_path), key, {}, failing())
    assert os.listdir(tmp_path) == [] and open_store(str(tmp_path), key) is None


def test_store_of_another_format_is_refused(rng, tmp_path):
    key = store_key({"source": "x"})
    store = write_store(str(tmp_path), key, {}, iter(batches(rng)))
    manifest_path = os.path.join(store.path, "manifest.json")
    with open(manifest_path) as file:
        manifest = json.load(file)
    with open(manifest_path, "w") as file:
        json.dump({**manifest, "format": 99}, file)
    with pytest.raises(ValueError, match=r"format 99.*Delete that folder"):
        open_store(str(tmp_path), key)
