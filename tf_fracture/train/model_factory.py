"""The model, optimiser and class weights of an experiment, from its configuration alone.

One factory for every backbone and stage: ``model.backbone`` names a family of
`tf_fracture.backbones.available_backbones()` for a single classifier, or ``"fusion"`` for the
ensemble of the fine-tuned members (``model.members``: their run folders).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np

from tf_fracture.configs.datasets import get_dataset_spec
from tf_fracture.models import FusionConfig, build_classifier, build_fusion, load_model
from tf_fracture.models.multitask import (
    BODY_PART,
    CAM,
    FRACTURE,
    IGNORED_PART,
    MultiTaskClassifier,
    multitask_loss,
)
from tf_fracture.run_folder import model_file
from tf_fracture.train.losses import LocalizationLoss
from tf_fracture.train.optimizers import TorchSGD, optimizer_for_groups
from tf_fracture.train.schedules import CosineAnnealingWarmRestarts

FUSION = "fusion"
OPTIMIZERS = ("torch_sgd", "sgd", "adamw")
SCHEDULES = ("cosine_restarts", "constant")
CLASS_WEIGHTS = ("none", "balanced")
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
        model = build_classifier(
            config.backbone,
            config.variant,
            dropout=config.dropout,
            preprocessing=preprocessing,
            weights=config.weights,
            attention=config.attention,
            stem=config.stem,
            feature_dim=config.feature_dim,
            feature_stride=config.feature_stride,
            input_size=data.image_size,
        )
    if config.init_from:
        copy_weights(load_model(model_file(config.init_from), compile=False), model)
    set_batchnorm_momentum(model, TRAINING_BATCHNORM_MOMENTUM)
    if config.aux_body_part or experiment.guided:
        parts = get_dataset_spec(data.dataset).body_part_names if config.aux_body_part else ()
        model = MultiTaskClassifier(model, len(parts), part_names=parts, cam=experiment.guided)
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


def compile_arguments(model: keras.Model, aux_loss_weight: float, model_config=None) -> dict:
    """``loss`` (+ ``loss_weights``) and ``metrics`` for ``compile``: the loss is always on logits.

    A single-logit model: binary cross-entropy and the training AUROC (``"auroc"``). A
    `MultiTaskClassifier`: `multitask_loss` (fracture + ``aux_loss_weight`` x body part), the AUROC
    on the fracture logit (Keras logs it as ``"fracture_auroc"``) and the body-part accuracy over
    images with a known part (``"body_part_accuracy"``). With a ``"cam"`` output (guided training),
    ``model_config.localization_weight`` x `LocalizationLoss` of ``model_config.localization_loss``.
    """
    auroc = keras.metrics.AUC(from_logits=True, name="auroc")
    if not is_multitask(model):
        return {"loss": keras.losses.BinaryCrossentropy(from_logits=True), "metrics": [auroc]}
    losses = multitask_loss(aux_loss_weight)
    loss = {FRACTURE: losses["loss"][FRACTURE]}
    weights = {FRACTURE: 1.0}
    metrics = {FRACTURE: [auroc]}
    if model.num_parts:
        loss[BODY_PART], weights[BODY_PART] = losses["loss"][BODY_PART], losses["loss_weights"][BODY_PART]
        metrics[BODY_PART] = [KnownPartAccuracy(name="accuracy")]
    if model.cam:
        if model_config is None:
            raise ValueError("A model with a 'cam' output needs `model_config` (its localisation loss and weight).")
        loss[CAM] = LocalizationLoss(model_config.localization_loss, name="localization_loss")
        weights[CAM] = float(model_config.localization_weight)
    return {"loss": loss, "loss_weights": weights, "metrics": metrics}


def is_multitask(model: keras.Model) -> bool:
    """Whether ``model`` has the auxiliary body-part head (its outputs are a dict)."""
    return isinstance(model, MultiTaskClassifier)


@keras.saving.register_keras_serializable(package="tf_fracture")
class KnownPartAccuracy(keras.metrics.Metric):
    """Accuracy of body-part logits over the images whose part is known (target ``-1`` is left out).

    Keras' ``SparseCategoricalAccuracy`` counts ``-1`` targets as errors (FracAtlas images without a
    region), which would cap the accuracy below 1 for a perfect head.
    """

    def __init__(self, name="known_part_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.correct = self.add_variable((), initializer="zeros", name="correct")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        known = keras.ops.cast(keras.ops.not_equal(y_true, IGNORED_PART), self.dtype)
        predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "int32")
        hits = keras.ops.cast(keras.ops.equal(predicted, y_true), self.dtype) * known
        self.correct.assign_add(keras.ops.sum(hits))
        self.count.assign_add(keras.ops.sum(known))

    def result(self):
        return keras.ops.divide_no_nan(self.correct, self.count)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)


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


def build_optimizer(train, model: keras.Model, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimiser of ``train`` (a `TrainConfig`); a fusion that trains its members gets two groups.

    ``"torch_sgd"`` is PyTorch's SGD (the method's; see `TorchSGD`), ``"sgd"`` Keras' ``SGD``
    (momentum folded into the velocity, decoupled weight decay), ``"adamw"`` Keras' ``AdamW``.
    ``"cosine_restarts"`` is PyTorch's ``CosineAnnealingWarmRestarts(T_0=t_0, T_mult=t_mult,
    eta_min)`` stepped per epoch (or per batch), ``"constant"`` a fixed rate.

    The ensemble (a `FusionModel` whose members train): the fusion layers at ``learning_rate``
    and the members at ``backbone_learning_rate``, each group with its own momentum buffer,
    weight decay and schedule (`optimizer_for_groups`).
    """
    members = list(getattr(model, "members", []))
    if members and trains_members(train):
        member_ids = {id(member) for member in members}
        head = [layer for layer in model.layers if id(layer) not in member_ids and layer.trainable_weights]
        return optimizer_for_groups(
            {
                "fusion": (single_optimizer(train, train.learning_rate, steps_per_epoch), head),
                "backbones": (single_optimizer(train, train.backbone_learning_rate, steps_per_epoch), members),
            },
            name="fusion_and_backbones",
        )
    return single_optimizer(train, train.learning_rate, steps_per_epoch)


