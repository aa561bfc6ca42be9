"""synthetic_xray: radiograph-like images with and without fractures, generated in-process.

Nothing is downloaded: every example is rendered by `tf_fracture.data.synthetic.generate_radiograph`
from (seed, index), so a build is deterministic and the splits are disjoint by construction
(each split draws from its own index range). Every image is its own synthetic patient.

    import tensorflow_datasets as tfds
    import tf_fracture_datasets.synthetic_xray.synthetic_xray_dataset_builder  # noqa: F401

    ds = tfds.load("synthetic_xray/tiny", split="train")
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from tf_fracture.data.builders import grey_png, radiograph_info
from tf_fracture.data.synthetic import FRACTURE_KINDS, LABEL_NAMES, generate_radiograph
from tf_fracture.validation import check_int

# Each split renders indices [offset, offset + size): disjoint for any size up to the gap, and a
# split's images do not change when another split grows.
SPLIT_OFFSETS = {"train": 0, "validation": 10**8, "test": 2 * 10**8}
# Images render in up to MAX_WORKERS threads, _CHUNK at a time (bounds the images held in memory).
MAX_WORKERS = 4
_CHUNK = 64


@dataclasses.dataclass
class SyntheticXrayConfig(tfds.core.BuilderConfig):
    """Split sizes, image size and seed of a synthetic_xray build."""

    num_train: int = 2000
    num_validation: int = 250
    num_test: int = 250
    image_size: int = 256
    seed: int = 0

    def __post_init__(self):
        for key in ("num_train", "num_validation", "num_test"):
            check_int(key, getattr(self, key), minimum=0, maximum=10**8)
        check_int("image_size", self.image_size, minimum=32)
        check_int("seed", self.seed, minimum=0)


class Builder(tfds.core.GeneratorBasedBuilder):
    """Synthetic radiographs with and without fractures, balanced 50/50."""

    # TFDS would otherwise resolve README/CITATIONS through the namespace package
    # `tf_fracture_datasets`, which importlib.resources cannot do under an editable install.
    code_path = epath.Path(__file__)
    pkg_dir_path = code_path.parent
    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "`fracture_mask`: the pixels the fracture changed (all zero without one), for guided training.",
        "1.2.0": "Fractures more conspicuous (wider, deeper lines; larger cortical steps); scenes unchanged.",
    }
    BUILDER_CONFIGS = [
        SyntheticXrayConfig(name="default", description="2000/250/250 images at 256 px."),
        SyntheticXrayConfig(
            name="tiny",
            description="24/8/8 images at 64 px, for tests.",
            num_train=24,
            num_validation=8,
            num_test=8,
            image_size=64,
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        extra = {
            "fracture_kind": tfds.features.ClassLabel(names=list(FRACTURE_KINDS)),
            "num_bones": np.int32,
            # None or one box around the fracture, as FracAtlas' fracture boxes.
            "fracture_boxes": tfds.features.Sequence(tfds.features.BBoxFeature()),
            # The pixels the fracture changed (255), a finer localisation target than its box.
            "fracture_mask": grey_png(),
        }
        return radiograph_info(self, LABEL_NAMES, extra)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # nothing to download
        sizes = {
            "train": self.builder_config.num_train,
            "validation": self.builder_config.num_validation,
            "test": self.builder_config.num_test,
        }
        return {split: self._generate_examples(SPLIT_OFFSETS[split], size) for split, size in sizes.items()}

    def _generate_examples(self, offset: int, size: int):
        config = self.builder_config
        render = functools.partial(generate_radiograph, size=config.image_size, seed=config.seed)
        indices = range(offset, offset + size)
        cpus = os.cpu_count()
        workers = min(cpus, MAX_WORKERS) if isinstance(cpus, int) else 1  # TFDS' test harness mocks `os`
        if workers < 2:
            yield from map(_example, map(render, indices))
            return
        # Rendering is NumPy/OpenCV work (~25 ms an image at 256 px) that mostly runs outside the GIL:
        # threads render a chunk at a time in parallel (1.5x on 2 cores), yielded in index order, so
        # a build is the same whatever the number of threads. (Processes would be faster, but a fork
        # of a process running TensorFlow can deadlock, and spawn re-runs an unguarded user script.)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(indices), _CHUNK):
                yield from map(_example, pool.map(render, indices[start : start + _CHUNK]))


def _example(sample):
    """The (key, example) of a rendered `SyntheticRadiograph`: everything the builder stores."""
    boxes = [tfds.features.BBox(*sample.fracture_box)] if sample.fracture_box else []
    return (
        sample.patient_id,
        {
            "image": sample.image[..., None],
            "label": sample.label,
            "patient_id": sample.patient_id,
            "filename": f"{sample.patient_id}.png",
            "fracture_kind": sample.fracture_kind,
            "num_bones": sample.num_bones,
            "fracture_boxes": boxes,
            "fracture_mask": (sample.fracture_mask[..., None] * np.uint8(255)).astype(np.uint8),
        },
    )
