"""Synthetic radiographs for the audit's tests (import as `from audit_helpers import ...`)."""

import functools

import cv2
import numpy as np

from tf_fracture.audit import AuditRecord

THRESHOLD = 4


def radiograph(seed, size=96):
    """A smooth, structured greyscale image: low-frequency background and a bright oblique 'bone'."""
    rng = np.random.default_rng(seed)
    background = cv2.resize(rng.random((6, 6), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    image = 40 + 80 * background
    centre = tuple(int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
    axes = (int(rng.integers(size // 3, size // 2)), int(rng.integers(size // 12, size // 6)))
    cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, 200.0, -1)
    image = cv2.GaussianBlur(image, (5, 5), 0) + rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg(image, quality=90):
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def planted_records():
    """Clean images plus one of each finding: the flagged keys are `FLAGGED`."""
    images = {f"clean_{n}.png": radiograph(100 + n) for n in range(6)}
    dup, near = radiograph(1), radiograph(2)
    split_of = ["train", "train", "train", "validation", "test", "test"]
    records = [AuditRecord(key, n % 2, split_of[n], f"p{n}", image=im) for n, (key, im) in enumerate(images.items())]
    return [
        *records,
        # The same pixels in train and test: a leak between splits.
        AuditRecord("dup_train.png", 1, "train", "pa", image=dup),
        AuditRecord("dup_test.png", 1, "test", "pb", image=dup.copy()),
        # A JPEG re-encoding of an image, with the other label.
        AuditRecord("near_a.png", 1, "train", "pc", image=near),
        AuditRecord("near_b.jpg", 0, "train", "pd", image=jpeg(near)),
        # One patient, two different images, in two splits.
        AuditRecord("patient_train.png", 0, "train", "leaky", image=radiograph(3)),
        AuditRecord("patient_test.png", 0, "test", "leaky", image=radiograph(4)),
        AuditRecord("broken.png", 1, "validation", "pe", error="truncated PNG data (no IEND chunk)"),
    ]


FLAGGED = {
    "dup_train.png",
    "dup_test.png",
    "near_a.png",
    "near_b.jpg",
    "patient_train.png",
    "patient_test.png",
    "broken.png",
}


def tiny_tfds_builder(data_dir):
    """A prepared two-split TFDS dataset, `audit_tiny_dataset`: an exact copy across splits, a patient in both."""
    builder = _tiny_tfds_class()(data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder


@functools.cache  # TFDS registers a builder class by its name when it is defined: define it once
def _tiny_tfds_class():
    import tensorflow_datasets as tfds  # imported here to keep the other tests light

    images = {"x.png": radiograph(30), "y.png": radiograph(31), "z.png": radiograph(32)}

    class AuditTinyDataset(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            # DatasetInfo directly: dataset_info_from_configs looks for metadata files in the builder's package.
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                        "label": tfds.features.ClassLabel(names=["normal", "fractured"]),
                        "patient_id": tfds.features.Text(),
                        "filename": tfds.features.Text(),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples([("x.png", 0, "p1"), ("y.png", 1, "p2")]),
                "test": self._generate_examples([("x_copy.png", 0, "p3"), ("z.png", 1, "p2")]),
            }

        def _generate_examples(self, rows):
            for name, label, patient in rows:
                image = images[name.replace("_copy", "")]
                yield name, {"image": image[:, :, None], "label": label, "patient_id": patient, "filename": name}

    return AuditTinyDataset
