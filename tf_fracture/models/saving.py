"""Loading saved models, and the JSON-safe form of what a model records about its inputs."""

from __future__ import annotations

import dataclasses
import json
import os

import keras

import tf_fracture.backbones
import tf_fracture.layers  # noqa: F401  (with backbones: registers Backbone and the custom layers)


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """Loads a model saved with ``model.save("....keras")`` (safe mode, no custom objects needed).

    The model comes back as the class it was saved as (`Backbone`, `FractureClassifier`,
    `FusionModel`), with its build configuration, e.g. ``model.backbone.family``.
    """
    import tf_fracture.models  # noqa: F401  (registers FractureClassifier, FusionModel, MultiTaskClassifier)

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No saved model at {path!r}: expected a file written by model.save('....keras').")
    if not path.endswith(".keras"):
        raise ValueError(f"Expected a Keras v3 '.keras' file, but got {path!r}.")
    return keras.saving.load_model(path, compile=compile, safe_mode=True)


def as_json_dict(preprocessing) -> dict | None:
    """``preprocessing`` (None, a dict or a dataclass such as a preprocessing preset) as a JSON-safe dict.

    Stored in the model's config, it comes back from a ``.keras`` file exactly as returned here
    (tuples become lists), so evaluation, Grad-CAM and export can read how the model's inputs were made.
    """
    if preprocessing is None:
        return None
    if dataclasses.is_dataclass(preprocessing) and not isinstance(preprocessing, type):
        preprocessing = dataclasses.asdict(preprocessing)
    if not isinstance(preprocessing, dict):
        raise ValueError(
            "Expected `preprocessing` to be None, a dict or a dataclass instance, "
            f"but got {type(preprocessing).__name__}."
        )
    try:
        return json.loads(json.dumps(preprocessing))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`preprocessing` must hold only JSON values (str, numbers, bools, None, lists, dicts): {error}."
        ) from None
