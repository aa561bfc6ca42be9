"""`train` with the auxiliary body-part head (``model.aux_body_part``) on a tiny FracAtlas-like set at 32 px.

The set is written here in FracAtlas' layout (``dataset.csv`` + ``images/{Fractured,Non_fractured}``)
and prepared by the real ``fracatlas`` TFDS builder, so the body parts travel the real path: the
``regions`` feature, `split_metadata`, the pipelines' targets. The body part is trivially visible
(hand: fine horizontal stripes, leg: fine vertical stripes, no region: neither), the fracture label
is not related to it.
"""

import csv
import dataclasses
import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_fracture.datasets  # noqa: F401  (registers fracatlas)
from tf_fracture.configs import get_experiment
from tf_fracture.data.pipeline import evaluation_pipeline
from tf_fracture.data.sources import load_split, split_metadata
from tf_fracture.metrics import roc_auc
from tf_fracture.metrics.losses import body_part_scores
from tf_fracture.models import load_model
from tf_fracture.models.multitask import BODY_PART, CAM, FRACTURE, MultiTaskClassifier
from tf_fracture.run_folder import RunFolder
from tf_fracture.train.callbacks import classifier_of
from tf_fracture.train.class_weights import with_fracture_class_weights
from tf_fracture.train.loop import train
from tf_fracture.train.model_factory import build_model
from tf_fracture.train.objectives import (
    KnownPartAccuracy,
    compile_arguments,
)

SIZE = 32
IMAGES = 40
EPOCHS = 4
REGIONS = ("hand", "leg", "hip", "shoulder")


def part_of(i: int) -> int:
    """Image i's region: hand (0) or leg (1), and every tenth image none (-1)."""
    return -1 if i % 10 == 9 else i % 2