def single_optimizer(train, learning_rate: float, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """One optimiser of ``train``'s kind at ``learning_rate`` (with ``train``'s schedule)."""
    rate = learning_rate_schedule(train, learning_rate, steps_per_epoch)
    if train.optimizer == "torch_sgd":
        return TorchSGD(rate, momentum=train.momentum, weight_decay=train.weight_decay)
    if train.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=train.momentum, weight_decay=train.weight_decay or None)
    if train.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=train.weight_decay)
    raise ValueError(f"Expected `train.optimizer` to be one of {OPTIMIZERS}, but got {train.optimizer!r}.")


def learning_rate_schedule(train, learning_rate: float, steps_per_epoch: int):
    if train.schedule == "constant":
        return float(learning_rate)
    if train.schedule == "cosine_restarts":
        return CosineAnnealingWarmRestarts(
            learning_rate,
            T_0=train.t_0,
            steps_per_epoch=steps_per_epoch,
            T_mult=train.t_mult,
            eta_min=train.eta_min,
            per_batch=train.per_batch_schedule,
        )
    raise ValueError(f"Expected `train.schedule` to be one of {SCHEDULES}, but got {train.schedule!r}.")


def current_learning_rates(optimizer: keras.optimizers.Optimizer) -> dict[str, float]:
    """``{"learning_rate": ...}`` at the optimiser's current step; a grouped optimiser adds each group's."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    groups = getattr(optimizer, "groups", None)
    if isinstance(groups, Mapping):
        rates = {f"learning_rate_{name}": _rate(group) for name, group in groups.items()}
        return {"learning_rate": next(iter(rates.values())), **rates}
    return {"learning_rate": _rate(optimizer)}


def _rate(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def with_fracture_class_weights(dataset, weights: Mapping[int, float]):
    """Multi-task batches ``(images, targets)`` -> ``(images, targets, sample_weights)``: the class weights
    on the fracture loss alone (the body-part loss unweighted).

    Keras' ``class_weight`` refuses models with more than one output; per-output sample weights
    give the fracture loss exactly what ``class_weight`` gives a single-logit model
    (``weights[label]`` per image, same reduction).
    """
    import tensorflow as tf

    table = tf.constant([float(weights[0]), float(weights[1])], tf.float32)

    def weigh(images, targets):
        labels = tf.cast(targets[FRACTURE], tf.int32)
        per_image = tf.gather(table, labels)
        others = {name: tf.ones_like(per_image) for name in targets if name != FRACTURE}
        return images, targets, {FRACTURE: per_image, **others}

    return dataset.map(weigh, num_parallel_calls=tf.data.AUTOTUNE)


def class_weights(labels, mode: str) -> dict[int, float] | None:
    """Keras ``class_weight`` for ``mode``: None for ``"none"``; ``"balanced"`` is ``n / (2 n_c)``.

    ``"balanced"`` is scikit-learn's ``compute_class_weight("balanced")``: each class weighs as much
    in the loss as the other, whatever their counts.
    """
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"Expected `train.class_weights` to be one of {CLASS_WEIGHTS}, but got {mode!r}.")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    counts = np.bincount(labels, minlength=2)
    if labels.size == 0 or np.any(counts[:2] == 0) or counts.size > 2:
        raise ValueError(
            "Balanced class weights need 0/1 labels with both classes, but the training labels count "
            f"{counts.tolist()} per class."
        )
    return {c: float(labels.size / (2.0 * counts[c])) for c in (0, 1)}
