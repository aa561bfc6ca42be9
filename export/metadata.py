"""The JSON file beside an exported ``.tflite`` model: what the model expects and what it answers.

TensorFlow-free (the on-device predictor reads it). ``model_int8.tflite`` has
``model_int8.json`` beside it (`metadata_path`):

    {"format": "tf-fracture-tflite", "format_version": 1,
     "model_file": "model_int8.tflite", "quantization": "int8",
     "labels": ["normal", "fracture"], "positive_label": "fracture",
     "input": {"size": 96, "channels": 1, "range": [0, 255], "layout": "NHWC"},
     "output": "probability",
     "preprocessing": {"image_size": 96, "clahe_clip_limit": 2.5, ...},   # PreprocessConfig's fields
     "thresholds": {"youden": 0.41, "target_sensitivity": 0.33, "fixed": 0.5},
     "default_threshold": "youden",
     "source_run": "/abs/path/runs/demo", "config": {...the run's config.json...},
     "verification": {...}}                                               # filled in by the export

The app (or `predictor`) reads the image as greyscale, applies ``preprocessing`` with OpenCV exactly
as in training (`tf_fracture.data.preprocess.preprocess`), and feeds the 0-255 result; the model
does its own intensity scaling and returns the fracture probability.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tf_fracture.data.preprocess import PreprocessConfig

FORMAT = "tf-fracture-tflite"
FORMAT_VERSION = 1
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """Everything an app needs to call an exported model, and where it came from.

    Args:
        model_file: the ``.tflite`` file's name, in the same folder as the JSON.
        quantization: one of `QUANTIZATIONS`.
        labels: class names in label order (index 1 is the positive class).
        preprocessing: the `PreprocessConfig` the model was trained with.
        thresholds: operating thresholds on the probability, by name (from the run's evaluation;
            ``{"fixed": 0.5}`` when the run was never evaluated).
        default_threshold: the name in ``thresholds`` used for the label.
        source_run: the run folder the model was exported from.
        config: the run's resolved ``config.json``.
        verification: the export's check against Keras (AUROC, differences, latency), or empty.
    """

    model_file: str
    quantization: str
    labels: tuple[str, ...]
    preprocessing: PreprocessConfig
    thresholds: Mapping[str, float]
    default_threshold: str
    source_run: str = ""
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    verification: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"Unknown quantization {self.quantization!r}; expected one of {', '.join(QUANTIZATIONS)}.")
        if len(self.labels) != 2:
            raise ValueError(f"Expected two labels (negative, positive), got {list(self.labels)}.")
        if not isinstance(self.preprocessing, PreprocessConfig):
            raise ValueError(f"`preprocessing` must be a PreprocessConfig, got {type(self.preprocessing).__name__}.")
        if self.default_threshold not in self.thresholds:
            raise ValueError(
                f"`default_threshold` {self.default_threshold!r} is not among the thresholds {sorted(self.thresholds)}."
            )
        for name, value in self.thresholds.items():
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"Threshold {name!r} must be a probability in [0, 1], got {value}.")

    @property
    def image_size(self) -> int:
        return self.preprocessing.image_size

    @property
    def threshold(self) -> float:
        """The probability at or above which an image is called a fracture."""
        return float(self.thresholds[self.default_threshold])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_file": self.model_file,
            "quantization": self.quantization,
            "labels": list(self.labels),
            "positive_label": self.labels[1],
            "input": {"size": self.image_size, "channels": 1, "range": [0, 255], "layout": "NHWC"},
            "output": "probability",
            "preprocessing": dataclasses.asdict(self.preprocessing),
            "thresholds": {name: float(value) for name, value in self.thresholds.items()},
            "default_threshold": self.default_threshold,
            "source_run": self.source_run,
            "config": dict(self.config),
            "verification": dict(self.verification),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "metadata") -> ModelMetadata:
        if data.get("format") != FORMAT:
            raise ValueError(f"{source}: not a tf-fracture model metadata file (format {data.get('format')!r}).")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{source}: metadata format_version {data.get('format_version')!r}; this version reads "
                f"{FORMAT_VERSION}. Export the model again with this version of tf-fracture."
            )
        try:
            return cls(
                model_file=data["model_file"],
                quantization=data["quantization"],
                labels=tuple(data["labels"]),
                preprocessing=PreprocessConfig(**data["preprocessing"]),
                thresholds=dict(data["thresholds"]),
                default_threshold=data["default_threshold"],
                source_run=data.get("source_run", ""),
                config=data.get("config", {}),
                verification=data.get("verification", {}),
            )
        except KeyError as error:
            raise ValueError(f"{source}: the metadata lacks the key {error.args[0]!r}.") from None
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: invalid metadata: {error}") from None

    def replace(self, **changes) -> ModelMetadata:
        return dataclasses.replace(self, **changes)


def metadata_path(model_path: str | os.PathLike) -> Path:
    """The JSON beside a model: ``model_int8.tflite`` -> ``model_int8.json``."""
    return Path(model_path).with_suffix(".json")


def write_metadata(metadata: ModelMetadata, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text(json.dumps(metadata.to_dict(), indent=2) + "\n")
    return path


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Reads a metadata JSON; given a ``.tflite`` path, reads the JSON beside it.

    Raises:
        FileNotFoundError: no metadata there (with what to do).
        ValueError: the file is not valid metadata (naming the file and the problem).
    """
    path = Path(path)
    if path.suffix == ".tflite":
        path = metadata_path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No model metadata at {path}: an exported model needs its JSON beside it (tf-fracture-export writes both)."
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object.")
    return ModelMetadata.from_dict(data, source=str(path))
