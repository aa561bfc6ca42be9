"""Keras callbacks of a training run: validation AUROC, the best model, the CSV history, the resumable backup.

Order matters at the end of each epoch (`train` lists them in this order): `ValidationAUROC` puts
``val_loss`` and ``val_auroc`` into the logs, `BestModel` saves ``model.keras`` when ``val_auroc``
improved, `HistoryCSV` appends the epoch's row, and `ResumableBackup` saves the training state last,
so that a state on disk always follows every file it describes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from tf_fracture import metrics
from tf_fracture.metrics.losses import binary_cross_entropy, body_part_scores
from tf_fracture.models.multitask import BODY_PART, FRACTURE, MultiTaskClassifier
from tf_fracture.run_folder import write_json

HISTORY_COLUMNS = ("epoch", "loss", "auroc", "val_loss", "val_auroc", "learning_rate")


def classifier_of(model: keras.Model) -> keras.Model:
    """The single-logit model the run folder keeps: a multi-task model's ``.classifier`` (its layers, shared)."""
    return model.classifier if isinstance(model, MultiTaskClassifier) else model


class ValidationAUROC(keras.callbacks.Callback):
    """After each epoch, scores the validation split and puts ``val_loss`` and ``val_auroc`` into the logs.

    One prediction pass gives both: the loss (binary cross-entropy on the logits, without class
    weights) and the AUROC of ``sigmoid(logits)`` by `tf_fracture.metrics.roc_auc`, the same code the
    evaluation uses (not Keras' binned ``AUC`` approximation).

    A multi-task model (dict outputs) is scored on its ``"fracture"`` logit the same way, so the
    best model is chosen on the fracture AUROC alone; with ``body_parts`` the same pass also logs
    ``val_body_part_loss`` and ``val_body_part_accuracy`` (over the images whose part is known).
    ``val_loss`` stays the fracture loss.

    Args:
        dataset: batches ``(images, labels)`` (or ``(images, {name: target})``) of the validation split,
            in a fixed order.
        labels: the split's 0/1 labels in that order (both classes present).
        scorer: ``model -> logits`` (or a dict of logits by output) over ``dataset``; default
            ``model.predict(dataset)``. Tests inject known scores here.
        body_parts: the split's body parts in that order (-1 unknown), for a multi-task model.
    """

    def __init__(
        self, dataset, labels: np.ndarray, scorer: Callable | None = None, body_parts: np.ndarray | None = None
    ):
        super().__init__()
        labels = np.asarray(labels).reshape(-1)
        if labels.size == 0 or len(np.unique(labels)) != 2:
            raise ValueError(
                "The validation split must hold both classes to choose the best model by AUROC, but its labels "
                f"are {sorted(np.unique(labels).tolist())}: pick another `data.validation_split`."
            )
        self.dataset = dataset
        self.labels = labels
        self.scorer = scorer
        self.body_parts = None if body_parts is None else np.asarray(body_parts).reshape(-1)
        if self.body_parts is not None and self.body_parts.shape != labels.shape:
            raise ValueError(f"Expected {labels.size} validation body parts, but got {self.body_parts.size}.")

    def outputs(self):
        """The model's validation outputs: fracture logits (N,), or a dict of them by output name."""
        outputs = self.scorer(self.model) if self.scorer is not None else self.model.predict(self.dataset, verbose=0)
        if isinstance(outputs, dict):
            return {name: np.asarray(value, np.float64) for name, value in outputs.items()}
        return np.asarray(outputs, np.float64).reshape(-1)

    def logits(self) -> np.ndarray:
        outputs = self.outputs()
        return outputs[FRACTURE].reshape(-1) if isinstance(outputs, dict) else outputs

    def on_epoch_end(self, epoch, logs=None):
        outputs = self.outputs()
        logits = outputs[FRACTURE].reshape(-1) if isinstance(outputs, dict) else outputs
        if logits.shape != self.labels.shape:
            raise ValueError(f"Expected {self.labels.size} validation logits, but got {logits.size}.")
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        if logs is not None:
            logs["val_loss"] = binary_cross_entropy(self.labels, logits)
            logs["val_auroc"] = metrics.roc_auc(self.labels, probabilities) if np.all(np.isfinite(logits)) else math.nan
            if self.body_parts is not None and isinstance(outputs, dict) and BODY_PART in outputs:
                loss, accuracy = body_part_scores(self.body_parts, outputs[BODY_PART])
                logs[f"val_{BODY_PART}_loss"], logs[f"val_{BODY_PART}_accuracy"] = loss, accuracy


