"""``tf.data`` pipelines from a TFDS split to training or evaluation batches.

Training: ``preprocess (once, cached) -> epoch composition -> shuffle -> batch -> augment -> prefetch``.

* The deterministic preprocessing (resize, CLAHE, unsharp masking; OpenCV) runs once per
  image; its result is cached in memory (or in a cache file), so later epochs only pay
  for shuffling, augmentation and batching.
* Epoch composition: with ``augmented_copies=k`` an epoch holds every original plus ``k``
  randomly augmented copies of it, as in the method (k=2 for the elbow set: 3,495 images
  -> 10,485 per epoch; k=1 for MURA: 36,805 -> 73,610). With ``augmented_copies=0`` every
  image appears once per epoch, augmented on the fly.
* Augmentation is vectorised per batch (one affine resampling per image) and stateless:
  seeds come from ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``, so a
  seeded pipeline gives the same batches on every run and new augmentations every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tensorflow as tf

from tf_fracture.data.augment import AugmentConfig, augment_batch
from tf_fracture.data.preprocess import PreprocessConfig, tf_preprocess

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class PipelineConfig:
    """How batches are assembled (the preprocessing and augmentation have their own configs)."""

    batch_size: int = field(default=16, metadata={"help": "Images per batch."})
    augmented_copies: int = field(
        default=0, metadata={"help": "Augmented copies per original per epoch; 0 = augment each image on the fly."}
    )
    shuffle_buffer: int = field(default=4096, metadata={"help": "Shuffle buffer size (elements)."})
    cache: str | None = field(
        default="", metadata={"help": "'' caches preprocessed images in memory, a path caches to file, None disables."}
    )
    seed: int | None = field(default=None, metadata={"help": "Seed of shuffling and augmentation; None = random."})
    deterministic: bool = field(default=True, metadata={"help": "Keep element order fixed (set False for speed)."})
    drop_remainder: bool = field(default=False, metadata={"help": "Drop the last incomplete batch."})

    def __post_init__(self):
        for name in ("batch_size", "shuffle_buffer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive integer, but got `{name}={value!r}`.")
        if isinstance(self.augmented_copies, bool) or not isinstance(self.augmented_copies, int):
            raise ValueError(f"Expected `augmented_copies` to be an integer >= 0, got {self.augmented_copies!r}.")
        if self.augmented_copies < 0:
            raise ValueError(f"Expected `augmented_copies` >= 0, but got {self.augmented_copies}.")


# The method's epoch composition per training stage.
PIPELINE_PRESETS = {
    "mura": PipelineConfig(batch_size=16, augmented_copies=1),
    "elbow": PipelineConfig(batch_size=8, augmented_copies=2),
}


def image_and_label(example):
    """``(image uint8 (H, W, 1), label int64)`` from a TFDS example of any of our builders."""
    if not isinstance(example, dict) or "image" not in example or "label" not in example:
        raise ValueError("Expected TFDS examples with 'image' and 'label' features (load without as_supervised).")
    return example["image"], example["label"]


def preprocessed(dataset: tf.data.Dataset, preprocess: PreprocessConfig, cache: str | None = "") -> tf.data.Dataset:
    """``(image uint8 (S, S, 1), label)`` after the deterministic preprocessing, cached."""
    dataset = dataset.map(image_and_label, num_parallel_calls=AUTOTUNE)
    dataset = dataset.map(lambda image, label: (tf_preprocess(image, preprocess), label), num_parallel_calls=AUTOTUNE)
    if cache is not None:
        dataset = dataset.cache(cache)
    return dataset


def training_pipeline(
    dataset: tf.data.Dataset,
    preprocess: PreprocessConfig,
    config: PipelineConfig | None = None,
    augment: AugmentConfig | None = AugmentConfig(),  # noqa: B008  (frozen dataclass: immutable default)
) -> tf.data.Dataset:
    """Batches ``(images float32 (B, S, S, 1) in [0, 255], labels float32 (B,))`` for training.

    Args:
        dataset: a TFDS split of examples (dicts with ``image`` and ``label``).
        preprocess: resize / CLAHE / unsharp settings (see ``PREPROCESS_PRESETS``).
        config: batching, epoch composition, shuffling, caching and seeding.
        augment: augmentation ranges (default: the method's); None disables augmentation.

    Example:
        >>> split = tfds.load("synthetic_xray/tiny", split="train")
        >>> batches = training_pipeline(split, PREPROCESS_PRESETS["mura"], PIPELINE_PRESETS["mura"])
    """
    config = PipelineConfig() if config is None else config
    dataset = preprocessed(dataset, preprocess, config.cache)
    copies = config.augmented_copies if augment is not None else 0
    if copies:
        # Each original once (flag 0), then `copies` times marked for augmentation (flag 1).
        flags = tf.constant([0.0] + [1.0] * copies)

        def compose(image, label):
            n = copies + 1
            return tf.repeat(image[None], n, axis=0), tf.repeat(label[None], n, axis=0), flags

        dataset = dataset.map(compose).unbatch()
    else:
        dataset = dataset.map(lambda image, label: (image, label, tf.constant(1.0 if augment else 0.0)))
    dataset = dataset.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(config.batch_size, drop_remainder=config.drop_remainder)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda batch, seed: _augment_flagged(*batch, seed, augment), num_parallel_calls=AUTOTUNE
        )
    else:
        dataset = dataset.map(lambda images, labels, flags: (images, labels))
    dataset = dataset.map(_to_float, num_parallel_calls=AUTOTUNE)
    return dataset.with_options(_options(config.deterministic)).prefetch(AUTOTUNE)


def evaluation_pipeline(
    dataset: tf.data.Dataset, preprocess: PreprocessConfig, batch_size: int = 16, cache: str | None = ""
) -> tf.data.Dataset:
    """Batches ``(images float32 (B, S, S, 1), labels float32 (B,))`` in dataset order, no augmentation."""
    dataset = preprocessed(dataset, preprocess, cache).batch(batch_size).map(_to_float, num_parallel_calls=AUTOTUNE)
    return dataset.with_options(_options(True)).prefetch(AUTOTUNE)


def _augment_flagged(images, labels, flags, seed, augment: AugmentConfig):
    augmented = augment_batch(images, seed, augment)
    keep = tf.reshape(flags, [-1, 1, 1, 1]) > 0.5
    return tf.where(keep, augmented, images), labels


def _to_float(images, labels):
    return tf.cast(images, tf.float32), tf.cast(labels, tf.float32)


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    return options
