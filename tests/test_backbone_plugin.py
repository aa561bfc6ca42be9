"""A new backbone is one registered module: a toy family, registered at run time, trains through the CLI.

The family's card (variants, learning rate, test variant) is all the configuration, the presets and
the tests need; its `BackboneFamily` is all the model code needs. Nothing else is edited.
"""

import keras
import pytest

from tf_fracture.backbones import FEATURE_MAP, FEATURES
from tf_fracture.backbones.registry import BackboneFamily, register_backbone, unregister_backbone
from tf_fracture.configs import BackboneCard, backbone_card, backbone_names, get_experiment
from tf_fracture.layers import CBAM
from tf_fracture.models import load_model
from tf_fracture.run_folder import RunFolder
from tf_fracture.train.__main__ import main

TOY = BackboneCard("toy", ("one", "two"), "two", "one", learning_rate=3e-3, finetune_momentum=0.5)


def _build_graph(config, variant):
    width = {"one": 8, "two": 16}[variant]
    inputs = keras.Input((config.input_size, config.input_size, config.channels), name="image")
    x = keras.layers.Rescaling(1 / 255, name="toy_rescale")(inputs)
    for i, stride in enumerate((4, 8)):  # an overall stride of 32, like the real families
        x = keras.layers.Conv2D(width, 3, strides=stride, padding="same", activation="relu", name=f"toy_conv{i}")(x)
    if config.attention:
        x = CBAM(config.cbam_reduction, config.cbam_kernel_size, name="top_cbam")(x)
    x = keras.layers.Identity(name=FEATURE_MAP)(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return inputs, keras.layers.Identity(name=FEATURES)(x)


def _no_weights(*_):
    raise ValueError("the toy family has no published weights")


@pytest.fixture
def toy():
    family = register_backbone(
        BackboneFamily(
            card=TOY,
            build_graph=_build_graph,
            keras_application=_no_weights,
            transfer=_no_weights,
            native_width={"one": 8, "two": 16},
            summary="a two-conv toy family, for tests",
        )
    )
    yield family
    unregister_backbone("toy")


def test_a_registered_family_is_known_to_configs_and_presets(toy):
    assert "toy" in backbone_names() and backbone_card("toy") == TOY
    paper = get_experiment("paper", stage="finetune", backbone="toy")
    assert (paper.train.learning_rate, paper.train.momentum) == (3e-3, 0.5)  # from its card
    assert get_experiment("demo", backbone="toy").model.backbone == "toy"
    with pytest.raises(ValueError, match="`variant`"):
        get_experiment("demo", backbone="toy").override(["model.variant=three"])


def test_a_registered_family_trains_through_the_cli(toy, data_dir, tmp_path):
    run_dir = tmp_path / "toy"
    sets = [
        f"data.data_dir={data_dir}",
        "data.builder_config=tiny",
        "data.image_size=32",
        "data.batch_size=8",
        "model.variant=one",
        "train.epochs=1",
    ]
    argv = ["--backbone", "toy", "--run-dir", str(run_dir), "--no-evaluate"]
    assert main([*argv, *[arg for value in sets for arg in ("--set", value)]]) == 0
    run = RunFolder(run_dir)
    assert run.is_complete()
    model = load_model(run.model, compile=False)  # safe mode: the family rebuilds it from the registry
    assert model.backbone.family == "toy" and model.get_layer("toy_conv1").filters == 8


def test_a_family_unknown_to_the_registry_is_refused_by_name():
    with pytest.raises(ValueError, match=r"Unknown backbone 'toy'.*mobilenetv3"):
        backbone_card("toy")
    with pytest.raises(ValueError, match="toy"):
        get_experiment("demo", backbone="toy")


def test_a_card_must_agree_with_its_family():
    wrong = BackboneCard("toy", ("one",), "one", "one", 1e-3, 0.5)
    with pytest.raises(ValueError, match="native_width"):
        register_backbone(
            BackboneFamily(
                card=wrong,
                build_graph=_build_graph,
                keras_application=_no_weights,
                transfer=_no_weights,
                native_width={"one": 8, "two": 16},
                summary="",
            )
        )
    assert "toy" not in backbone_names()  # nothing half-registered
