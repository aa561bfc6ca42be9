"""`train` and its run folder on synthetic_xray/tiny at 32 px: files, best-model choice, history, refusal to retrain."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

import tf_fracture.datasets  # noqa: F401  (registers synthetic_xray)
from tf_fracture.configs import ExperimentConfig, get_experiment
from tf_fracture.models import load_model
from tf_fracture.run_folder import RunFolder
from tf_fracture.train.loop import ConfigMismatchError, train

EPOCHS = 3
LEARNING_RATE = 0.01
# Validation logits per epoch as a function of the labels: AUROC 0.5, 1.0, 0.5 -> the best epoch is 1,
# neither the first nor the last.
STUB_SCORES = (lambda y: np.zeros_like(y), lambda y: y - 0.5, lambda y: np.zeros_like(y))


def tiny_experiment(data_dir, **changes) -> ExperimentConfig:
    assignments = [
        "data.builder_config=tiny",
        f"data.data_dir={data_dir}",
        "data.image_size=32",
        "data.batch_size=8",
        "model.feature_dim=32",
        f"train.epochs={EPOCHS}",
        "train.optimizer=torch_sgd",
        f"train.learning_rate={LEARNING_RATE}",
        "train.momentum=0.6",
        "train.schedule=cosine_restarts",
        "train.t_0=1",
        "train.t_mult=2",
        *[f"{k}={v}" for k, v in changes.items()],
    ]
    return get_experiment("demo").override(assignments)


class Snapshots(keras.callbacks.Callback):
    """The model's logits on a fixed batch at the end of every epoch (the in-memory model)."""

    def __init__(self, images):
        super().__init__()
        self.images = images
        self.logits = []

    def on_epoch_end(self, epoch, logs=None):
        outputs = self.model(self.images, training=False)
        # The demo trains guided: its training model outputs {"fracture": logit, "cam": map}.
        self.logits.append(np.asarray(outputs["fracture"] if isinstance(outputs, dict) else outputs))


@pytest.fixture(scope="module")
def validation_labels(data_dir):
    split = tfds.load("synthetic_xray/tiny", split="validation", data_dir=data_dir, shuffle_files=False)
    return np.array([int(example["label"]) for example in split.as_numpy_iterator()], np.float64)


@pytest.fixture(scope="module")
def finished(data_dir, validation_labels, tmp_path_factory):
    """One 3-epoch run whose validation AUROCs are injected: 0.5, 1.0, 0.5."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    calls = []

    def scorer(model):
        calls.append(len(calls))
        return STUB_SCORES[len(calls) - 1](validation_labels)

    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    snapshots = Snapshots(images)
    experiment = tiny_experiment(data_dir)
    summary = train(experiment, run_dir, verbose=0, validation_scorer=scorer, callbacks=[snapshots])
    return experiment, RunFolder(run_dir), summary, snapshots


def test_run_folder_holds_the_config_model_history_and_summary_and_no_backup(finished):
    experiment, run, summary, _ = finished
    assert sorted(os.listdir(run.path)) == [
        ".lock",  # kept: removing a lock file others may hold open would let two writers in
        "config.json",
        "final.weights.h5",
        "history.csv",
        "logs",
        "model.keras",
        "summary.json",
    ]
    assert ExperimentConfig.from_json(run.config) == experiment  # the run repeats from config.json alone
    saved = json.loads(run.summary.read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["completed"] and saved["epochs_completed"] == EPOCHS
    assert (saved["train_images"], saved["validation_images"], saved["steps_per_epoch"]) == (24, 8, 3)
    assert saved["seed"] == experiment.train.seed
    assert saved["images_per_second"] > 0


def test_best_model_is_the_epoch_of_highest_validation_auroc(finished):
    _, run, summary, snapshots = finished
    assert (summary["best_epoch"], summary["best_val_auroc"]) == (2, 1.0)  # counted from 1
    model = load_model(run.model, compile=False)
    assert model.output_shape == (None, 1)
    logits = np.asarray(model(snapshots.images, training=False))
    np.testing.assert_allclose(logits, snapshots.logits[1], rtol=1e-6, atol=1e-6)
    # The epochs around it trained the model on: they differ, so the check above tells them apart.
    assert not np.allclose(snapshots.logits[1], snapshots.logits[2], rtol=1e-4, atol=1e-5)
    assert model.preprocessing["image_size"] == 32


def test_history_has_one_row_per_epoch_with_validation_auroc_and_the_epochs_learning_rate(finished):
    _, run, _, _ = finished
    with open(run.history, newline="") as file:
        reader = csv.DictReader(file)
        # Guided (the demo's default): the fracture and localisation losses beside the total.
        assert reader.fieldnames == [
            "epoch", "loss", "val_loss", "val_auroc", "learning_rate", "cam_loss", "fracture_auroc", "fracture_loss",
        ]  # fmt: skip
    rows = run.read_history()
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert [row["val_auroc"] for row in rows] == [0.5, 1.0, 0.5]
    # CosineAnnealingWarmRestarts(T_0=1, T_mult=2) per epoch: a restart after epoch 0, then half-way down.
    np.testing.assert_allclose([row["learning_rate"] for row in rows], [0.01, 0.01, 0.005], rtol=1e-6)
    # val_loss is the binary cross-entropy of the injected logits: log 2 for zeros.
    np.testing.assert_allclose(rows[0]["val_loss"], np.log(2), rtol=1e-9)


def test_a_finished_run_is_not_trained_again(finished, capsys):
    experiment, run, _, _ = finished
    before = {name: os.stat(run.path / name).st_mtime_ns for name in os.listdir(run.path)}
    summary = train(experiment, run.path, verbose=0)
    assert summary["already_complete"] is True
    assert "finished run" in capsys.readouterr().out
    assert {name: os.stat(run.path / name).st_mtime_ns for name in os.listdir(run.path)} == before


def test_a_run_folder_of_another_config_is_refused(finished):
    experiment, run, _, _ = finished
    other = experiment.override(["train.learning_rate=0.02"])
    with pytest.raises(ConfigMismatchError, match=r"train\.learning_rate"):
        train(other, run.path, verbose=0)
