"""Registers tf-fracture's TFDS builders, so that ``tfds.load(name)`` finds them.

    import tf_fracture.datasets  # noqa: F401
    ds = tfds.load("synthetic_xray/tiny", split="train")

The builders live in the repository's ``datasets/`` folder, installed under the import name
``tf_fracture_datasets`` (never ``datasets``, which is Hugging Face's package).
"""

from tf_fracture_datasets.elbow import elbow_dataset_builder
from tf_fracture_datasets.fracatlas import fracatlas_dataset_builder
from tf_fracture_datasets.mura import mura_dataset_builder
from tf_fracture_datasets.synthetic_xray import synthetic_xray_dataset_builder

BUILDERS = {
    "mura": mura_dataset_builder.Builder,
    "elbow": elbow_dataset_builder.Builder,
    "fracatlas": fracatlas_dataset_builder.Builder,
    "synthetic_xray": synthetic_xray_dataset_builder.Builder,
}

__all__ = ["BUILDERS"]