def image(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    # A distinct smooth background per image (distinct perceptual hashes: no near-duplicates), and the
    # part as a fine texture (too fine for the perceptual hash).
    base = cv2.resize(rng.integers(60, 190, (4, 4)).astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    stripes = np.where((np.arange(SIZE) // 2) % 2 == 0, 50.0, -50.0)
    texture = {0: stripes[:, None] + 0 * stripes[None, :], 1: stripes[None, :] + 0 * stripes[:, None]}
    return np.clip(base + texture.get(part_of(i), 0.0), 0, 255).astype(np.uint8)


def write_fracatlas(root) -> None:
    labels = np.random.default_rng(7).permutation([0, 1] * (IMAGES // 2))
    for folder in ("Fractured", "Non_fractured"):
        os.makedirs(os.path.join(root, "FracAtlas", "images", folder))
    with open(os.path.join(root, "FracAtlas", "dataset.csv"), "w", newline="") as file:
        writer = csv.writer(file)
        flags = ["mixed", "hardware", "multiscan", "fractured", "fracture_count", "frontal", "lateral", "oblique"]
        writer.writerow(["image_id", *REGIONS, *flags])
        for i, label in enumerate(labels):
            name = f"IMG{i:07d}.png"
            folder = "Fractured" if label else "Non_fractured"
            cv2.imwrite(os.path.join(root, "FracAtlas", "images", folder, name), image(i))
            regions = [int(part_of(i) == r) for r in range(len(REGIONS))]
            writer.writerow([name, *regions, 0, 0, 0, int(label), int(label), 1, 0, 0])


def experiment(data_dir, manual_dir, **changes):
    assignments = [
        "data.dataset=fracatlas",
        f"data.data_dir={data_dir}",
        f"data.manual_dir={manual_dir}",
        f"data.image_size={SIZE}",
        "data.batch_size=8",
        "data.augment=false",
        "model.feature_dim=32",
        "model.aux_body_part=true",
        "model.aux_loss_weight=1.0",
        f"train.epochs={EPOCHS}",
        "train.optimizer=adamw",
        "train.learning_rate=0.003",
        "train.weight_decay=0",
        "train.schedule=constant",
        *[f"{k}={v}" for k, v in changes.items()],
    ]
    return get_experiment("demo").override(assignments)


class Snapshots(keras.callbacks.Callback):
    """The in-memory multi-task model's outputs on fixed images at the end of every epoch."""

    def __init__(self, images):
        super().__init__()
        self.images = images
        self.outputs = []

    def on_epoch_end(self, epoch, logs=None):
        assert isinstance(self.model, MultiTaskClassifier)
        self.outputs.append({k: np.asarray(v) for k, v in self.model(self.images, training=False).items()})


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    manual = tmp_path_factory.mktemp("manual")
    write_fracatlas(manual)
    return str(tmp_path_factory.mktemp("tfds")), str(manual)


@pytest.fixture(scope="module")
def finished(dirs, tmp_path_factory):
    """The one multi-task training of the module: (config, run folder, summary, snapshots, class-weight calls).

    With balanced class weights (the training split is balanced: weights of 1), so that this training
    also shows them reaching the fracture loss: a spy records every `with_fracture_class_weights` call.
    """
    import tf_fracture.train.loop as loop

    config = experiment(*dirs, **{"train.class_weights": "balanced"})
    validation = load_split(config.data, config.data.validation_split)
    images = np.stack([e["image"] for e in validation.as_numpy_iterator()]).astype("float32")
    snapshots = Snapshots(images)
    run = RunFolder(tmp_path_factory.mktemp("runs") / "run")
    calls = []

    def spy(dataset, weights):
        calls.append(dict(weights))
        return with_fracture_class_weights(dataset, weights)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "with_fracture_class_weights", spy)
        summary = train(config, run.path, verbose=0, callbacks=[snapshots])
    return config, run, summary, snapshots, calls


def history_column(run, name):
    return np.array([row[name] for row in run.read_history()], np.float64)


def test_the_set_has_the_body_parts_it_was_written_with(dirs):
    config = experiment(*dirs)
    parts = {}
    for split in ("train", "validation", "test"):
        meta = split_metadata("fracatlas", load_split(config.data, split, decode_images=False))
        for name, value in zip(meta["filenames"], meta["body_parts"], strict=True):
            parts[name] = value
    assert len(parts) == IMAGES  # nothing excluded as a duplicate
    assert {name: int(part) for name, part in parts.items()} == {name: part_of(int(name[-11:-4])) for name in parts}


def test_model_keras_is_the_single_logit_classifier_of_the_best_epoch(finished):
    _, run, summary, snapshots, _ = finished
    model = load_model(run.model, compile=False)
    assert not isinstance(model, MultiTaskClassifier)
    assert model.output_shape == (None, 1)
    logits = np.asarray(model(snapshots.images, training=False))
    best = snapshots.outputs[summary["best_epoch"] - 1][FRACTURE]  # epochs counted from 1
    np.testing.assert_allclose(logits, best, rtol=0, atol=1e-5)
    assert model.preprocessing["image_size"] == SIZE


def test_final_weights_are_the_classifiers_and_load_into_a_plain_classifier(finished):
    config, run, _, snapshots, _ = finished
    plain = build_model(dataclasses.replace(config, model=dataclasses.replace(config.model, aux_body_part=False)))
    plain = classifier_of(plain)  # FracAtlas has boxes: guided, the training model wraps the classifier
    plain.load_weights(run.final_weights)
    logits = np.asarray(plain(snapshots.images, training=False))
    np.testing.assert_allclose(logits, snapshots.outputs[-1][FRACTURE], rtol=0, atol=1e-5)


def test_the_best_epoch_is_chosen_on_the_fracture_auroc_of_the_saved_classifier(finished):
    config, run, summary, _, _ = finished
    data = config.data
    validation = evaluation_pipeline(
        load_split(data, data.validation_split), data.preprocess_config(), data.batch_size, cache=None
    )
    labels = np.concatenate([y for _, y in validation.as_numpy_iterator()])
    logits = load_model(run.model, compile=False).predict(validation, verbose=0).reshape(-1)
    auroc = roc_auc(labels, 1 / (1 + np.exp(-logits.astype(np.float64))))
    assert summary["best_val_auroc"] == pytest.approx(auroc, abs=1e-6)
    aurocs = history_column(run, "val_auroc")
    assert summary["best_val_auroc"] == aurocs.max() and summary["best_epoch"] == int(np.argmax(aurocs)) + 1


def test_history_has_the_body_part_columns(finished):
    _, run, _, _, _ = finished
    with open(run.history, newline="") as file:
        columns = csv.DictReader(file).fieldnames
    assert columns[:5] == ["epoch", "loss", "val_loss", "val_auroc", "learning_rate"]
    for column in ("body_part_loss", "body_part_accuracy", "fracture_loss", "fracture_auroc"):
        assert column in columns and column.startswith(("body", "fracture"))
        assert f"val_{column}" in columns or not column.startswith("body")
    assert [row["epoch"] for row in run.read_history()] == list(range(1, EPOCHS + 1))
    # loss = fracture loss + aux_loss_weight (1.0) x body-part loss
    np.testing.assert_allclose(
        history_column(run, "loss"),
        history_column(run, "fracture_loss") + history_column(run, "body_part_loss"),
        rtol=1e-4,
    )


def test_the_body_part_head_learns_the_visible_part(finished):
    # Training-mode metrics: in 16 steps BatchNorm's moving statistics (inference mode) are still
    # mostly their initial values, so the validation images say little yet (val_* are logged, not checked).
    _, run, _, _, _ = finished
    losses = history_column(run, "body_part_loss")
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(history_column(run, "val_body_part_loss")))
    assert np.all(np.diff(losses) < 0) and losses[-1] < 0.7 * losses[0], losses
    # Chance is ~0.5 (hand or leg): images whose parts were mixed up with others' stay near it.
    assert history_column(run, "body_part_accuracy")[-1] >= 0.9


def test_fracture_class_weights_weigh_the_fracture_loss_only():
    images = tf.zeros((4, 2, 2, 1))
    targets = {FRACTURE: tf.constant([0.0, 1.0, 1.0, 0.0]), BODY_PART: tf.constant([0, 1, -1, 2])}
    dataset = tf.data.Dataset.from_tensors((images, targets))
    [(_, y, w)] = list(with_fracture_class_weights(dataset, {0: 0.25, 1: 4.0}).as_numpy_iterator())
    np.testing.assert_array_equal(w[FRACTURE], [0.25, 4.0, 4.0, 0.25])
    np.testing.assert_array_equal(w[BODY_PART], [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(y[BODY_PART], [0, 1, -1, 2])


def test_multitask_training_with_balanced_class_weights(finished):
    # The module's training (`finished`) has train.class_weights=balanced: no second training for this.
    config, run, summary, _, calls = finished
    assert config.train.class_weights == "balanced" and config.model.aux_body_part
    # The training split holds as many fractured as intact images: weights of 1.
    assert calls == [{0: 1.0, 1: 1.0}]
    assert summary["class_weights"] == {"0": 1.0, "1": 1.0}
    assert load_model(run.model, compile=False).output_shape == (None, 1)


def test_fusion_with_the_body_part_head_is_refused_before_any_data_is_read(tmp_path):
    config = experiment(
        tmp_path / "no-tfds", tmp_path / "no-manual", **{"model.backbone": "fusion", "model.members": "a,b"}
    )
    with pytest.raises(ValueError, match="aux_body_part=true` needs a single backbone"):
        build_model(config)
    with pytest.raises(ValueError, match="aux_body_part=true` needs a single backbone"):
        train(config, tmp_path / "run", verbose=0)
    assert not os.path.exists(tmp_path / "no-tfds")


def test_compile_arguments_of_a_multitask_model(dirs):
    config = experiment(*dirs)
    model = build_model(config)
    arguments = compile_arguments(model, 0.7, config.model)
    # FracAtlas has boxes: guided by default, so the CAM's localisation loss is there too.
    assert arguments["loss_weights"] == {FRACTURE: 1.0, BODY_PART: 0.7, CAM: config.model.localization_weight}
    assert set(arguments["metrics"]) == {FRACTURE, BODY_PART}
    with pytest.raises(ValueError, match="model_config"):
        compile_arguments(model, 0.7)


class Interrupt(keras.callbacks.Callback):
    """Stops training with an error at the end of an epoch (after the run's own callbacks backed it up)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"interrupted after epoch {epoch}")


@pytest.mark.large  # ~85 s: three trainings; single-task resume is covered by test_train_resume.py
def test_an_interrupted_multitask_run_resumes_to_the_weights_of_an_uninterrupted_one(dirs, tmp_path):
    config = experiment(*dirs, **{"train.epochs": 3, "model.dropout": 0.2})
    whole = RunFolder(tmp_path / "whole")
    train(config, whole.path, verbose=0)
    parts = RunFolder(tmp_path / "parts")
    with pytest.raises(KeyboardInterrupt):
        train(config, parts.path, verbose=0, callbacks=[Interrupt(1)])
    assert not parts.summary.exists()
    summary = train(config, parts.path, verbose=0)
    assert summary["resumed_from_epoch"] == 2
    expected, resumed = (build_model(config).classifier for _ in range(2))
    expected.load_weights(whole.final_weights)
    resumed.load_weights(parts.final_weights)
    for a, b in zip(expected.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6, err_msg=a.path)
    assert [r["body_part_loss"] for r in parts.read_history()] == [r["body_part_loss"] for r in whole.read_history()]


def test_body_part_accuracy_and_validation_loss_leave_unknown_parts_out():
    parts = np.array([0, 1, -1, 2, 1])
    logits = np.array([[3.0, 0, 0], [0, 0, 2], [9, 0, 0], [0, 0, 1], [0.5, 2, 0]], np.float32)
    metric = KnownPartAccuracy()
    metric.update_state(parts, logits)
    assert float(metric.result()) == pytest.approx(3 / 4)
    loss, accuracy = body_part_scores(parts, logits)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)(parts, logits)
    assert loss == pytest.approx(float(keras_loss), rel=1e-5)  # the training's body-part loss
    assert accuracy == pytest.approx(3 / 4)
    assert all(np.isnan(body_part_scores(np.array([-1, -1]), logits[:2])))
