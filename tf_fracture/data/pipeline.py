"""``tf.data`` pipelines from a TFDS split to training or evaluation batches.

Training: ``preprocess every image once into a store -> per epoch: a permutation of the whole epoch ->
batch -> gather from the store -> augment the copies -> prefetch``.

* The deterministic preprocessing (resize, CLAHE, unsharp masking; OpenCV) runs once per image
  into a :class:`~tf_fracture.data.store.PreprocessedStore` with random access: in memory
  (``PipelineConfig(cache="")``), or in a cache directory on disk read through a memory map for sets
  that do not fit in memory (``cache="/path/to/dir"``). On disk each store sits in a subfolder named
  by a hash of what produced it (the source's identity and content fingerprint, the full
  :class:`PreprocessConfig`, the preprocessing's output on the first examples), with a
  ``manifest.json`` saying what it holds: a cache is never read for another dataset, split,
  preprocessing or size, and later runs skip the preprocessing.
* Epoch composition: with ``augmented_copies=k`` an epoch holds every original plus ``k`` augmented
  copies of it, as in the method (k=2 for the elbow set: 3,495 images -> 10,485 per epoch; k=1 for
  MURA: 36,805 -> 73,610). With ``k=0`` every image appears once per epoch, augmented.
* Epoch ``e``'s order is one uniform permutation of all its ``N (k+1)`` elements
  (``tf.random.experimental.stateless_shuffle`` of their ids; 0.6 MB for MURA's 73,610): an image's
  copies are as far apart as chance puts them, and the first batches draw from the whole set. Each
  augmentation is a stateless function of ``(seed, epoch, element)``. So epoch ``e`` can be built on
  its own (:meth:`TrainingPipeline.epoch`) and equals, bit for bit, epoch ``e`` of an uninterrupted
  run: a run killed mid-training resumes exactly with ``pipeline.epochs(start_epoch=e)``.

Why not TensorFlow's own random access: ``tf.data.experimental.global_shuffle`` and ``.at`` need every
upstream dataset to support random access, which ``Dataset.load`` and file ``cache`` do not (TF 2.21);
an in-memory ``cache()`` does, but a 5.4 GB set does not fit everywhere. A NumPy memory map does both.
``tf.random.experimental.index_shuffle`` would avoid materialising the order, but its permutations
are far from uniform at these sizes (measured in TF 2.21 on 40,000 elements: lag-1 correlation -0.13,
and ids 2i and 2i+1 a median 0.39 M apart instead of 0.29 M); the order is small enough to draw in full.
Stateless ops repeat on the same TensorFlow version; an exact resume needs the version of the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
import tensorflow as tf

from tf_fracture.data.augment import AugmentConfig, sample_parameters, transform_batch
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.data.store import STORE_FORMAT, PreprocessedStore, open_store, store_key, write_store
from tf_fracture.data.targets import NO_TARGET, target_mask
from tf_fracture.validation import check_choice, check_int

AUTOTUNE = tf.data.AUTOTUNE
# With extra targets (multi-task), batches are (images, {FRACTURE_TARGET: labels, name: target, ...}).
FRACTURE_TARGET = "fracture"
# With localisation targets (guided training), batches are (images, {FRACTURE_TARGET: labels, CAM_TARGET: masks}):
# the name of the classifier's class-activation-map output (tf_fracture.models.CAM_LAYER).
CAM_TARGET = "cam"
# The features a builder may hold the fracture's place in (normalised boxes; a pixel mask).
BOXES_FEATURE, MASK_FEATURE = "fracture_boxes", "fracture_mask"
# What a localisation target is made from: the fracture boxes, or synthetic_xray's pixel mask (its boxes
# where an example has no mask). Measured on the demo (synthetic_xray, MobileNetV3-Small at 256 px,
# energy loss): validation AUROC after 3 epochs 0.81 with boxes, 0.59 with the mask (see the README).
LOCALIZATION_TARGETS = ("box", "mask")
# Examples whose raw pixels and preprocessed output enter a disk store's key (cheap: read and
# preprocessed once per pipeline construction).
FINGERPRINT_EXAMPLES = 8
_BUILD_BATCH = 64
# Streams of the stateless randomness, folded into the seed so that they never share numbers.
_ORDER, _AUGMENT = 1, 2


@dataclass(frozen=True)
class PipelineConfig:
    """How batches are assembled (the preprocessing and augmentation have their own configs)."""

    batch_size: int = field(default=16, metadata={"help": "Images per batch."})
    augmented_copies: int = field(
        default=0, metadata={"help": "Augmented copies per original per epoch; 0 = augment each image on the fly."}
    )
    cache: str | None = field(
        default="",
        metadata={
            "help": "'' keeps preprocessed images in memory; a directory keeps them on disk, one subfolder per "
            "source + preprocessing (reused by later runs); None (evaluation only) preprocesses on the fly."
        },
    )
    seed: int | None = field(
        default=None, metadata={"help": "Seed of shuffling and augmentation; None = a random one (see .seed)."}
    )
    deterministic: bool = field(
        default=True, metadata={"help": "Keep element order fixed (False is faster but breaks exact resume)."}
    )
    drop_remainder: bool = field(default=False, metadata={"help": "Drop the last incomplete batch of each epoch."})

    def __post_init__(self):
        check_int("batch_size", self.batch_size)
        check_int("augmented_copies", self.augmented_copies, minimum=0)
        if self.cache is not None and not isinstance(self.cache, str):
            raise ValueError(f"Expected `cache` to be '', a directory path or None, but got `cache={self.cache!r}`.")
        check_int("seed", self.seed, minimum=0, allow_none=True)


# The method's epoch composition per training stage.
PIPELINE_PRESETS = {
    "mura": PipelineConfig(batch_size=16, augmented_copies=1),
    "elbow": PipelineConfig(batch_size=8, augmented_copies=2),
}


def tf_preprocess(image: tf.Tensor, config: PreprocessConfig) -> tf.Tensor:
    """:func:`~tf_fracture.data.preprocess.preprocess` as a TensorFlow op, for ``tf.data.Dataset.map``.

    Args:
        image: uint8 ``(H, W)`` or ``(H, W, 1)`` of any size.
        config: a :class:`PreprocessConfig`.

    Returns:
        uint8 ``(S, S, 1)`` with its static shape set.

    Example:
        >>> config = get_preprocess_config("mura")
        >>> ds = ds.map(lambda x, y: (tf_preprocess(x, config), y), num_parallel_calls=tf.data.AUTOTUNE)
    """
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"Expected a uint8 image, but got dtype {image.dtype.name}.")
    rank = image.shape.rank
    if rank is not None and rank not in (2, 3):
        raise ValueError(f"Expected an image of shape (H, W) or (H, W, 1), but got shape {image.shape}.")
    if rank == 3 and image.shape[-1] not in (None, 1):
        raise ValueError(f"Expected a single-channel image (H, W, 1), but got shape {image.shape}.")

    def run(pixels: np.ndarray) -> np.ndarray:
        return _preprocess_numpy(pixels, config)

    # OpenCV is the reference: TensorFlow has no CLAHE, and a re-implementation in TF ops would not
    # match OpenCV's histogram clipping and tile interpolation bit for bit. tf.numpy_function keeps
    # the exact reference. OpenCV releases the GIL, so parallel map calls still scale, and being
    # deterministic this step runs once per image into a store, not every epoch.
    out = tf.numpy_function(run, [image], tf.uint8, stateful=False, name="preprocess")
    out.set_shape((config.image_size, config.image_size, 1))
    return out


def image_and_label(example):
    """``(image uint8 (H, W, 1), label int64)`` from a TFDS example of any of our builders."""
    if not isinstance(example, dict) or "image" not in example or "label" not in example:
        raise ValueError("Expected TFDS examples with 'image' and 'label' features (load without as_supervised).")
    return example["image"], tf.cast(example["label"], tf.int64)


def tf_target_mask(example, config: PreprocessConfig, target: str = "box") -> tf.Tensor:
    """The example's localisation target at the model's size: uint8 ``(S, S, 1)`` (`tf_fracture.data.targets`).

    ``target="box"``: from the example's ``fracture_boxes``. ``"mask"``: from its ``fracture_mask`` (a
    pixel mask) when it marks any pixel, else from its boxes. All zero (no target) for an example with
    neither, or a builder without them.
    """
    check_choice("target", target, LOCALIZATION_TARGETS)
    image = example["image"]
    boxes = example.get(BOXES_FEATURE, tf.zeros([0, 4], tf.float32))
    mask = example.get(MASK_FEATURE) if target == "mask" else None
    mask = tf.zeros([0, 0, 1], tf.uint8) if mask is None else mask

    def run(shape, boxes, mask):
        return target_mask(tuple(shape[:2]), config=config, boxes=boxes, mask=mask if mask.size else None)[..., None]

    out = tf.numpy_function(run, [tf.shape(image), boxes, mask], tf.uint8, stateful=False, name="target_mask")
    out.set_shape((config.image_size, config.image_size, 1))
    return out


def preprocessed(
    dataset: tf.data.Dataset, preprocess: PreprocessConfig, localization: bool = False, target: str = "box"
) -> tf.data.Dataset:
    """``(image uint8 (S, S, 1), label int64)`` after the deterministic preprocessing, streamed in order.

    With ``localization``, ``(image, label, mask uint8 (S, S, 1))``: the ``target`` of `tf_target_mask`.
    """
    if localization:

        def with_target(example):
            image, label = image_and_label(example)
            return tf_preprocess(image, preprocess), label, tf_target_mask(example, preprocess, target)

        return dataset.map(with_target, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.map(image_and_label, num_parallel_calls=AUTOTUNE)
    return dataset.map(
        lambda image, label: (tf_preprocess(image, preprocess), label), num_parallel_calls=AUTOTUNE, deterministic=True
    )


def preprocessed_store(
    dataset: tf.data.Dataset,
    preprocess: PreprocessConfig,
    cache: str = "",
    source: str | None = None,
    localization: bool = False,
    target: str = "box",
    progress: Callable[[int], None] | None = None,
) -> PreprocessedStore:
    """Every image of ``dataset`` preprocessed once, with random access.

    Args:
        dataset: a finite TFDS split of examples (dicts with ``image`` and ``label``).
        preprocess: resize / CLAHE / unsharp settings.
        cache: ``""`` keeps the store in memory; a directory keeps it on disk in the subfolder of this
            source and preprocessing (built on first use, read by later runs).
        source: the dataset's identity, e.g. ``"fracatlas/1.0.0/train"``. Optional: the store's key
            also covers the dataset's element spec, length and the pixels and labels of its first
            examples; name the source when two datasets could share those (e.g. a dataset built from
            a generator whose later examples changed).
        localization: also store each image's localisation target (`tf_target_mask`: its
            fracture mask or boxes at the image's size) as the store's ``masks``; part of the key.

    Raises:
        ValueError: an infinite dataset, or a damaged store in the cache directory.
    """
    if cache is None:
        raise ValueError(
            "Training draws each epoch as a permutation of the whole epoch, so it needs the preprocessed "
            "images with random access: set `cache=''` (in memory) or `cache='/some/dir'` (on disk), not None."
        )
    pairs = dataset.map(image_and_label)
    count = int(pairs.cardinality())
    if count == tf.data.INFINITE_CARDINALITY:
        raise ValueError("Expected a finite dataset, but got an infinite one (remove `.repeat()`).")
    batches = _batches(dataset, preprocess, localization, target, progress)
    if cache == "":
        manifest = {"source": source, "preprocess": dataclasses.asdict(preprocess)}
        return write_store(None, "", manifest, batches, count if count >= 0 else None)
    if count < 0:  # unknown (e.g. from_generator): the key needs it; count once, without preprocessing
        count = int(pairs.reduce(np.int64(0), lambda n, _: n + 1))
    identity = _identity(pairs, preprocess, count, source)
    if localization:
        identity["localization_target"] = target
        identity["localization_first_examples_sha256"] = _targets_fingerprint(dataset, preprocess, target)
    key = store_key(identity)
    store = open_store(cache, key)
    if store is None:
        store = write_store(cache, key, identity, batches, count)
    if len(store) != count:
        raise ValueError(f"The store at {store.path!r} holds {len(store)} images but the dataset {count}: delete it.")
    return store


class TrainingPipeline:
    """Training epochs drawn from a :class:`PreprocessedStore`; epoch ``e`` is a pure function of (seed, e).

    Use :func:`training_pipeline` to build one from a TFDS split.

    With extra ``targets`` in the store (:meth:`PreprocessedStore.with_targets`, or ``training_pipeline(...,
    targets=...)``) the batches are ``(images, {"fracture": labels float32 (B,), name: target int32 (B,), ...})``
    for a model with a dict of outputs; without, ``(images, labels)``.

    Attributes:
        store: the preprocessed images and labels (and extra targets).
        seed: the seed in use (drawn at random when ``config.seed`` is None; log it to repeat a run).
        copies: augmented copies per original in each epoch.
        epoch_size: elements per epoch, ``len(store) * (copies + 1)``.
        steps_per_epoch: batches per epoch.

    Example:
        >>> pipeline = training_pipeline(split, PREPROCESS_PRESETS["elbow"], PIPELINE_PRESETS["elbow"])
        >>> model.fit(pipeline.epochs(start_epoch=0), epochs=30, steps_per_epoch=pipeline.steps_per_epoch)
        >>> # After a crash during epoch 12: the same batches from epoch 12 on.
        >>> model.fit(pipeline.epochs(start_epoch=12), initial_epoch=12, epochs=30,
        ...           steps_per_epoch=pipeline.steps_per_epoch)
    """

    def __init__(
        self,
        store: PreprocessedStore,
        config: PipelineConfig | None = None,
        augment: AugmentConfig | None = AugmentConfig(),  # noqa: B008  (frozen dataclass: immutable default)
    ):
        self.store = store
        self.config = PipelineConfig() if config is None else config
        self.augment = augment
        self.seed = secrets.randbits(62) if self.config.seed is None else self.config.seed
        self.copies = self.config.augmented_copies if augment is not None else 0
        self.epoch_size = len(store) * (self.copies + 1)
        batch = self.config.batch_size
        self.steps_per_epoch = self.epoch_size // batch if self.config.drop_remainder else -(-self.epoch_size // batch)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"An epoch of {self.epoch_size} elements holds no full batch of {batch}: "
                "lower `batch_size` or set `drop_remainder=False`."
            )

    def epoch(self, epoch: int) -> tf.data.Dataset:
        """The batches ``(images float32 (B, S, S, 1) in [0, 255], labels float32 (B,))`` of epoch ``epoch``."""
        return self.epochs(start_epoch=epoch, count=1)

    def epochs(self, start_epoch: int = 0, count: int | None = None) -> tf.data.Dataset:
        """Epochs ``start_epoch, start_epoch + 1, ...`` one after another (``count`` of them, or forever).

        For ``model.fit(..., steps_per_epoch=pipeline.steps_per_epoch)``: Keras then keeps one iterator,
        so its epoch ``e`` is the pipeline's epoch ``e``.
        """
        _check_epoch("start_epoch", start_epoch)
        if count is None:
            epochs = tf.data.Dataset.counter(start_epoch)
        else:
            _check_epoch("count", count)
            epochs = tf.data.Dataset.range(start_epoch, start_epoch + count)
        dataset = epochs.flat_map(self._epoch_batches)
        dataset = dataset.map(self._load, num_parallel_calls=AUTOTUNE, deterministic=self.config.deterministic)
        return dataset.with_options(_options(self.config.deterministic)).prefetch(AUTOTUNE)

    def element_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image index, copy)`` of every element of epoch ``epoch``, in order; copy 0 is the original."""
        _check_epoch("epoch", epoch)
        element = _permutation(self.epoch_size, self._key(_ORDER, epoch)).numpy()
        return element // (self.copies + 1), element % (self.copies + 1)

    def _key(self, stream: int, epoch) -> tf.Tensor:
        seed = tf.constant([self.seed >> 31, self.seed & (2**31 - 1)], tf.int64)
        key = tf.random.experimental.stateless_fold_in(seed, tf.constant(stream, tf.int64))
        return tf.random.experimental.stateless_fold_in(key, tf.cast(epoch, tf.int64))

    def _epoch_batches(self, epoch) -> tf.data.Dataset:
        order = _permutation(self.epoch_size, self._key(_ORDER, epoch))
        # The transforms of the whole epoch in one stateless draw (5 floats per element), taken in the
        # epoch's order: element i gets row i whatever batch it lands in, so epoch e is a function of
        # (seed, e) alone, whatever the batch size.
        if self.augment is None:
            parameters = tf.zeros([self.epoch_size, 5])
        else:
            parameters = tf.stack(sample_parameters(self._key(_AUGMENT, epoch), self.epoch_size, self.augment), 1)
        elements = tf.data.Dataset.from_tensor_slices((order, tf.gather(parameters, order)))

        # Only the batches of indices and parameters come from inside `flat_map`; the loading `map`
        # runs outside it (see `epochs`): TensorFlow 2.21 logs an error line for every map op in a
        # nested dataset function (a `use_unbounded_threadpool` attribute its runtime does not know).
        return elements.batch(self.config.batch_size, drop_remainder=self.config.drop_remainder)

    def _load(self, element, parameters):
        """One batch of store indices and augmentation parameters -> ``(images, targets)``."""
        n = self.copies + 1
        size = tuple(self.store.image_shape)
        image_index, copy = element // n, element % n
        images, labels = tf.numpy_function(
            self.store.gather, [image_index], [tf.uint8, tf.int64], stateful=False, name="gather"
        )
        images.set_shape((None, *size))
        labels.set_shape((None,))
        masks = has_target = None
        if self.store.masks is not None:
            masks, has_target = tf.numpy_function(
                self.store.gather_masks, [image_index], [tf.uint8, tf.bool], stateful=False, name="gather_masks"
            )
            masks.set_shape((None, *size))
            has_target.set_shape((None,))
            # The mask rides along as a second channel: one warp, one matrix, for image and target.
            images = tf.concat([images, masks], axis=-1)
        if self.augment is not None:
            where = copy > 0 if self.copies else None  # originals stay untouched
            transforms = tf.unstack(parameters, 5, axis=1)
            images = transform_batch(images, transforms, self.augment.fill_value, where=where)
        if masks is not None:
            images, masks = images[..., :1], images[..., 1:]
        images, labels = tf.cast(images, tf.float32), tf.cast(labels, tf.float32)
        targets = {FRACTURE_TARGET: labels}
        if masks is not None:
            targets[CAM_TARGET] = target_batch(masks, has_target)
        if self.store.targets:
            targets = _with_targets(targets, self.store, image_index)
        return (images, targets) if len(targets) > 1 else (images, labels)


