"""`train`: one compile and fit for every model and stage, into a resumable run folder.

Exact resume: each epoch's batches are a pure function of (seed, epoch) (`TrainingPipeline`), and the
backup (`ResumableBackup`) holds the model, the optimiser (its iteration count, hence the learning
rate schedule, included), the random generators' states and the best model so far after every
epoch. A run killed at any instant and started again with the same config reads the backup's epoch
*before* ``fit`` builds its data, feeds ``pipeline.epochs(start_epoch=epoch)`` with
``initial_epoch=epoch``, and so trains exactly the epochs it has not finished: in deterministic mode
its final weights equal an uninterrupted run's.
"""

from __future__ import annotations

import math
import shutil
import sys
import time

import keras
import numpy as np

from tf_fracture.data.augment import AugmentConfig
from tf_fracture.data.pipeline import evaluation_pipeline, training_pipeline
from tf_fracture.models.multitask import BODY_PART, FRACTURE
from tf_fracture.run_folder import RunFolder, write_json
from tf_fracture.train import runtime
from tf_fracture.train.callbacks import (
    BestModel,
    HistoryCSV,
    ResumableBackup,
    Throughput,
    ValidationAUROC,
    classifier_of,
)
from tf_fracture.train.class_weights import class_weights, with_fracture_class_weights
from tf_fracture.train.model_factory import build_model, check_model_config
from tf_fracture.train.objectives import compile_arguments, is_multitask
from tf_fracture.train.optimizer_factory import build_optimizer, current_learning_rates

# Preparation (preprocessing a split into its store) reports progress when it lasts longer than this.
PROGRESS_AFTER_SECONDS = 3.0
PROGRESS_EVERY_SECONDS = 5.0


class ConfigMismatchError(ValueError):
    """The run folder holds a run of another configuration."""


