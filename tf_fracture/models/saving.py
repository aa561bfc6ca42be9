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
    # Keras reports a damaged archive as "File not found": say what is wrong with the file instead.
    damage = _archive_damage(path)
    if damage:
        raise ValueError(
            f"{path} is not a readable .keras file ({damage}): it was cut short or damaged (a full disk, a copy "
            "interrupted?); copy it again, or train the run again into a new --run-dir."
        )
    return keras.saving.load_model(path, compile=compile, safe_mode=True)


def _archive_damage(path: str) -> str | None:
    """Why ``path`` is not an intact ``.keras`` (zip) archive, or None when it is one."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return "not a zip archive"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"a damaged zip archive: {error}"
    return f"a damaged zip archive: {bad} fails its CRC check" if bad else None


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