def training_pipeline(
    dataset: tf.data.Dataset,
    preprocess: PreprocessConfig,
    config: PipelineConfig | None = None,
    augment: AugmentConfig | None = AugmentConfig(),  # noqa: B008  (frozen dataclass: immutable default)
    *,
    source: str | None = None,
    targets: Mapping[str, np.ndarray] | None = None,
    localization: bool = False,
    localization_target: str = "box",
    progress: Callable[[int], None] | None = None,
) -> TrainingPipeline:
    """Preprocesses ``dataset`` once (or reads its cached store) and returns its training epochs.

    Args:
        dataset: a TFDS split of examples (dicts with ``image`` and ``label``).
        preprocess: resize / CLAHE / unsharp settings (see ``PREPROCESS_PRESETS``).
        config: batching, epoch composition, caching and seeding.
        augment: augmentation ranges (default: the method's); None disables augmentation (and the copies).
        source: the dataset's identity for the cache key, e.g. ``"fracatlas/1.0.0/train"`` (see
            :func:`preprocessed_store`).
        targets: further per-image integer targets by name, in ``dataset``'s order (e.g. ``{"body_part":
            split_metadata(name, split)["body_parts"]}``); the batches' labels then become a dict
            ``{"fracture": labels, **targets}`` (see :class:`TrainingPipeline`).
        localization: store each image's localisation target and add it to the batches' labels as
            ``"cam"``: float32 ``(B, S, S, 1)`` in [0, 1], warped with its image, `NO_TARGET` (-1)
            for images without one (see `tf_fracture.data.targets`).
        localization_target: what the target is made from: ``"box"`` or ``"mask"`` (`tf_target_mask`).
        progress: called with the number of images of each preprocessed batch while the store is built.

    Example:
        >>> split = tfds.load("synthetic_xray/tiny", split="train")
        >>> pipeline = training_pipeline(split, PREPROCESS_PRESETS["mura"], PIPELINE_PRESETS["mura"])
        >>> images, labels = next(iter(pipeline.epoch(0)))
    """
    config = PipelineConfig() if config is None else config
    store = preprocessed_store(
        dataset, preprocess, config.cache, source, localization, localization_target, progress=progress
    )
    if targets:
        store = store.with_targets(targets)
    return TrainingPipeline(store, config, augment)


