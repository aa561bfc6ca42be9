"""Guided training end to end on synthetic_xray/tiny: the localisation loss is configured, applied, and recorded."""

import csv

import numpy as np
import pytest

import tf_fracture.datasets  # noqa: F401  (registers synthetic_xray)
from tf_fracture.configs import ExperimentConfig, get_experiment
from tf_fracture.models import load_model
from tf_fracture.run_folder import RunFolder
from tf_fracture.train.loop import train
from tf_fracture.train.model_factory import build_model
from tf_fracture.train.objectives import compile_arguments, is_multitask


def experiment(data_dir, *changes) -> ExperimentConfig:
    return get_experiment("demo").override(
        [
            "data.builder_config=tiny",
            f"data.data_dir={data_dir}",
            "data.image_size=64",
            "data.batch_size=8",
            "model.feature_dim=32",
            "train.epochs=1",
            "train.schedule=constant",
            *changes,
        ]
    )


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    # Two short runs (the bce loss itself is checked against NumPy in test_train_losses.py).
    for name, changes in {"energy": [], "weight0": ["model.localization_weight=0"]}.items():
        config = experiment(data_dir, *changes)
        out[name] = (train(config, root / name, verbose=0), RunFolder(root / name))
    return out


def history(run: RunFolder) -> list[dict]:
    with open(run.history) as file:
        return list(csv.DictReader(file))


def test_the_demo_is_guided_by_default():
    config = get_experiment("demo")
    assert config.model.localization_loss == "energy" and config.guided
    assert not get_experiment("paper", stage="pretrain").guided  # MURA has no boxes: nothing to guide with
    assert get_experiment("paper", stage="finetune", dataset="fracatlas").guided


def test_a_guided_run_trains_the_cam_and_records_it(runs):
    summary, run = runs["energy"]
    assert summary["localization_loss"] == "energy"
    assert summary["train_images_with_box"] == 12  # tiny's 24 training images, half of them fractured
    rows = history(run)
    assert "cam_loss" in rows[0] and float(rows[0]["cam_loss"]) > 0
    model = load_model(run.model)
    assert model.output_shape == (None, 1)  # the run folder keeps the single-logit classifier


def test_an_unguided_model_has_no_cam_output_and_no_localisation_loss(data_dir):
    config = experiment(data_dir, "model.localization_loss=none")
    assert not config.guided
    model = build_model(config)
    assert not is_multitask(model) and model.output_shape == (None, 1)
    assert set(compile_arguments(model, 0.3, config.model)) == {"loss", "metrics"}
    guided = experiment(data_dir)
    loss = compile_arguments(build_model(guided), 0.3, guided.model)["loss"]["cam"]
    assert (loss.kind, loss.cells) == ("energy", "touch")
    coverage = experiment(data_dir, "model.localization_cells=coverage", "model.localization_loss=bce")
    loss = compile_arguments(build_model(coverage), 0.3, coverage.model)["loss"]["cam"]
    assert (loss.kind, loss.cells) == ("bce", "coverage")


def test_the_localisation_loss_changes_the_training(runs):
    """Weight 0 trains on the fracture loss alone: its weights differ from the guided run's."""
    guided = load_model(runs["energy"][1].final_weights.parent / "model.keras")
    plain = load_model(runs["weight0"][1].final_weights.parent / "model.keras")
    difference = max(float(np.abs(a - b).max()) for a, b in zip(guided.get_weights(), plain.get_weights(), strict=True))
    assert difference > 1e-4
    assert float(history(runs["weight0"][1])[0]["cam_loss"]) > 0  # computed and logged, weighted 0
