"""The parts of `train` on their own: class weights, init_from, ensemble groups, CSV and backup on resume, the CLI."""

import csv

import keras
import numpy as np
import pytest

from tf_fracture.configs import get_experiment
from tf_fracture.metrics.losses import binary_cross_entropy
from tf_fracture.models import build_classifier
from tf_fracture.train.__main__ import main
from tf_fracture.train.callbacks import HistoryCSV, ResumableBackup, ValidationAUROC
from tf_fracture.train.class_weights import class_weights
from tf_fracture.train.model_factory import build_model, copy_weights
from tf_fracture.train.optimizer_factory import build_optimizer
from tf_fracture.train.optimizers import GroupedOptimizer, TorchSGD
from tf_fracture.train.schedules import CosineAnnealingWarmRestarts


def tiny_classifier(**options):
    options = {"weights": None, "input_size": 32, "feature_dim": 16, **options}
    return build_classifier("mobilenetv3", "small", **options)


def save_run(model, path):
    path.mkdir(parents=True)
    model.save(path / "model.keras")
    return str(path)


# Class weights


def test_balanced_class_weights_make_each_class_weigh_the_same():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    weights = class_weights(labels, "balanced")
    assert weights == pytest.approx({0: 8 / 12, 1: 8 / 4})
    assert weights[0] * 6 == pytest.approx(weights[1] * 2)
    assert class_weights(labels, "none") is None
    with pytest.raises(ValueError, match="both classes"):
        class_weights(np.zeros(5, int), "balanced")


# init_from


def test_copy_weights_matches_layers_by_name_across_input_sizes():
    keras.utils.set_random_seed(1)
    source = tiny_classifier(input_size=64)
    keras.utils.set_random_seed(2)
    target = tiny_classifier(input_size=32)
    assert not all(np.array_equal(a, b) for a, b in zip(source.get_weights(), target.get_weights(), strict=True))
    copied = copy_weights(source, target)
    assert "cam" in copied and any(path.startswith("top_cbam/") for path in copied)
    for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_copy_weights_refuses_another_architecture():
    with pytest.raises(ValueError, match="top_cbam"):
        copy_weights(tiny_classifier(attention=False), tiny_classifier(attention=True))
    with pytest.raises(ValueError, match="differ in shape"):
        copy_weights(tiny_classifier(feature_dim=16), tiny_classifier(feature_dim=24))


def test_init_from_a_run_folder_starts_the_model_from_its_weights(tmp_path):
    keras.utils.set_random_seed(3)
    source = tiny_classifier()
    run = save_run(source, tmp_path / "pretrained")
    experiment = get_experiment("demo").override(
        ["data.image_size=32", "model.feature_dim=16", "model.feature_stride=null", f"model.init_from={run}"]
    )
    keras.utils.set_random_seed(4)
    model = build_model(experiment)
    for a, b in zip(source.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert model.preprocessing["image_size"] == 32  # the new run's preprocessing, not the source's


# The ensemble


def test_the_ensemble_trains_fusion_layers_and_members_with_their_own_optimisers(tmp_path):
    members = [
        save_run(tiny_classifier(attention=True), tmp_path / "a"),
        save_run(tiny_classifier(attention=False), tmp_path / "b"),
    ]
    experiment = get_experiment("paper", stage="ensemble").override(
        ["data.dataset=synthetic_xray", "data.image_size=32", f"model.members={','.join(members)}"]
    )
    model = build_model(experiment)
    optimizer = build_optimizer(experiment.train, model, steps_per_epoch=10)
    assert isinstance(optimizer, GroupedOptimizer)
    optimizer.build(model.trainable_variables)
    member_variables = {id(v) for member in model.members for v in member.trainable_variables}
    assert member_variables
    for variable in model.trainable_variables:
        expected = "backbones" if id(variable) in member_variables else "fusion"
        assert optimizer.group_of(variable) == expected, variable.path
    groups = optimizer.groups
    for name, rate in (("fusion", 2e-4), ("backbones", 5e-5)):
        group = groups[name]
        assert isinstance(group, TorchSGD) and group.momentum == 0.8 and group.weight_decay == 1e-3
        assert isinstance(group._learning_rate, CosineAnnealingWarmRestarts)
        assert group._learning_rate.initial_learning_rate == rate and group._learning_rate.T_0 == 4


def test_a_fusion_without_a_member_rate_keeps_its_members_frozen(tmp_path):
    members = [
        save_run(tiny_classifier(attention=True), tmp_path / "a"),
        save_run(tiny_classifier(attention=False), tmp_path / "b"),
    ]
    experiment = get_experiment("paper", stage="ensemble").override(
        [
            "data.dataset=synthetic_xray",
            "data.image_size=32",
            f"model.members={','.join(members)}",
            "train.backbone_learning_rate=none",
        ]
    )
    model = build_model(experiment)
    assert all(not member.trainable for member in model.members)
    assert not isinstance(build_optimizer(experiment.train, model, steps_per_epoch=10), GroupedOptimizer)


# Callbacks on resume


def test_history_csv_drops_the_rows_of_epochs_that_are_replayed(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_auroc\n1,0.9,0.6\n2,0.8,0.7\n3,0.7,0.8\n")
    history = HistoryCSV(path, initial_epoch=2)
    history.on_train_begin()
    history.on_epoch_begin(2)
    history.on_epoch_end(2, {"loss": 0.65, "val_auroc": 0.85})
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["epoch"], r["loss"]) for r in rows] == [("1", "0.9"), ("2", "0.8"), ("3", "0.65")]


