"""Experiment configs: JSON round trip, overrides, the method's preset values, checks, TF-free import."""

import dataclasses
import json
import subprocess
import sys
import typing

import pytest

from tf_fracture.configs import (
    DATASETS,
    PRESETS,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    backbone_names,
    get_experiment,
    valid_keys,
)
from tf_fracture.configs.experiment import SECTIONS


def _all_presets():
    return [config for stages in PRESETS.values() for by_backbone in stages.values() for config in by_backbone.values()]


# --- JSON ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", _all_presets(), ids=lambda c: c.name)
def test_json_round_trip_is_equal(config, tmp_path):
    path = tmp_path / "config.json"
    config.to_json(path)
    assert ExperimentConfig.from_json(path) == config
    assert ExperimentConfig.from_dict(json.loads(path.read_text())) == config


def test_from_json_repeats_a_config_with_tuples_and_overrides(tmp_path):
    config = get_experiment("paper", stage="ensemble").override(
        ["model.members=runs/a,runs/b,runs/c", "model.fusion_hidden_units=512,64", "train.seed=7", "name=abl"]
    )
    path = tmp_path / "config.json"
    config.to_json(path)
    saved = json.loads(path.read_text())
    assert saved["model"]["members"] == ["runs/a", "runs/b", "runs/c"]
    assert saved["name"] == "abl" and saved["train"]["seed"] == 7
    again = ExperimentConfig.from_json(path)
    assert again == config
    assert again.model.fusion_hidden_units == (512, 64)  # a tuple again, not a list


def test_from_dict_fills_missing_fields_with_defaults():
    config = ExperimentConfig.from_dict({"name": "x", "train": {"epochs": 3}})
    assert config.train == TrainConfig(epochs=3)
    assert config.data == DataConfig() and config.model == ModelConfig()


@pytest.mark.parametrize(
    "d, named",
    [
        ({"nam": "x"}, "nam"),
        ({"train": {"epoch": 3}}, "train.epoch"),
        ({"data": {"img_size": 3}}, "data.img_size"),
    ],
)
def test_from_dict_rejects_unknown_keys_listing_valid_ones(d, named):
    with pytest.raises(ValueError, match="Valid keys") as info:
        ExperimentConfig.from_dict(d)
    assert named in str(info.value)


