"""`Predictor`: an exported model run as a phone runs it, with LiteRT, NumPy and OpenCV only (no TensorFlow).

The predictor follows the metadata beside the model (`tf_fracture_export.metadata`): it reads each
file with the training pipeline's reader (`tf_fracture.data.io.read_image`: PNG, JPEG, DICOM),
preprocesses it with the training pipeline's function and the metadata's parameters
(`tf_fracture.data.preprocess.preprocess`: resize, CLAHE, unsharp masking), runs the model
(`tf_fracture_export.litert`) and labels the probability at the metadata's operating threshold.
Preprocessing that differs from training is the most common reason a device disagrees with Python;
here it cannot differ unless the metadata is wrong. With ``heatmap_dir``, it also draws each image's
class activation map (the model's output 1) over the preprocessed image the model saw, one PNG per
image (`tf_fracture_export.heatmap`).

Example:
    >>> predictor = Predictor("runs/demo/export/model_int8.tflite")  # doctest: +SKIP
    >>> result = predictor.predict_files(["a.png", "b.dcm", "broken.jpg"])  # doctest: +SKIP
    >>> [(p.path, round(p.probability, 3), p.label) for p in result.predictions]  # doctest: +SKIP
    [('a.png', 0.812, 'fracture'), ('b.dcm', 0.104, 'normal')]
    >>> result.skipped  # doctest: +SKIP
    {'broken.jpg': 'truncated JPEG data (no end-of-image marker)'}
    >>> predictor.predict_files(["a.png"], heatmap_dir="heatmaps").predictions[0].heatmap  # doctest: +SKIP
    'heatmaps/a_heatmap.png'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tf_fracture.data.io import read_each, read_image
from tf_fracture.data.preprocess import preprocess
from tf_fracture_export import heatmap, litert
from tf_fracture_export.metadata import ModelMetadata, read_metadata


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's answer.

    Args:
        path: the file (or the name given with an array).
        probability: the model's fracture probability.
        label: ``labels[1]`` when ``probability >= threshold``, else ``labels[0]``.
        threshold: the operating threshold used.
        threshold_name: its name in the metadata's thresholds (e.g. ``"youden"``).
        heatmap: the PNG of its class activation map, when one was asked for (else None).
    """

    path: str
    probability: float
    label: str
    threshold: float
    threshold_name: str
    heatmap: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Predictions:
    """The answers for a batch of files, and the files that could not be read.

    Args:
        predictions: one `Prediction` per readable file, in the order given.
        skipped: ``{path: reason}`` for each file that could not be read.
    """

    predictions: tuple[Prediction, ...]
    skipped: Mapping[str, str]