def test_backup_restores_weights_optimizer_generators_and_best_model_state(tmp_path):
    def model_and_data():
        keras.utils.set_random_seed(5)
        inputs = keras.Input((4,))
        outputs = keras.layers.Dense(1)(keras.layers.Dropout(0.5)(keras.layers.Dense(8)(inputs)))
        model = keras.Model(inputs, outputs)
        model.compile(TorchSGD(0.1, momentum=0.9), "mse")
        return model, np.random.default_rng(0).normal(size=(16, 4)), np.ones((16, 1))

    model, x, y = model_and_data()
    backup = ResumableBackup(tmp_path / "backup", extra_state=lambda: {"best_epoch": 1, "best_val_auroc": 0.75})
    model.fit(x, y, epochs=2, batch_size=4, callbacks=[backup], verbose=0, shuffle=False)
    assert ResumableBackup.resume_epoch(tmp_path / "backup") == 2
    assert len(list((tmp_path / "backup").glob("*.weights.h5"))) == 1  # the previous epoch's file is gone

    restored_state = {}
    fresh, _, _ = model_and_data()
    fresh.optimizer.build(fresh.trainable_variables)
    callback = ResumableBackup(tmp_path / "backup", restore_extra=restored_state.update)
    callback.set_model(fresh)
    callback.on_train_begin()
    assert restored_state == {"best_epoch": 1, "best_val_auroc": 0.75}
    assert fresh._initial_epoch == 2
    assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations) == 8
    for a, b in zip(model.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.optimizer.variables, fresh.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    dropout = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dropout))
    fresh_dropout = next(layer for layer in fresh.layers if isinstance(layer, keras.layers.Dropout))
    np.testing.assert_array_equal(dropout.seed_generator.state.numpy(), fresh_dropout.seed_generator.state.numpy())


def test_validation_auroc_and_loss_from_one_pass_of_logits():
    labels = np.array([0, 0, 1, 1])
    logits = np.array([-2.0, 1.0, 0.5, 3.0])
    callback = ValidationAUROC(None, labels, scorer=lambda model: logits)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["val_auroc"] == pytest.approx(0.75)
    expected = -np.mean(
        labels * np.log(1 / (1 + np.exp(-logits))) + (1 - labels) * np.log(1 - 1 / (1 + np.exp(-logits)))
    )
    assert logs["val_loss"] == pytest.approx(expected, rel=1e-12)
    assert binary_cross_entropy([1], [1000.0]) == pytest.approx(0.0) and np.isfinite(binary_cross_entropy([0], [1e4]))
    with pytest.raises(ValueError, match="both classes"):
        ValidationAUROC(None, np.ones(4))


# The command line


def test_an_unknown_set_key_fails_listing_the_valid_ones(capsys):
    assert main(["--set", "train.epoch=3"]) == 1
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert "train.epoch" in error and "train.epochs" in error and "data.image_size" in error


def test_config_file_and_preset_flags_do_not_mix(tmp_path, capsys):
    path = tmp_path / "config.json"
    get_experiment("demo").to_json(path)
    assert main(["--config", str(path), "--preset", "paper"]) == 1
    assert "--config gives the whole experiment" in capsys.readouterr().err


def test_models_train_with_a_batchnorm_momentum_whose_statistics_follow_a_short_run():
    model = build_model(get_experiment("demo").override(["data.image_size=32", "model.feature_dim=16"]))
    momenta = [
        layer.momentum for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(momenta) > 10 and set(momenta) == {0.9}


def test_a_run_on_synthetic_data_below_the_sanity_bar_is_flagged():
    from tf_fracture.configs import get_experiment
    from tf_fracture.train.__main__ import sanity_warning

    demo = get_experiment("demo")
    assert "below 0.95" in sanity_warning(demo, 0.52)
    assert sanity_warning(demo, 0.97) is None
    assert sanity_warning(get_experiment("demo", dataset="fracatlas"), 0.52) is None  # real data: no such bar