def test_from_json_of_broken_file_says_so(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON experiment config"):
        ExperimentConfig.from_json(path)


# --- overrides ----------------------------------------------------------------------------------


def test_overrides_parse_each_type():
    config = ExperimentConfig().override(
        [
            "train.epochs=3",
            "train.learning_rate=2.5e-4",
            "train.xla=true",
            "train.deterministic=0",
            "data.augment=no",
            "model.variant=small",
            "model.feature_dim=none",
            "train.mixed_precision=bf16",
            "model.fusion_hidden_units=128,32",
            "model.members=",
            "data.cache=",
            "train.backbone_learning_rate=5e-5",
        ]
    )
    assert config.train.epochs == 3 and isinstance(config.train.epochs, int)
    assert config.train.learning_rate == 2.5e-4
    assert config.train.xla is True and config.train.deterministic is False and config.data.augment is False
    assert config.model.variant == "small" and config.model.feature_dim is None
    assert config.train.mixed_precision == "bf16"
    assert config.model.fusion_hidden_units == (128, 32) and config.model.members == ()
    assert config.data.cache == ""
    assert config.train.backbone_learning_rate == 5e-5


def test_overrides_apply_in_order_and_leave_the_original_unchanged():
    base = ExperimentConfig()
    config = apply_overrides(base, ["train.epochs=3", "train.epochs=4", "model.variant=small", "model.variant=null"])
    assert config.train.epochs == 4 and config.model.variant is None
    assert base == ExperimentConfig()
    # Only the named fields change.
    assert dataclasses.replace(config.train, epochs=base.train.epochs) == base.train


def test_unknown_override_key_lists_every_valid_key():
    with pytest.raises(ValueError, match=r"Unknown config key 'train\.epoch'") as info:
        ExperimentConfig().override(["train.epoch=3"])
    message = str(info.value)
    for key in valid_keys():
        assert key in message
    assert len(valid_keys()) == 1 + sum(len(dataclasses.fields(cls)) for cls in SECTIONS.values())


@pytest.mark.parametrize(
    "assignment, pattern",
    [
        ("train.epochs=three", r"`train.epochs` to be an integer"),
        ("train.epochs=2.5", r"`train.epochs` to be an integer"),
        ("train.learning_rate=fast", r"`train.learning_rate` to be a number"),
        ("train.xla=maybe", r"`train.xla` to be a boolean"),
        (
            "model.fusion_hidden_units=256,x",
            r"`model.fusion_hidden_units` to be comma-separated items, each an integer",
        ),
        ("model.feature_dim=wide", r"`model.feature_dim` to be an integer or None"),
        ("train.epochs=0", r"`epochs` to be a positive integer"),
        ("train.momentum=1.5", r"`momentum`"),
        ("data.unsharp_kernel=4", r"`unsharp_kernel` to be odd"),
        ("model.backbone=resnet", r"`backbone` to be one of 'convnext', 'efficientnetv2', 'mobilenetv3', 'fusion'"),
        ("train.optimizer=adam", r"`optimizer` to be one of"),
        ("data.dataset=imagenet", r"`dataset` to be one of"),
        ("train.epochs", r"'key=value'"),
    ],
)
def test_bad_override_values_name_the_key(assignment, pattern):
    with pytest.raises(ValueError, match=pattern):
        ExperimentConfig().override([assignment])


def test_overrides_refuse_a_single_string():
    with pytest.raises(ValueError, match="list of 'key=value'"):
        apply_overrides(ExperimentConfig(), "train.epochs=3")


# --- checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: DataConfig(image_size=0),
        lambda: DataConfig(batch_size=True),
        lambda: DataConfig(augmented_copies=-1),
        lambda: DataConfig(dataset="mnist"),
        lambda: DataConfig(resize_mode="crop"),
        lambda: DataConfig(augment="yes"),
        lambda: ModelConfig(stem="gray"),
        lambda: ModelConfig(weights="imagenet21k"),
        lambda: ModelConfig(dropout=1.0),
        lambda: ModelConfig(members=["a"]),
        lambda: ModelConfig(fusion_hidden_units=(0,)),
        lambda: TrainConfig(stage="warmup"),
        lambda: TrainConfig(learning_rate=0.0),
        lambda: TrainConfig(learning_rate=float("nan")),
        lambda: TrainConfig(schedule="step"),
        lambda: TrainConfig(class_weights="inverse"),
        lambda: TrainConfig(mixed_precision="fp8"),
        lambda: TrainConfig(distribute="tpu"),
        lambda: TrainConfig(seed=-1),
        lambda: TrainConfig(target_sensitivity=0.0),
        lambda: ExperimentConfig(name=""),
        lambda: ExperimentConfig(model=ModelConfig(aux_body_part=True)),  # synthetic_xray has no body parts
        lambda: ExperimentConfig(model=ModelConfig(backbone="fusion"), train=TrainConfig(stage="pretrain")),
    ],
)
def test_bad_values_are_rejected(make):
    with pytest.raises(ValueError, match=r"Expected|needs|fusion model"):
        make()


def test_configs_are_frozen():
    config = get_experiment()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 1
    with pytest.raises(TypeError):
        PRESETS["demo"]["train"]["mobilenetv3"] = config
    with pytest.raises(TypeError):
        PRESETS["paper"]["pretrain"]["convnext"] = config


def test_every_field_has_help():
    for cls in (DataConfig, ModelConfig, TrainConfig, ExperimentConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def test_image_size_is_defined_once():
    config = get_experiment("paper", stage="finetune", backbone="convnext").override(["data.image_size=320"])
    pre = config.data.preprocess_config()
    assert pre.image_size == config.data.image_size == 320
    assert (pre.unsharp_kernel, pre.clahe_clip_limit, pre.clahe_grid, pre.unsharp_amount) == (7, 2.5, 4, 2.0)
    assert not any(f.name == "image_size" for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls))


def test_pipeline_config_carries_the_data_fields():
    data = get_experiment("paper", stage="finetune").data
    pipeline = data.pipeline_config(seed=5)
    assert (pipeline.batch_size, pipeline.augmented_copies, pipeline.cache, pipeline.seed) == (32, 2, "", 5)


def test_resolved_builder_config():
    assert DataConfig(dataset="mura").resolved_builder_config() == "grouped_val"
    assert DataConfig(dataset="synthetic_xray", builder_config="tiny").resolved_builder_config() == "tiny"


# --- presets: the method's values ----------------------------------------------------------------

PRETRAIN_LR = {"convnext": 1.2e-3, "efficientnetv2": 8e-4, "mobilenetv3": 1e-4}
FINETUNE_MOMENTUM = {"convnext": 0.8, "efficientnetv2": 0.7, "mobilenetv3": 0.6}


