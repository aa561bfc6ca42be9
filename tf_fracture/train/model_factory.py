"""The model of an experiment, from its configuration alone (the optimiser: `optimizer_factory`; the
losses and metrics: `objectives`; class weights: `class_weights`).

One factory for every backbone and stage: ``model.backbone`` names a family of
`tf_fracture.backbones.available_backbones()` for a single classifier, or ``"fusion"`` for the
ensemble of the fine-tuned members (``model.members``: their run folders).
"""

from __future__ import annotations

import os

import keras

from tf_fracture.configs.datasets import get_dataset_spec
from tf_fracture.configs.experiment import FUSION
from tf_fracture.models import FusionConfig, build_classifier, build_fusion, load_model
from tf_fracture.models.multitask import (
    MultiTaskClassifier,
)
from tf_fracture.run_folder import model_file

# BatchNorm's moving-average momentum while training: PyTorch's default (``momentum=0.1`` in its
# convention), as in the method, which trained in PyTorch. Keras' published MobileNetV3 and
# EfficientNetV2 graphs carry 0.999: their moving statistics keep 0.999**n of their initial values
# (variance 1) after n steps, while the true variances of a network trained from scratch are ~0.01,
# so for the first thousands of steps every layer shrinks its input in inference mode and the model
# predicts one constant (validation AUROC 0.5 whatever it learnt; measured: still constant after 380
# steps at 0.99). At 0.9 the initial values are gone after ~60 steps.
TRAINING_BATCHNORM_MOMENTUM = 0.9


def build_model(experiment) -> keras.Model:
    """The experiment's model: a `FractureClassifier`, or a `FusionModel` when ``backbone="fusion"``.

    The image size and preprocessing come from ``experiment.data`` (``image_size``,
    ``preprocess_config()``), so the model records how its inputs were made. ``model.init_from``
    (a run folder or ``.keras`` file) then copies that model's weights in, layer by layer.

    With ``model.aux_body_part`` the classifier gets the auxiliary body-part head
    (`tf_fracture.models.with_body_part_head`, one class per ``DatasetSpec.body_part_names``): a
    `MultiTaskClassifier` whose ``.classifier`` (sharing its layers) is what the run folder saves.
    """
    check_model_config(experiment)
    data, config = experiment.data, experiment.model
    preprocessing = data.preprocess_config()
    if config.backbone == FUSION:
        if len(config.members) < 2:
            raise ValueError(
                "The fusion model needs the run folders of at least two fine-tuned members: set "
                f"`model.members` (e.g. --set model.members=runs/convnext,runs/mobilenetv3), got {config.members!r}."
            )
        fusion = FusionConfig(
            hidden_units=tuple(config.fusion_hidden_units),
            dropout=config.fusion_dropout,
            train_backbones=trains_members(experiment.train),
        )
        members = [os.fspath(model_file(member)) for member in config.members]
        model = build_fusion(members, fusion, input_size=data.image_size, preprocessing=preprocessing)
    else:
        backbone = config.backbone_config(data.image_size)
        model = build_classifier(backbone, dropout=config.dropout, preprocessing=preprocessing)
    if config.init_from:
        copy_weights(load_model(model_file(config.init_from), compile=False), model)
    set_batchnorm_momentum(model, TRAINING_BATCHNORM_MOMENTUM)
    if config.aux_body_part or experiment.guided:
        parts = get_dataset_spec(data.dataset).body_part_names if config.aux_body_part else ()
        model = MultiTaskClassifier(
            model, len(parts), part_names=parts, cam=experiment.guided, localization_map=config.localization_map
        )
    return model


def check_model_config(experiment) -> None:
    """Refuses model settings that `build_model` cannot honour, before any data is prepared."""
    if experiment.model.stem != "grey":
        # Every dataset here is greyscale, and the pipeline gives (S, S, 1) images. The grey stem is
        # the RGB network's first conv with its kernels summed: on a grey image replicated to three
        # channels it is the same function, ImageNet weights included, at a third of the cost.
        raise ValueError(
            f"`model.stem={experiment.model.stem}` takes 3-channel images, but the training data are greyscale "
            "radiographs (1 channel): train with `--set model.stem=grey` (the RGB kernels summed: the same "
            "network and ImageNet weights on grey images)."
        )
    if experiment.model.aux_body_part and experiment.model.backbone == FUSION:
        # The fusion model concatenates its members' feature maps: it has no single pooled "features"
        # layer for the head, and its members were fine-tuned without one.
        raise ValueError(
            "`model.aux_body_part=true` needs a single backbone, but `model.backbone` is 'fusion': train the "
            "members with the body-part head instead (their run folders hold the plain classifier), and the "
            "ensemble with `--set model.aux_body_part=false`."
        )


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Sets the moving-average momentum of every BatchNormalization layer in ``model`` (nested ones too).

    Only training reads it (inference uses the moving statistics as they are). Returns how many layers.
    """
    layers = model._flatten_layers(include_self=False)
    layers = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def trains_members(train) -> bool:
    """Whether a fusion stage trains its members too (it does when they have a learning rate of their own)."""
    return bool(train.backbone_learning_rate)


def copy_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """Copies every weight of ``target`` from ``source``'s layer at the same place by name.

    Layers are matched by their path of names (``"top_cbam/channel_gate"``, a fusion member's name
    first), never by position, so a classifier pretrained on MURA starts the elbow stage at any
    input size. Raises a ``ValueError`` naming the layers when a layer of ``target`` with weights
    has no namesake in ``source`` or their shapes differ: a silent partial copy would train from
    random weights. Layers of ``source`` that ``target`` lacks (another head) are ignored.

    Returns:
        The paths of the layers copied.
    """
    sources = _weighted_layers(source)
    targets = _weighted_layers(target)
    missing = sorted(set(targets) - set(sources))
    if missing:
        raise ValueError(
            f"Cannot start {target.name!r} from {source.name!r}: {len(missing)} of its layers with weights have "
            f"no layer of the same name there, e.g. {missing[:8]}. `init_from` needs a run of the same backbone "
            "(family, variant, attention, stem, feature_dim)."
        )
    mismatched = []
    for path, variables in targets.items():
        shapes = [tuple(v.shape) for v in variables]
        other = [tuple(v.shape) for v in sources[path]]
        if shapes != other:
            mismatched.append(f"{path}: {other} -> {shapes}")
    if mismatched:
        raise ValueError(
            f"Cannot start {target.name!r} from {source.name!r}: the weights of {len(mismatched)} layers differ in "
            f"shape, e.g. {mismatched[:4]}."
        )
    for path, variables in targets.items():
        for variable, value in zip(variables, sources[path], strict=True):
            variable.assign(value)
    return sorted(targets)


def _weighted_layers(model: keras.Model, prefix: str = "") -> dict[str, list]:
    """Path of layer names -> the layer's own variables, for every layer (at any depth) that has some."""
    layers = {}
    # A model's own layers (a functional model's graph), not every layer it tracks: a classifier also
    # tracks its `backbone` attribute, whose name (and so path) differs between architectures.
    children = (
        model.layers if isinstance(model, keras.Model) else model._flatten_layers(include_self=False, recursive=False)
    )
    for layer in children:
        path = prefix + layer.name
        own = list(layer._trainable_variables) + list(layer._non_trainable_variables)
        if own:
            layers[path] = own
        layers.update(_weighted_layers(layer, path + "/"))
    return layers