def evaluation_pipeline(
    dataset: tf.data.Dataset,
    preprocess: PreprocessConfig,
    batch_size: int = 16,
    cache: str | None = "",
    *,
    source: str | None = None,
    targets: Mapping[str, np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tf.data.Dataset:
    """Batches ``(images float32 (B, S, S, 1), labels float32 (B,))`` in dataset order, no augmentation.

    ``cache`` as in :class:`PipelineConfig`; None preprocesses on the fly (one pass, nothing kept).
    ``targets`` as in :func:`training_pipeline`: the labels become ``{"fracture": labels, **targets}``.
    ``progress`` as in :func:`training_pipeline` (while a store is built).
    """
    if cache is None:
        count = int(dataset.cardinality())
        dataset = preprocessed(dataset, preprocess).batch(batch_size)
    else:
        store = preprocessed_store(dataset, preprocess, cache, source, progress=progress)
        size = tuple(store.image_shape)
        count = len(store)

        def load(indices):
            images, labels = tf.numpy_function(store.gather, [indices], [tf.uint8, tf.int64], stateful=False)
            images.set_shape((None, *size))
            labels.set_shape((None,))
            return images, labels

        dataset = tf.data.Dataset.range(len(store)).batch(batch_size).map(load, num_parallel_calls=AUTOTUNE)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.float32)), num_parallel_calls=AUTOTUNE)
    if targets:
        dataset = _zip_targets(dataset, targets, batch_size, count)
    return dataset.with_options(_options(True)).prefetch(AUTOTUNE)