@pytest.mark.parametrize("backbone", backbone_names())
def test_paper_pretrain_values(backbone):
    c = get_experiment("paper", stage="pretrain", backbone=backbone)
    assert (c.data.dataset, c.data.builder_config, c.data.image_size) == ("mura", "grouped_val", 384)
    assert (c.data.unsharp_kernel, c.data.clahe_clip_limit, c.data.clahe_grid) == (5, 2.5, 4)
    assert (c.data.augmented_copies, c.data.batch_size, c.data.augment) == (1, 32, True)
    assert c.model.backbone == backbone and c.model.attention and c.model.stem == "grey"
    t = c.train
    assert (t.stage, t.epochs, t.optimizer) == ("pretrain", 35, "torch_sgd")
    assert t.learning_rate == PRETRAIN_LR[backbone]
    assert (t.momentum, t.weight_decay) == (0.6, 1e-3)
    assert (t.schedule, t.t_0, t.t_mult, t.eta_min, t.per_batch_schedule) == ("cosine_restarts", 5, 2, 0.0, False)


@pytest.mark.parametrize("backbone", backbone_names())
def test_paper_finetune_values(backbone):
    c = get_experiment("paper", stage="finetune", backbone=backbone)
    assert (c.data.dataset, c.data.image_size, c.data.unsharp_kernel) == ("elbow", 584, 7)
    assert (c.data.augmented_copies, c.data.batch_size) == (2, 32)
    t = c.train
    assert (t.stage, t.epochs, t.optimizer) == ("finetune", 28, "torch_sgd")
    assert t.learning_rate == PRETRAIN_LR[backbone]
    assert t.momentum == FINETUNE_MOMENTUM[backbone]
    assert (t.weight_decay, t.schedule, t.t_0, t.t_mult) == (1e-3, "cosine_restarts", 4, 2)


def test_paper_values_as_numbers():
    # The figures, written out once more as literals.
    assert get_experiment("paper", stage="pretrain", backbone="convnext").train.learning_rate == 1.2e-3
    assert get_experiment("paper", stage="pretrain", backbone="efficientnetv2").train.learning_rate == 8e-4
    assert get_experiment("paper", stage="pretrain", backbone="mobilenetv3").train.learning_rate == 1e-4
    assert get_experiment("paper", stage="finetune", backbone="efficientnetv2").train.momentum == 0.7
    assert get_experiment("paper", stage="finetune", backbone="mobilenetv3").train.momentum == 0.6
    assert get_experiment("paper", stage="finetune", backbone="mobilenetv3").train.t_0 == 4


def test_paper_ensemble_values():
    c = get_experiment("paper", stage="ensemble")
    assert c.model.backbone == "fusion"
    assert (c.data.dataset, c.data.image_size, c.data.unsharp_kernel, c.data.augmented_copies) == ("elbow", 584, 7, 2)
    t = c.train
    assert (t.stage, t.epochs, t.momentum, t.optimizer) == ("ensemble", 12, 0.8, "torch_sgd")
    assert (t.learning_rate, t.backbone_learning_rate) == (2e-4, 5e-5)
    assert get_experiment("paper", stage="ensemble", backbone="fusion") == c


def test_paper_default_stage_is_pretrain_mobilenetv3():
    assert get_experiment("paper") == PRESETS["paper"]["pretrain"]["mobilenetv3"]


def test_demo_preset():
    c = get_experiment()
    assert c == get_experiment("demo", stage="train", backbone="mobilenetv3")
    assert (c.model.backbone, c.model.attention, c.model.stem) == ("mobilenetv3", True, "grey")
    assert (c.data.dataset, c.data.resolved_builder_config()) == ("synthetic_xray", "default")
    # The set's own size (thin fractures vanish below it) and few epochs: about 10 minutes on 2 CPU cores.
    assert c.data.image_size == 256 and c.data.batch_size == 32
    assert c.train.epochs <= 8
    assert c.guided and c.model.localization_loss == "energy"
    # What the measured demo run used (README, Training): box targets, a 16x16 CAM, CLAHE without the
    # unsharp mask, no augmentation.
    assert c.data.localization_target == "box" and c.model.feature_stride == 16
    assert c.data.unsharp_amount == 0.0 and c.data.augment is False