class BestModel(keras.callbacks.Callback):
    """Saves the model as ``path`` (``.keras``) whenever ``val_auroc`` beats the best so far.

    A multi-task model is saved as its single-logit ``.classifier`` (`classifier_of`): the run
    folder's ``model.keras`` always has one logit output, whatever heads trained beside it.

    The first epoch is always saved (so that a run whose validation AUROC is NaN still leaves a
    model); later epochs only when strictly better. ``best_epoch``/``best`` start from a resumed run's
    backup (see `ResumableBackup`), so a restart never forgets the best of the epochs before it.
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_auroc"):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.best_epoch: int | None = None
        self.best = -math.inf

    def state(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_val_auroc": None if self.best == -math.inf else self.best}

    def restore(self, state: dict) -> None:
        self.best_epoch = state.get("best_epoch")
        value = state.get("best_val_auroc")
        self.best = -math.inf if value is None else float(value)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"BestModel needs {self.monitor!r} in the logs: put ValidationAUROC before it.")
        value = float(value)
        if self.best_epoch is None or value > self.best:
            self.best_epoch, self.best = epoch, (value if math.isfinite(value) else -math.inf)
            scratch = self.path.with_name(f".{self.path.stem}.tmp.keras")
            classifier_of(self.model).save(scratch)
            os.replace(scratch, self.path)


class HistoryCSV(keras.callbacks.Callback):
    """``history.csv``: one row per completed epoch, kept right across restarts.

    Epochs are counted from 1, as on the console and in ``summary.json``'s ``best_epoch``.

    At the start of training the rows of epochs >= the epoch training starts from are dropped:
    an epoch that was logged but not backed up before a kill is replayed, and logged once.

    Args:
        path: the CSV file.
        initial_epoch: the epoch this ``fit`` starts from.
        learning_rates: ``() -> {column: value}`` read at the start of each epoch (the rate the
            epoch trains with, not the next one's).
    """

    def __init__(self, path: str | os.PathLike, initial_epoch: int = 0, learning_rates: Callable | None = None):
        super().__init__()
        self.path = Path(path)
        self.initial_epoch = initial_epoch
        self.learning_rates = learning_rates
        self._rates: dict = {}
        self._columns: list[str] | None = None

    def on_train_begin(self, logs=None):
        rows = []
        if self.path.is_file():
            with open(self.path, newline="") as file:
                reader = csv.DictReader(file)
                self._columns = list(reader.fieldnames or [])
                rows = [row for row in reader if int(row["epoch"]) <= self.initial_epoch]  # counted from 1
        if self._columns:
            self._write(rows, mode="w")

    def on_epoch_begin(self, epoch, logs=None):
        self._rates = self.learning_rates() if self.learning_rates else {}

    def on_epoch_end(self, epoch, logs=None):
        values = {"epoch": epoch + 1, **{k: _number(v) for k, v in (logs or {}).items()}, **self._rates}
        if self._columns is None:
            extra = sorted(k for k in values if k not in HISTORY_COLUMNS)
            self._columns = [c for c in HISTORY_COLUMNS if c in values] + extra
            self._write([], mode="w")
        self._write([{c: values.get(c, "") for c in self._columns}], mode="a")

    def _write(self, rows, mode):
        scratch = self.path.with_name(f".{self.path.name}.tmp") if mode == "w" else self.path
        with open(scratch, mode, newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self._columns, extrasaction="ignore")
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)
            file.flush()
            os.fsync(file.fileno())
        if mode == "w":
            os.replace(scratch, self.path)


class Throughput(keras.callbacks.Callback):
    """Training images per second (batches only: validation, saving and the first step's tracing excluded)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.seconds = 0.0
        self.steps = 0
        self._start = 0.0
        self._first = True

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._first:  # the step that traces and compiles the training function
            self._first = False
            return
        self.seconds += time.perf_counter() - self._start
        self.steps += 1

    @property
    def images_per_second(self) -> float | None:
        return self.steps * self.batch_size / self.seconds if self.seconds else None


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """Keras' ``BackupAndRestore`` made safe against ``kill -9`` at any instant, with extra state.

    Keras' callback writes ``latest.weights.h5`` (model and optimiser variables, the iteration count
    included) and then ``training_metadata.json`` (the epoch), in place: a kill between or during the
    two writes leaves weights of one epoch with the epoch number of another, or half a file. Here
    each epoch's weights go to a new file, and one JSON file, replaced atomically after them, names
    the file, the epoch to resume from, the callbacks' ``extra_state()`` (the best model so far)
    and the state of every random ``SeedGenerator`` in the model (dropout masks), which
    ``save_weights`` does not keep. The previous weights file is deleted only after that.

    `resume_epoch` reads the epoch *before* ``fit`` (which needs it to build the data for the right
    epoch: ``pipeline.epochs(start_epoch=...)``, ``initial_epoch=...``).

    The backup is left in place at the end of ``fit``: `train` removes it once the run's summary
    is written, so that no kill leaves a finished run without either.

    Args:
        backup_dir: the folder (only this callback writes there).
        extra_state: ``() -> dict`` saved with each backup (JSON values).
        restore_extra: ``dict -> None`` called with it when training resumes.
    """

    STATE = "state.json"

    def __init__(self, backup_dir, extra_state: Callable | None = None, restore_extra: Callable | None = None):
        super().__init__(os.fspath(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.extra_state = extra_state
        self.restore_extra = restore_extra

    @classmethod
    def read_state(cls, backup_dir) -> dict | None:
        path = Path(backup_dir) / cls.STATE
        if not path.is_file():
            return None
        with open(path) as file:
            return json.load(file)

    @classmethod
    def resume_epoch(cls, backup_dir) -> int:
        """The epoch a run with this backup folder continues from (0 without a backup)."""
        state = cls.read_state(backup_dir)
        return 0 if state is None else int(state["epoch"])

    def on_train_begin(self, logs=None):
        state = self.read_state(self.backup_dir)
        if state is None:
            return
        if not self.model.built:
            raise ValueError("The model must be built before training resumes from a backup.")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, state["weights"]))
        generators = _seed_generators(self.model)
        if len(generators) != len(state.get("seed_generators", [])):
            raise ValueError(
                f"The backup in {self.backup_dir!r} was written by a model with "
                f"{len(state.get('seed_generators', []))} random generators, this one has {len(generators)}: "
                "it is another model. Resume with the run's own config.json, or use a new run folder."
            )
        for generator, value in zip(generators, state["seed_generators"], strict=True):
            generator.state.assign(np.asarray(value, generator.state.dtype))
        self.model._initial_epoch = int(state["epoch"])
        if self.restore_extra is not None:
            self.restore_extra(state.get("extra", {}))

    def on_train_batch_end(self, batch, logs=None):
        return  # saves at epoch ends only

    def on_train_end(self, logs=None):
        return  # `train` removes the backup once the summary is written

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        previous = self.read_state(self.backup_dir)
        name = f"epoch-{self._current_epoch:05d}.weights.h5"
        self.model.save_weights(os.path.join(self.backup_dir, name), overwrite=True)
        state = {
            "epoch": self._current_epoch,
            "weights": name,
            "seed_generators": [np.asarray(g.state.numpy()).tolist() for g in _seed_generators(self.model)],
            "extra": self.extra_state() if self.extra_state is not None else {},
        }
        write_json(os.path.join(self.backup_dir, self.STATE), state)
        if previous is not None and previous["weights"] != name:
            stale = os.path.join(self.backup_dir, previous["weights"])
            if os.path.exists(stale):
                os.remove(stale)


def _seed_generators(model: keras.Model) -> list:
    return [generator for layer in model._flatten_layers() for generator in getattr(layer, "_seed_generators", [])]


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
