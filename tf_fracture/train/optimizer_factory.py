"""The optimiser of an experiment: one optimiser, or one per parameter group (the ensemble), and its schedule."""

from __future__ import annotations

from collections.abc import Mapping

import keras

from tf_fracture.configs.experiment import OPTIMIZERS, SCHEDULES
from tf_fracture.train.model_factory import trains_members
from tf_fracture.train.optimizers import TorchSGD, optimizer_for_groups
from tf_fracture.train.schedules import CosineAnnealingWarmRestarts


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
