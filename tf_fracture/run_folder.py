"""The run folder: what a training run leaves behind, and how evaluation and explanation read it.

::

    RUN/
      config.json        the resolved ExperimentConfig (written first); repeat the run from it alone
      model.keras        the best model by validation AUROC: one float32 logit, carries `preprocessing`
      final.weights.h5   the weights after the last epoch (what an exact resume is checked against)
      history.csv        one row per completed epoch (counted from 1): epoch, loss, auroc, val_loss, val_auroc, ...
      (summary.json's best_epoch is counted from 1 too, as on the console)
      logs/              TensorBoard
      backup/            the resumable training state while the run is unfinished (removed at the end)
      summary.json       written last: {"completed": true, "best_epoch", "best_val_auroc", ...}
      .lock              held (``flock``) while a training writes the folder; left in place (empty)

Paths in ``summary.json`` are relative to the folder (``"model": "model.keras"``), so a moved or
copied folder still reads right: `RunFolder.path_of` resolves them.

TensorFlow-free: only JSON and CSV are read here (load the model with `tf_fracture.models.load_model`).
Train, evaluate, explain, export and the VLM track read and write run folders through this module
only (`write_json` is the one JSON writer), so none of them imports another's code to do so.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:  # POSIX; elsewhere the lock is a no-op
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

CONFIG = "config.json"
MODEL = "model.keras"
FINAL_WEIGHTS = "final.weights.h5"
HISTORY = "history.csv"
LOGS = "logs"
BACKUP = "backup"
SUMMARY = "summary.json"
LOCK = ".lock"


class RunLockedError(RuntimeError):
    """Another process is writing the run folder."""


@dataclass(frozen=True)
class RunFolder:
    """The files of one training run (see the module docstring).

    Example:
        >>> run = RunFolder("runs/demo")
        >>> run.model, run.is_complete()  # a folder not trained yet
        (PosixPath('runs/demo/model.keras'), False)
        >>> run.path_of("model.keras")  # a path as summary.json stores it
        PosixPath('runs/demo/model.keras')
    """

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def final_weights(self) -> Path:
        return self.path / FINAL_WEIGHTS

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    @property
    def backup(self) -> Path:
        return self.path / BACKUP

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    def path_of(self, value: str | os.PathLike) -> Path:
        """A path as stored in the folder's JSON (relative to the folder, or absolute) -> a usable path."""
        value = Path(value)
        return value if value.is_absolute() else self.path / value

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the folder's lock while the block runs; raises `RunLockedError` if another process holds it.

        An ``flock`` on ``.lock``: the kernel releases it when its process ends, however it ends
        (``kill -9`` included), so a crashed run never leaves the folder locked. The file keeps the
        holder's host and process id, for the message.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.lock_file, "a+") as file:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "another process"
                raise RunLockedError(
                    f"{str(self.path)!r} is being written by another training ({holder}): wait for it to end, "
                    "or train into another --run-dir."
                ) from None
            file.seek(0)
            file.truncate()
            file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            file.flush()
            try:
                yield
            finally:
                file.seek(0)
                file.truncate()
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)

    def is_complete(self) -> bool:
        """True once the run has finished (its summary says so); an interrupted run is not complete."""
        return self.summary.is_file() and bool(self.read_summary().get("completed"))

    def read_config(self) -> dict:
        """The run's resolved configuration as a nested dict (``ExperimentConfig.from_dict`` reads it)."""
        return _read_json(self.config, "a run's config.json (written when its training starts)")

    def read_summary(self) -> dict:
        return _read_json(self.summary, "a run's summary.json (written when its training ends)")

    def read_history(self) -> list[dict[str, float]]:
        """The rows of ``history.csv`` as dicts of floats (``epoch`` as an int); [] before the first epoch."""
        if not self.history.is_file():
            return []
        with open(self.history, newline="") as file:
            return [_parse_row(row) for row in csv.DictReader(file)]


def model_file(source: str | os.PathLike) -> Path:
    """The ``.keras`` file of ``source``: a run folder (its ``model.keras``) or a ``.keras`` file.

    Raises:
        FileNotFoundError: neither exists, saying which paths were tried.
    """
    path = Path(source)
    if path.is_dir():
        if (path / MODEL).is_file():
            return path / MODEL
        raise FileNotFoundError(
            f"{str(path)!r} is a folder without {MODEL}: expected a finished training run folder "
            "(tf-fracture train --run-dir ...) or a .keras file."
        )
    if path.is_file() and path.suffix == ".keras":
        return path
    raise FileNotFoundError(f"No run folder or .keras file at {str(path)!r}.")


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Writes ``data`` as JSON atomically (a reader, or a run killed mid-write, never sees half a file).

    NaN and infinity become null (strict JSON).
    """
    path = Path(path)
    scratch = path.with_name(f".{path.name}.tmp")
    with open(scratch, "w") as file:
        json.dump(_finite(data), file, indent=2, sort_keys=True, allow_nan=False, default=_jsonable)
        file.write("\n")
    os.replace(scratch, path)


def _finite(value):
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a NumPy scalar (float32 NaN too)
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _jsonable(value):
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"No {path.name} at {str(path)!r}: expected {what}.")
    with open(path) as file:
        return json.load(file)


def _parse_row(row: dict[str, str]) -> dict[str, float]:
    parsed = {}
    for key, value in row.items():
        if value in ("", None):
            continue
        parsed[key] = int(value) if key == "epoch" else float(value)
    return parsed