def target_batch(masks, has_target) -> tf.Tensor:
    """Stored uint8 masks ``(B, S, S, 1)`` -> float32 in [0, 1]; `NO_TARGET` wherever ``has_target`` is False."""
    masks = tf.cast(masks, tf.float32) / 255.0
    return tf.where(tf.reshape(tf.cast(has_target, tf.bool), [-1, 1, 1, 1]), masks, tf.fill(tf.shape(masks), NO_TARGET))


def _with_targets(targets: dict, store: PreprocessedStore, indices) -> dict:
    names = tuple(store.targets)
    values = tf.numpy_function(
        store.gather_targets, [indices], [tf.int32] * len(names), stateful=False, name="gather_targets"
    )
    for value in values:
        value.set_shape((None,))
    return {**targets, **dict(zip(names, values, strict=True))}


def _zip_targets(dataset: tf.data.Dataset, targets: Mapping[str, np.ndarray], batch_size: int, count: int):
    checked = {}
    for name, values in targets.items():
        values = np.asarray(values)
        if values.ndim != 1 or not (values.dtype.kind in "iu" or values.size == 0):
            raise ValueError(
                f"Expected target {name!r} to be a 1-D integer array, but got {values.dtype} {values.shape}."
            )
        checked[name] = values.astype(np.int32)
    lengths = sorted({len(v) for v in checked.values()})
    if (lengths != [count] and count >= 0) or len(lengths) != 1:
        raise ValueError(
            f"Expected one target value per image ({count if count >= 0 else 'as many as images'}) in the "
            f"dataset's order, but the targets hold {lengths}."
        )
    extras = tf.data.Dataset.from_tensor_slices(checked).batch(batch_size)
    return tf.data.Dataset.zip(dataset, extras).map(lambda xy, t: (xy[0], {FRACTURE_TARGET: xy[1], **t}))


