"""The JSON file beside an exported ``.tflite`` model: what the model expects and what it answers.

TensorFlow-free (the on-device predictor reads it). ``model_int8.tflite`` has
``model_int8.json`` beside it (`metadata_path`):

    {"format": "tf-fracture-tflite", "format_version": 1,
     "model_file": "model_int8.tflite", "quantization": "int8",
     "labels": ["normal", "fracture"], "positive_label": "fracture",
     "input": {"size": 96, "channels": 1, "range": [0, 255], "layout": "NHWC", "dtype": "int8"},
     "output": "probability",                                             # output 0, as in every version
     "outputs": [{"index": 0, "name": "probability", "shape": [1, 1], "dtype": "int8", ...},
                 {"index": 1, "name": "cam", "shape": [1, 3, 3, 1], "dtype": "int8",
                  "mean_is_logit": true, "heatmap": "...", ...}],         # `cam_size`; [output 0] alone without one
     "preprocessing": {"image_size": 96, "clahe_clip_limit": 2.5, ...},   # PreprocessConfig's fields
     "thresholds": {"youden": 0.41, "target_sensitivity": 0.33, "fixed": 0.5},
     "default_threshold": "youden",
     "source_run": "/abs/path/runs/demo", "config": {...the run's config.json...},
     "verification": {...}}                                               # filled in by the export

The app (or `predictor`) reads the image as greyscale, applies ``preprocessing`` with OpenCV exactly
as in training (`tf_fracture.data.preprocess.preprocess`), and feeds the 0-255 result; the model
does its own intensity scaling and returns the fracture probability (output 0) and, where the
classifier has one, its class activation map (output 1, ``"cam"``): one fracture logit per cell of
the last feature map, whose mean over the cells is the logit (``sigmoid(mean(cam)) == probability``).
A heatmap is ``sigmoid`` of the map upsampled bilinearly to the input size: a per-position
probability on the same 0-1 scale as the answer, so a normal image stays cold (`CAM_HEATMAP`).
int8 models give both outputs as int8: dequantise each with its own tensor's scale and zero point; an
int8 model exported with ``int8_io="float32"`` (for LiteRT.js) takes and gives float32 (``input.dtype``).
Metadata written before the CAM output (no ``"outputs"`` key) describes a probability-only model.
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
FORMAT_VERSION = 1  # the CAM output and "outputs" are additions: a version-1 reader still finds the probability at 0
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
PROBABILITY_OUTPUT = "probability"
CAM_OUTPUT = "cam"
CAM_MEANING = (
    "class activation map: one fracture logit per cell of the last feature map; its mean over the cells is the "
    "logit, so sigmoid(mean(cam)) is the probability"
)
CAM_HEATMAP = (
    "resize bilinearly (half-pixel centres, OpenCV INTER_LINEAR) to input.size x input.size, then sigmoid: a "
    "per-position fracture probability in [0, 1], on the preprocessed input the model saw"
)


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
        cam_size: ``(h, w)`` of the class activation map the model gives as its output 1, or None for a
            model that gives the probability only.
        int8_io: the int8 variant's input and output type: ``"int8"`` (quantised) or ``"float32"`` (every op
            int8 inside, float32 in and out, as LiteRT.js needs); the other variants are float32 throughout.
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
    cam_size: tuple[int, int] | None = None
    int8_io: str = "int8"

    def __post_init__(self):
        if self.cam_size is not None:
            size = tuple(self.cam_size)
            if len(size) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in size):
                raise ValueError(f"`cam_size` must be None or (h, w) with positive integers, got {self.cam_size!r}.")
            object.__setattr__(self, "cam_size", size)  # a JSON list becomes the tuple it was
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"Unknown quantization {self.quantization!r}; expected one of {', '.join(QUANTIZATIONS)}.")
        if self.int8_io not in ("int8", "float32"):
            raise ValueError(f"Unknown `int8_io` {self.int8_io!r}; expected 'int8' or 'float32'.")
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
    def has_cam(self) -> bool:
        return self.cam_size is not None

    @property
    def io_dtype(self) -> str:
        """The type of the model's input and outputs: ``"int8"`` or ``"float32"``."""
        return self.int8_io if self.quantization == "int8" else "float32"

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The model's outputs in index order, as the JSON's ``"outputs"`` lists them."""
        dtype = self.io_dtype
        outputs = [
            {
                "index": 0,
                "name": PROBABILITY_OUTPUT,
                "shape": [1, 1],
                "dtype": dtype,
                "description": "fracture probability (sigmoid of the logit)",
            }
        ]
        if self.cam_size is not None:
            outputs.append(
                {
                    "index": 1,
                    "name": CAM_OUTPUT,
                    "shape": [1, *self.cam_size, 1],
                    "dtype": dtype,
                    "description": CAM_MEANING,
                    "mean_is_logit": True,
                    "heatmap": CAM_HEATMAP,
                }
            )
        if dtype == "int8":
            for output in outputs:  # each has its own scale and zero point, in the model file
                output["dequantize"] = "(q - zero_point) * scale, with this output tensor's own quantization"
        return outputs

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
            "input": {
                "size": self.image_size,
                "channels": 1,
                "range": [0, 255],
                "layout": "NHWC",
                "dtype": self.io_dtype,
            },
            "output": PROBABILITY_OUTPUT,
            "outputs": self.outputs,
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
                cam_size=_cam_size(data.get("outputs")),
                int8_io=data.get("input", {}).get("dtype", "int8") if data.get("quantization") == "int8" else "int8",
            )
        except KeyError as error:
            raise ValueError(f"{source}: the metadata lacks the key {error.args[0]!r}.") from None
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: invalid metadata: {error}") from None

    def replace(self, **changes) -> ModelMetadata:
        return dataclasses.replace(self, **changes)


def _cam_size(outputs) -> tuple[int, int] | None:
    """The CAM's ``(h, w)`` from the JSON's ``"outputs"`` (absent: written before the CAM output, probability only)."""
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        raise ValueError(f"`outputs` must be a list of objects, got {outputs!r}.")
    names = [o.get("name") for o in outputs]
    if names not in ([PROBABILITY_OUTPUT], [PROBABILITY_OUTPUT, CAM_OUTPUT]) or [o.get("index") for o in outputs] != [
        *range(len(outputs))
    ]:
        raise ValueError(
            f"expected `outputs` {PROBABILITY_OUTPUT!r} (index 0) and optionally {CAM_OUTPUT!r} (index 1), "
            f"got {[(o.get('index'), o.get('name')) for o in outputs]}."
        )
    if len(outputs) == 1:
        return None
    shape = outputs[1].get("shape")
    if not isinstance(shape, list) or len(shape) != 4 or shape[0] != 1 or shape[3] != 1:
        raise ValueError(f"expected the {CAM_OUTPUT!r} output's shape to be [1, h, w, 1], got {shape!r}.")
    return shape[1], shape[2]


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
            f"No model metadata at {path}: an exported model needs its JSON beside it (tf-fracture export writes both)."
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object.")
    return ModelMetadata.from_dict(data, source=str(path))