class Predictor:
    """Runs an exported ``.tflite`` model on radiographs, preprocessing them as its metadata says.

    Args:
        model_path: the ``.tflite`` file; its metadata JSON must be beside it (same stem).
        num_threads: CPU threads for LiteRT (``None``: its default).
        threshold: the name of the operating threshold for the label (``None``: the metadata's default).

    Raises:
        FileNotFoundError: no model, or no metadata beside it.
        ValueError: a model LiteRT cannot load, invalid metadata, metadata that does not fit the model
            (input size, quantisation), or an unknown threshold name. Each message says what to do.

    Example:
        >>> predictor = Predictor("model_float32.tflite", threshold="target_sensitivity")  # doctest: +SKIP
        >>> predictor.predict_images([read_image("a.png")], names=["a.png"])[0].label  # doctest: +SKIP
        'fracture'
    """

    def __init__(self, model_path: str | os.PathLike, *, num_threads: int | None = None, threshold: str | None = None):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(
                f"No model at {self.model_path}: pass the .tflite file that tf-fracture export wrote."
            )
        self.metadata: ModelMetadata = read_metadata(self.model_path)
        self.interpreter = litert.load_interpreter(self.model_path, num_threads=num_threads)
        _check_fits(self.metadata, self.interpreter, self.model_path)
        self.threshold_name = self.metadata.default_threshold if threshold is None else threshold
        if self.threshold_name not in self.metadata.thresholds:
            raise ValueError(
                f"Unknown threshold {self.threshold_name!r}: the model's metadata has "
                f"{', '.join(sorted(self.metadata.thresholds))}."
            )
        self.threshold = float(self.metadata.thresholds[self.threshold_name])

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    @property
    def has_cam(self) -> bool:
        """Whether the model gives a class activation map (output 1), so that it can draw heatmaps."""
        return self.metadata.has_cam

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """A 2-D uint8 radiograph of any size -> the model's ``(S, S)`` uint8 input, as in training."""
        return preprocess(image, self.metadata.preprocessing)

    def probabilities(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """Fracture probabilities of raw 2-D uint8 radiographs (preprocessed here), ``(N,)`` float32."""
        batch = [self.preprocess(image) for image in images]
        size = self.metadata.image_size
        stacked = np.stack(batch) if batch else np.zeros((0, size, size), np.uint8)
        return litert.run_model(self.interpreter, stacked[..., np.newaxis])

    def predict_images(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[Prediction]:
        """Predictions for raw 2-D uint8 radiographs (as `read_image` returns them).

        Args:
            images: the radiographs, any size.
            names: what to call each in the results (default ``"image 0"``, ``"image 1"``, ...).
        """
        images = list(images)
        names = [f"image {i}" for i in range(len(images))] if names is None else [str(n) for n in names]
        if len(names) != len(images):
            raise ValueError(f"Expected one name per image, but got {len(names)} names for {len(images)} images.")
        return [self._prediction(name, p) for name, p in zip(names, self.probabilities(images), strict=True)]

    def predict_files(
        self, paths: Iterable[str | os.PathLike], *, heatmap_dir: str | os.PathLike | None = None
    ) -> Predictions:
        """Reads, preprocesses and predicts each file; a file that cannot be read is skipped with its reason.

        Each image is preprocessed as soon as it is read, so only the small model inputs are held.

        Args:
            paths: PNG, JPEG or DICOM files.
            heatmap_dir: also write each readable image's heatmap there (created if missing), named after
                the file (`tf_fracture_export.heatmap.heatmap_names`: ``a.png`` -> ``a_heatmap.png``); each
                `Prediction` names its PNG. None (default): no heatmaps.

        Raises:
            ValueError: ``heatmap_dir`` for a model without a class activation map (before anything is read).
        """
        if heatmap_dir is not None and not self.has_cam:
            raise ValueError(
                f"{self.model_path} gives the fracture probability only (its metadata lists no 'cam' output), so it "
                "cannot draw heatmaps: export the run again with this version (tf-fracture export) from a classifier "
                "with a CAM head (every tf_fracture.models.build_classifier model has one)."
            )
        skipped: dict[str, str] = {}
        names, inputs = [], []
        for path, image in read_each(paths, read_image, skipped, key=os.fspath):
            names.append(os.fspath(path))
            inputs.append(self.preprocess(image)[..., np.newaxis])
        if not inputs:
            return Predictions((), skipped)
        if heatmap_dir is None:
            probabilities = litert.run_model(self.interpreter, np.stack(inputs))
            return Predictions(tuple(map(self._prediction, names, probabilities)), skipped)
        probabilities, cams = litert.run_model_with_cam(self.interpreter, np.stack(inputs))
        targets = heatmap.heatmap_names(names, heatmap_dir)
        predictions = tuple(
            self._prediction(name, probability, str(heatmap.write_heatmap(target, image, cam)))
            for name, probability, target, image, cam in zip(names, probabilities, targets, inputs, cams, strict=True)
        )
        return Predictions(predictions, skipped)

    def _prediction(self, name: str, probability: float, heatmap_path: str | None = None) -> Prediction:
        probability = float(probability)
        label = self.labels[1] if probability >= self.threshold else self.labels[0]
        return Prediction(name, probability, label, self.threshold, self.threshold_name, heatmap_path)


def _check_fits(metadata: ModelMetadata, interpreter, model_path: Path) -> None:
    # Metadata that belongs to another model would give wrong answers without an error: refuse it.
    size = litert.input_size(interpreter)
    if size != metadata.image_size:
        raise ValueError(
            f"{model_path}: the metadata's image_size is {metadata.image_size} but the model's input is "
            f"{size}x{size}: the JSON beside the model belongs to another export. Export the model again "
            "(tf-fracture export writes both files together)."
        )
    outputs = litert.cam_size(interpreter)
    if outputs != metadata.cam_size:
        raise ValueError(
            f"{model_path}: the metadata lists {_outputs(metadata.cam_size)} but the model gives "
            f"{_outputs(outputs)}: the JSON beside the model belongs to another export. Export the model again."
        )
    dtype = np.dtype(interpreter.get_input_details()[0]["dtype"])
    if dtype.name != metadata.io_dtype:
        raise ValueError(
            f"{model_path}: the metadata says {metadata.quantization!r} with {metadata.io_dtype} input but the "
            f"model's input is {dtype.name}: "
            "the JSON beside the model belongs to another export. Export the model again."
        )


def _outputs(cam_size) -> str:
    return "the probability only" if cam_size is None else f"the probability and a {cam_size[0]}x{cam_size[1]} CAM"