def _preprocess_numpy(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return preprocess(pixels, config)[..., np.newaxis]


def _batches(dataset, preprocess, localization=False, target="box", progress=None):
    stream = preprocessed(dataset, preprocess, localization, target).batch(_BUILD_BATCH).prefetch(AUTOTUNE)
    for batch in stream.as_numpy_iterator():
        if progress is not None:
            # Counted here, in Python: a stateful op in the tf.data graph would make TensorFlow rewrite
            # the parallel maps under op determinism (and log an error line about an unknown attribute).
            progress(len(batch[0]))
        yield batch


def _targets_fingerprint(dataset: tf.data.Dataset, preprocess: PreprocessConfig, target: str) -> str:
    """SHA-256 of the first examples' target masks: a change in the boxes (or their rasterising) is a new store."""
    digest = hashlib.sha256()
    masks = dataset.take(FINGERPRINT_EXAMPLES).map(lambda e: tf_target_mask(e, preprocess, target))
    for mask in masks.as_numpy_iterator():
        digest.update(mask.tobytes())
    return digest.hexdigest()


def _identity(pairs: tf.data.Dataset, preprocess: PreprocessConfig, count: int, source: str | None) -> dict:
    """What decides a disk store's bytes; its hash is the store's key, and it is the store's manifest."""
    raw, out = hashlib.sha256(), hashlib.sha256()
    first = list(pairs.take(FINGERPRINT_EXAMPLES).as_numpy_iterator())
    for image, label in first:
        raw.update(repr((image.shape, image.dtype.str, int(label))).encode())
        raw.update(np.ascontiguousarray(image).tobytes())
        # The preprocessing's own output: a change in its code or in OpenCV gives a new store.
        out.update(_preprocess_numpy(image, preprocess).tobytes())
    return {
        "format": STORE_FORMAT,
        "source": source,
        "count": count,
        "element_spec": repr(pairs.element_spec),
        "first_examples": len(first),
        "first_examples_sha256": raw.hexdigest(),
        "preprocess": dataclasses.asdict(preprocess),
        "preprocessed_first_examples_sha256": out.hexdigest(),
        "opencv": cv2.__version__,
    }


def _permutation(size: int, key) -> tf.Tensor:
    """The epoch's order: element ids ``[0, size)`` shuffled, a function of ``key`` alone."""
    return tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64), key)


def _check_epoch(name: str, value) -> None:
    check_int(name, value, minimum=0)


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    return options