def test_the_model_config_holds_the_backbones_own_fields():
    from tf_fracture.configs.backbones import BackboneConfig
    from tf_fracture.configs.experiment import BACKBONE_FIELDS

    ours = {f.name: f for f in dataclasses.fields(ModelConfig)}
    theirs = {f.name: f for f in dataclasses.fields(BackboneConfig)}
    for name in BACKBONE_FIELDS:
        if name != "weights":  # the one default of its own: no download is assumed
            assert (ours[name].default, ours[name].metadata["help"]) == (
                theirs[name].default,
                theirs[name].metadata["help"],
            )
    assert ours["weights"].default is None and theirs["weights"].default == "imagenet"
    config = ModelConfig(variant="small", feature_stride=16, stem="rgb")
    assert config.backbone_config(224) == BackboneConfig(
        "mobilenetv3", "small", weights=None, stem="rgb", feature_stride=16, input_size=224
    )
    with pytest.raises(ValueError, match="feature_stride"):  # BackboneConfig's own check
        ModelConfig(feature_stride=8)


def test_the_cbam_gate_variant_needs_a_cbam_block():
    assert ModelConfig(localization_map="cbam_gate").localization_map == "cbam_gate"
    with pytest.raises(ValueError, match=r"model\.attention=true"):
        ModelConfig(localization_map="cbam_gate", attention=False)
    assert ModelConfig(localization_map="cbam_gate", attention=False, localization_loss="none").attention is False
    with pytest.raises(ValueError, match="localization_map"):
        ModelConfig(localization_map="gate")


def test_demo_with_another_backbone_keeps_its_hyper_parameters():
    c = get_experiment("demo", backbone="convnext")
    demo = get_experiment("demo")
    assert c.model.backbone == "convnext" and c.model.variant is None and c.model.feature_stride is None
    assert c.train == demo.train and c.data == demo.data


def test_dataset_swap_keeps_the_stage_hyper_parameters():
    base = get_experiment("paper", stage="finetune", backbone="convnext")
    c = get_experiment("paper", stage="finetune", backbone="convnext", dataset="fracatlas")
    assert c.train == base.train and c.model == base.model
    assert (c.data.dataset, c.data.builder_config) == ("fracatlas", "default")
    assert dataclasses.replace(c.data, dataset="elbow", builder_config=None) == base.data
    mura = get_experiment("demo", dataset="mura")
    assert (mura.data.builder_config, mura.data.validation_split) == ("grouped_val", "validation")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"preset": "papers"}, "Valid presets: demo, paper"),
        ({"preset": "paper", "stage": "train"}, "Valid stages: pretrain, finetune, ensemble"),
        ({"preset": "demo", "stage": "pretrain"}, "Valid stages: train"),
        ({"preset": "paper", "stage": "pretrain", "backbone": "resnet"}, "Valid backbones: convnext"),
        ({"preset": "paper", "stage": "ensemble", "backbone": "convnext"}, "Valid backbones: fusion"),
        ({"preset": "paper", "dataset": "imagenet"}, "Valid datasets: elbow, fracatlas, mura, synthetic_xray"),
    ],
)
def test_unknown_preset_stage_backbone_dataset_list_valid_ones(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        get_experiment(**kwargs)


# --- registries agree with the TensorFlow side --------------------------------------------------


def test_backbones_match_the_registry():
    from tf_fracture.backbones import available_backbones

    assert backbone_names() == available_backbones()


def test_datasets_match_the_tfds_builders():
    import tf_fracture.datasets as builders

    assert set(DATASETS) == set(builders.BUILDERS)
    for name, spec in DATASETS.items():
        builder_cls = builders.BUILDERS[name]
        assert spec.default_builder_config in [c.name for c in builder_cls.BUILDER_CONFIGS]
        features = builder_cls(config=spec.default_builder_config, data_dir="/nonexistent").info.features
        for feature in (spec.body_part_feature, spec.group_feature, spec.boxes_feature, *spec.metadata_features):
            if feature is not None:
                assert feature in features, f"{name} has no feature {feature!r}"
        if spec.body_part_feature:
            part = features[spec.body_part_feature]
            part = getattr(part, "feature", part)  # FracAtlas' regions: a Sequence of ClassLabel
            assert tuple(part.names) == spec.body_part_names


def test_configs_import_without_tensorflow():
    code = "import sys, tf_fracture.configs as c; c.get_experiment('paper'); assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_field_types_are_all_parseable():
    from tf_fracture.configs.overrides import parse_value

    for section, cls in SECTIONS.items():
        for name, hint in typing.get_type_hints(cls).items():
            value = getattr(cls(), name)
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            assert parse_value(f"{section}.{name}", text, hint) == value