def train(
    experiment,
    run_dir,
    *,
    verbose: int | str = "auto",
    validation_scorer=None,
    callbacks=(),
) -> dict:
    """Trains ``experiment`` (an `ExperimentConfig`) into the run folder ``run_dir``; resumes an unfinished one.

    Writes ``config.json`` first, then per epoch ``history.csv``, TensorBoard ``logs/``, ``model.keras``
    when the validation AUROC improved, and the ``backup/``; at the end ``final.weights.h5`` and
    ``summary.json`` (and the backup is removed). See `tf_fracture.run_folder`.

    With ``model.aux_body_part`` the model trains a body-part head beside the fracture logit (the
    dataset's body parts as a second target, the loss ``fracture + aux_loss_weight x body part``);
    the best epoch is still chosen on the validation AUROC of the fracture logit, and ``model.keras``
    and ``final.weights.h5`` hold the single-logit classifier alone. Class weights then weigh the
    fracture loss only (per-image sample weights: Keras' ``class_weight`` takes one output).

    A folder that holds a finished run is not trained again: its summary is returned (with
    ``"already_complete": True``). A folder that holds another configuration's run raises
    `ConfigMismatchError`.

    Args:
        experiment: the resolved experiment config.
        run_dir: the run folder (created if needed).
        verbose: Keras' ``fit`` verbosity; ``"auto"``: a progress bar on a terminal, one line per epoch
            otherwise (a log file gets no bar redraws).
        validation_scorer: ``model -> validation logits`` instead of ``model.predict`` (tests).
        callbacks: more Keras callbacks, run after the run folder's own.

    Returns:
        The summary (also in ``summary.json``): ``best_epoch``, ``best_val_auroc``, ``epochs_completed``,
        ``seed``, ``images_per_second``, ``resumed_from_epoch``, ...
    """
    run = RunFolder(run_dir)
    started = time.perf_counter()
    if run.is_complete():
        _check_same_config(run, experiment)
        if run.backup.exists():  # killed after the summary was written, before the backup was removed
            shutil.rmtree(run.backup)
        _say(f"{run.path} holds a finished run ({run.summary}): nothing to train. Use a new --run-dir to train again.")
        return {**run.read_summary(), "already_complete": True}
    data, settings = experiment.data, experiment.train
    check_model_config(experiment)  # before any data is prepared
    # Before anything else uses TensorFlow (a multi-worker strategy must start first).
    strategy = runtime.strategy_for(settings)
    runtime.check_global_batch(data.batch_size, strategy)
    # Every worker of a cluster runs every callback: the chief writes the run folder, each other
    # worker a folder of its own inside it (its backup, so that it resumes too).
    run = RunFolder(runtime.worker_dir(run.path, strategy))
    if run.config.is_file():
        _check_same_config(run, experiment)
    # Nothing is written into the run folder before the data and the model are known to work: a
    # configuration that fails (an unknown split, a model that cannot be built at this size, ...)
    # leaves no config.json behind to lock the folder to it.
    if settings.deterministic:
        runtime.enable_determinism(settings.seed)
    else:
        keras.utils.set_random_seed(settings.seed)

    pipeline, validation, validation_labels, validation_parts = _data(experiment)
    weights = class_weights(pipeline.store.labels, settings.class_weights)
    initial_epoch = ResumableBackup.resume_epoch(run.backup)
    if initial_epoch >= settings.epochs:
        raise ValueError(
            f"The backup in {run.backup} is at epoch {initial_epoch}, past the {settings.epochs} epochs of "
            f"{run.config}: this run folder's state is inconsistent; use a new --run-dir."
        )

    # Seeded again right before the weights are drawn: preparing a dataset (the first run on a
    # machine, not a later one) draws random numbers, and the initial weights must not depend on it.
    keras.utils.set_random_seed(settings.seed)
    with runtime.precision_scope(settings.mixed_precision), strategy.scope():
        model = build_model(experiment)
        optimizer = build_optimizer(settings, model, pipeline.steps_per_epoch)
        model.compile(
            optimizer=optimizer,
            **compile_arguments(model, experiment.model.aux_loss_weight, experiment.model),
            jit_compile=settings.xla,
        )
    with run.lock():  # a second training into this folder stops here with one line
        if not run.config.is_file():
            write_json(run.config, experiment.to_dict())
        if initial_epoch:
            _say(f"Resuming {run.path} from its backup: epoch {initial_epoch + 1} of {settings.epochs}.")
        batches = pipeline.epochs(start_epoch=initial_epoch)
        multitask = is_multitask(model)  # dict outputs: class weights go in per-output sample weights
        if multitask and weights:
            batches = with_fracture_class_weights(batches, weights)
        best = BestModel(run.model)
        throughput = Throughput(data.batch_size)
        own_callbacks = [
            runtime.SyncMovingStatistics(),  # replicas' BatchNorm statistics averaged before validation and saving
            ValidationAUROC(validation, validation_labels, scorer=validation_scorer, body_parts=validation_parts),
            best,
            HistoryCSV(run.history, initial_epoch, learning_rates=lambda: current_learning_rates(model.optimizer)),
            *_tensorboard(run),
            throughput,
            ResumableBackup(run.backup, extra_state=best.state, restore_extra=best.restore),
        ]
        if verbose == "auto":
            verbose = epoch_verbosity(sys.stdout)
        with runtime.keras_multi_worker_fixes():
            model.fit(
                batches,
                epochs=settings.epochs,
                steps_per_epoch=pipeline.steps_per_epoch,
                initial_epoch=initial_epoch,
                class_weight=None if multitask else weights,
                shuffle=False,  # the pipeline's own order, a function of (seed, epoch)
                callbacks=[*own_callbacks, *callbacks],
                verbose=verbose,
            )
        classifier_of(model).save_weights(run.final_weights)  # the single-logit classifier, as model.keras
        history = run.read_history()
        summary = {
            "completed": True,
            "name": experiment.name,
            "stage": settings.stage,
            "backbone": experiment.model.backbone,
            "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,  # counted from 1
            "best_val_auroc": None if best.best == -math.inf else best.best,
            "final_val_auroc": history[-1].get("val_auroc") if history else None,
            "epochs_completed": settings.epochs,
            "resumed_from_epoch": initial_epoch or None,
            "seed": pipeline.seed,
            "steps_per_epoch": pipeline.steps_per_epoch,
            "train_images": len(pipeline.store),
            "validation_images": int(validation_labels.size),
            "class_weights": {str(k): v for k, v in weights.items()} if weights else None,
            "aux_body_part": validation_parts is not None,
            "localization_loss": experiment.model.localization_loss if experiment.guided else "none",
            "train_images_with_box": int(pipeline.store.has_target.sum()),
            "images_per_second": throughput.images_per_second,
            "seconds": time.perf_counter() - started,
            "model": run.model.name,  # relative to the run folder (RunFolder.path_of), which may move
        }
        write_json(run.summary, summary)
        shutil.rmtree(run.backup, ignore_errors=True)
        return summary


def _tensorboard(run: RunFolder) -> list:
    """TensorBoard logs in ``RUN/logs``, when the ``tensorboard`` package is installed (TensorFlow 2.21 lacks it)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        _say("TensorBoard logs skipped: the `tensorboard` package is not installed (pip install tensorboard).")
        return []
    return [keras.callbacks.TensorBoard(str(run.logs))]


def _data(experiment):
    """The training pipeline, the validation batches, their labels and (multi-task) their body parts.

    With ``model.aux_body_part`` both pipelines carry the body part (`split_metadata`, read in the
    split's own order) as a second target, and the body parts come back beside the labels;
    otherwise they are None.
    """
    from tf_fracture.data.sources import load_split, source_name, split_metadata

    data, settings = experiment.data, experiment.train
    preprocess = data.preprocess_config()

    def targets(split_name):
        if not experiment.model.aux_body_part:
            return None
        meta = split_metadata(data.dataset, load_split(data, split_name, decode_images=False))
        return {BODY_PART: meta["body_parts"]}

    split = load_split(data, data.train_split)
    pipeline = training_pipeline(
        split,
        preprocess,
        data.pipeline_config(settings.seed, deterministic=settings.deterministic),
        AugmentConfig() if data.augment else None,
        source=source_name(data, data.train_split),
        targets=targets(data.train_split),
        localization=experiment.guided,
        localization_target=data.localization_target,
        progress=_Progress(
            f"Preparing the {data.dataset} {data.train_split} images at {data.image_size} px", int(split.cardinality())
        ).add,
    )
    split = load_split(data, data.validation_split)
    validation = evaluation_pipeline(
        split,
        preprocess,
        data.batch_size,
        data.cache,
        source=source_name(data, data.validation_split),
        targets=targets(data.validation_split),
        progress=_Progress(
            f"Preparing the {data.dataset} {data.validation_split} images", int(split.cardinality())
        ).add,
    )
    # Labels (and parts) read back from the batches themselves: the order the predictions come in.
    batch_targets = [y for _, y in validation.as_numpy_iterator()]
    if not experiment.model.aux_body_part:
        return pipeline, validation, np.concatenate(batch_targets).astype(np.int64), None
    labels = np.concatenate([y[FRACTURE] for y in batch_targets]).astype(np.int64)
    parts = np.concatenate([y[BODY_PART] for y in batch_targets]).astype(np.int64)
    return pipeline, validation, labels, parts


class _Progress:
    """Prints ``label: i/N (p%)`` every few seconds once a preparation has lasted a few seconds."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total
        self.count = 0
        self.start = self.last = time.perf_counter()

    def add(self, images: int) -> None:
        self.count += images
        now = time.perf_counter()
        if now - self.start >= PROGRESS_AFTER_SECONDS and now - self.last >= PROGRESS_EVERY_SECONDS:
            self.last = now
            share = f" ({100 * self.count / self.total:.0f}%)" if self.total > 0 else ""
            _say(f"{self.label}: {self.count}/{self.total if self.total > 0 else '?'}{share}, {now - self.start:.0f} s")


def _check_same_config(run: RunFolder, experiment) -> None:
    saved = run.read_config()
    if saved != experiment.to_dict():
        changed = sorted(_differences(saved, experiment.to_dict()))
        raise ConfigMismatchError(
            f"{run.path} holds a run of another configuration (differs in {', '.join(changed[:10])}): "
            f"resume it with `--config {run.config}`, or train this one into a new --run-dir."
        )


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = set(a) | set(b)
    out = []
    for key in keys:
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out


def _say(message: str) -> None:
    print(message, flush=True)


def epoch_verbosity(stream) -> int:
    """Keras' ``fit`` verbosity for ``stream``: 1 (a progress bar) on a terminal, else 2 (one line per epoch)."""
    isatty = getattr(stream, "isatty", None)
    return 1 if isatty is not None and isatty() else 2
