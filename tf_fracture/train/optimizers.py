"""Optimisers with PyTorch's semantics, and one optimiser per group of layers, for Keras 3.

The method's SGD is PyTorch's, and Keras' ``SGD`` is a different algorithm:

- PyTorch (``torch.optim.SGD``, dampening 0) keeps a buffer of gradients and scales the whole
  step by the current learning rate; its weight decay is an L2 term added to the gradient,
  inside the momentum::

      g = grad + weight_decay * w
      b = momentum * b + g            (b = g at the first step)
      w = w - lr * b                  (nesterov: w = w - lr * (g + momentum * b))

- Keras folds the learning rate into the velocity (``v = momentum * v - lr * g; w = w + v``)
  and its ``weight_decay`` is decoupled (``w -= lr * weight_decay * w``, outside momentum).

The two agree only at a constant learning rate without weight decay. Under a schedule, Keras'
velocity remembers past steps at the learning rate they were taken with, PyTorch's buffer is
rescaled by the current one: after a warm restart they part (see ``tests/test_optimizers.py``).

Reference:
    PyTorch, ``torch/optim/sgd.py`` (``_single_tensor_sgd``) and the algorithm in the
    ``torch.optim.SGD`` documentation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
from keras import ops

_PACKAGE = "tf_fracture"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TorchSGD(keras.optimizers.Optimizer):
    """Stochastic gradient descent with PyTorch's momentum buffer and L2 weight decay.

    The update of ``torch.optim.SGD(params, lr, momentum, dampening=0, weight_decay, nesterov)``,
    one step per batch, for any Keras model:

        g = grad + weight_decay * w
        b = momentum * b + g          (the buffer starts at zero, so b = g at the first step,
                                       exactly as PyTorch's ``b = clone(g)``)
        w = w - lr * (g + momentum * b  if nesterov else  b)

    ``weight_decay`` is PyTorch's coupled L2 term. Keras' own decoupled weight decay (the base
    class's ``weight_decay`` path) is switched off, so the decay is never applied twice.
    ``exclude_from_weight_decay()`` works as in Keras (PyTorch users do the same with a
    parameter group without decay).

    Args:
        learning_rate: a float, or a ``keras.optimizers.schedules.LearningRateSchedule`` (called
            with the iteration count), e.g.
            ``tf_fracture.train.schedules.CosineAnnealingWarmRestarts``.
        momentum: the momentum factor, in [0, 1). 0 is plain SGD and keeps no buffer.
        weight_decay: the L2 penalty added to the gradient (PyTorch's ``weight_decay``), >= 0.
        nesterov: use Nesterov momentum (PyTorch's variant); needs ``momentum > 0``.
        name: the optimiser's name.
        **kwargs: the other arguments of ``keras.optimizers.Optimizer`` (``clipnorm``,
            ``global_clipnorm``, ``use_ema``, ``loss_scale_factor``,
            ``gradient_accumulation_steps``, ...).

    Example:
        >>> from tf_fracture.train.schedules import CosineAnnealingWarmRestarts
        >>> schedule = CosineAnnealingWarmRestarts(1.2e-3, T_0=5, steps_per_epoch=100)
        >>> optimizer = TorchSGD(schedule, momentum=0.6, weight_decay=1e-3)
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        name: str | None = None,
        **kwargs,
    ):
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"Expected `momentum` to be a float in [0, 1), but got `momentum={momentum!r}`.")
        if weight_decay is None:  # Keras' default spelling of "no weight decay"
            weight_decay = 0.0
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not weight_decay >= 0.0:
            raise ValueError(f"Expected `weight_decay` to be a float >= 0, but got `weight_decay={weight_decay!r}`.")
        if not isinstance(nesterov, bool):
            raise ValueError(f"Expected `nesterov` to be True or False, but got `nesterov={nesterov!r}`.")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs `momentum > 0` (as in PyTorch); got `momentum=0`.")
        if isinstance(learning_rate, int) and not isinstance(learning_rate, bool):
            learning_rate = float(learning_rate)
        # weight_decay=None for the base class: its decay is Keras' decoupled one.
        super().__init__(learning_rate=learning_rate, weight_decay=None, name=name, **kwargs)
        self.momentum = float(momentum)
        self.nesterov = nesterov
        self.weight_decay = float(weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentum_buffers = []
        if self.momentum != 0:
            self.momentum_buffers = self.add_optimizer_variables(variables, "momentum_buffer")

    def _apply_weight_decay(self, variables):
        # The base class would apply `self.weight_decay` a second time, decoupled (w -= lr * wd * w)
        # before update_step. PyTorch's decay is the L2 term inside update_step, and only there.
        return

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.weight_decay != 0 and self._use_weight_decay(variable):
            weight_decay = ops.convert_to_tensor(self.weight_decay, dtype=variable.dtype)
            gradient = ops.add(gradient, ops.multiply(weight_decay, variable))
        step = gradient
        if self.momentum != 0:
            # Not ops.cast: that would round a Python float through float32 first.
            momentum = ops.convert_to_tensor(self.momentum, dtype=variable.dtype)
            buffer = self.momentum_buffers[self._get_variable_index(variable)]
            # With dampening 0, m * 0 + g = g: a zero-initialised buffer gives PyTorch's b = clone(g).
            new_buffer = ops.add(ops.multiply(buffer, momentum), gradient)
            self.assign(buffer, new_buffer)
            step = ops.add(gradient, ops.multiply(new_buffer, momentum)) if self.nesterov else new_buffer
        self.assign_sub(variable, ops.multiply(step, learning_rate))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov, "weight_decay": self.weight_decay})
        return config


def _unrouted(variable):
    raise ValueError(f"GroupedOptimizer has not been built yet, so it cannot route variable {variable.path!r}.")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GroupedOptimizer(keras.optimizers.MultiOptimizer):
    """One optimiser per named group of variables: PyTorch's parameter groups, for Keras.

    Each group keeps its own optimiser, so its own learning rate (or schedule), momentum buffer,
    weight decay and iteration count. Build it with :func:`optimizer_for_groups`, which assigns
    variables to groups by the layer objects they belong to.

    Why not ``keras.optimizers.OptimizerMap`` with regexes on variable paths: a variable's path
    is the name scope it was created in, and the layers of a nested model (a backbone inside
    a classifier or a fusion model) are created before the outer model exists, so their paths
    carry no prefix of the nested model's name: a regex such as ``"backbone/.*"`` silently
    sends every variable to the default optimiser. Paths may also repeat across nested models
    (two backbones each with a ``top_cbam`` layer).

    Routing: in the process where :func:`optimizer_for_groups` made it, by variable identity.
    Its config records each variable's ``(path, group)`` in the order the optimiser was built
    with; a reloaded optimiser (``keras.saving.load_model`` with ``compile=True``) routes by
    that order when the model's trainable variables have the same paths in the same order,
    else by path when each path belongs to one group, and otherwise raises.

    A trainable variable in no group fails the build with an error that names it.

    Args:
        optimizers: group name -> optimiser. Each optimiser serves one group only; none may be
            a ``LossScaleOptimizer`` (wrap the ``GroupedOptimizer`` instead) or a
            ``MultiOptimizer``.
        routing: ``[(variable_path, group_name), ...]`` as :meth:`get_config` records it. Leave
            it to :func:`optimizer_for_groups` and to deserialisation.
        loss_scale_factor: passed to every group's optimiser, as ``MultiOptimizer`` does.
        name: the optimiser's name.
    """

    def __init__(
        self,
        optimizers: Mapping[str, keras.optimizers.Optimizer],
        routing: Sequence[Sequence[str]] | None = None,
        loss_scale_factor=None,
        name: str | None = None,
    ):
        _check_group_optimizers(optimizers)
        super().__init__(_unrouted, loss_scale_factor=loss_scale_factor, name=name)
        self._group_names = list(optimizers)
        # A fixed order (the groups'), so that the optimiser's variables are saved and restored
        # in the same order whatever the order of the model's variables.
        self._inner_optimizers = list(optimizers.values())
        for optimizer in self._inner_optimizers:
            optimizer.loss_scale_factor = loss_scale_factor
        self._routing = [(str(path), str(group)) for path, group in (routing or [])]
        unknown = sorted({group for _, group in self._routing} - set(self._group_names))
        if unknown:
            raise ValueError(f"`routing` names groups {unknown} that are not in `optimizers` ({self._group_names}).")
        self._group_by_key = {}

    @property
    def groups(self) -> dict[str, keras.optimizers.Optimizer]:
        """Group name -> the group's optimiser (e.g. to read each group's learning rate)."""
        return dict(zip(self._group_names, self._inner_optimizers, strict=True))

    def group_of(self, variable) -> str:
        """The name of the group that trains ``variable`` (after the optimiser is built)."""
        if not self.built:
            raise ValueError("GroupedOptimizer has not been built yet; call `build(model.trainable_variables)`.")
        return self._group_names[self._var_to_optimizer_idx[self._var_key(variable)]]

    def _route_by_identity(self, group_by_key: dict) -> None:
        self._group_by_key = dict(group_by_key)

    def build(self, var_list):
        if self.built:
            return
        var_list = list(var_list)
        groups = self._assign_groups(var_list)
        optimizer_of = {
            self._var_key(v): self._inner_optimizers[self._group_names.index(g)]
            for v, g in zip(var_list, groups, strict=True)
        }
        self._optimizer_map = lambda variable: optimizer_of[self._var_key(variable)]
        self._routing = [(v.path, g) for v, g in zip(var_list, groups, strict=True)]
        super().build(var_list)

    def _assign_groups(self, var_list) -> list[str]:
        if self._group_by_key:
            groups = [self._group_by_key.get(self._var_key(v)) for v in var_list]
        elif [path for path, _ in self._routing] == [v.path for v in var_list]:
            groups = [group for _, group in self._routing]
        else:
            groups_of_path = {}
            for path, group in self._routing:
                groups_of_path.setdefault(path, set()).add(group)
            ambiguous = sorted({v.path for v in var_list if len(groups_of_path.get(v.path, ())) > 1})
            if ambiguous:
                raise ValueError(
                    f"GroupedOptimizer cannot tell which group trains the variables at paths {ambiguous[:10]}: "
                    "these paths belong to several groups, and the model's variables are not the ones it was "
                    "built with. Load the model with `compile=False` and compile it with a new "
                    "`optimizer_for_groups(...)`."
                )
            groups = [next(iter(groups_of_path[v.path])) if v.path in groups_of_path else None for v in var_list]
        missing = [v.path for v, g in zip(var_list, groups, strict=True) if g is None]
        if missing:
            raise ValueError(
                f"{len(missing)} trainable variable(s) belong to no optimiser group, e.g. {missing[:10]}. "
                f"Add the layers that own them to one of the groups {self._group_names}, or freeze them "
                "(`layer.trainable = False`) before compiling."
            )
        return groups

    def get_config(self):
        return {
            "optimizers": {
                group: keras.saving.serialize_keras_object(optimizer)
                for group, optimizer in zip(self._group_names, self._inner_optimizers, strict=True)
            },
            "routing": [[path, group] for path, group in self._routing],
            "loss_scale_factor": self.loss_scale_factor,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizers"] = {
            group: keras.saving.deserialize_keras_object(optimizer, custom_objects=custom_objects)
            for group, optimizer in config["optimizers"].items()
        }
        return cls(**config)


def _check_group_optimizers(optimizers) -> None:
    if not isinstance(optimizers, Mapping) or not optimizers:
        raise ValueError(
            f"Expected `optimizers` to be a non-empty dict of group name -> optimiser, got {optimizers!r}."
        )
    seen = {}
    for group, optimizer in optimizers.items():
        if not isinstance(group, str) or not group:
            raise ValueError(f"Group names must be non-empty strings, but got {group!r}.")
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(f"Group {group!r} needs a keras.optimizers.Optimizer, but got {optimizer!r}.")
        if isinstance(optimizer, (keras.optimizers.LossScaleOptimizer, keras.optimizers.MultiOptimizer)):
            raise ValueError(
                f"Group {group!r} has a {type(optimizer).__name__}: give each group a plain optimiser and wrap "
                "the whole GroupedOptimizer in a LossScaleOptimizer if you need loss scaling."
            )
        if id(optimizer) in seen:
            raise ValueError(
                f"Groups {seen[id(optimizer)]!r} and {group!r} share one optimiser instance, which would merge "
                "them: give each group its own optimiser."
            )
        seen[id(optimizer)] = group


def optimizer_for_groups(
    groups: Mapping[str, tuple[keras.optimizers.Optimizer, keras.layers.Layer | Sequence[keras.layers.Layer]]],
    name: str | None = None,
) -> GroupedOptimizer:
    """A :class:`GroupedOptimizer` whose groups are given by the layers (or models) they train.

    Every trainable variable of a group's layers, nested layers and models included, is trained
    by that group's optimiser. A variable in two groups (the same layer listed twice, or a model
    in one group and one of its layers in another) raises here; a trainable variable of the
    compiled model in no group raises when the optimiser is built (at the first step).

    Args:
        groups: group name -> ``(optimizer, layers)``, where ``layers`` is a layer or model or a
            list of them.
        name: the optimiser's name.

    Returns:
        A ``GroupedOptimizer`` to pass to ``model.compile`` (or to wrap in a
        ``LossScaleOptimizer``).

    Example (the method's ensemble: 5e-5 for the backbones, 2e-4 for the fusion layers):
        >>> backbones = [layer for layer in fusion.layers if isinstance(layer, keras.Model)]
        >>> head = [layer for layer in fusion.layers if not isinstance(layer, keras.Model)]
        >>> optimizer = optimizer_for_groups({
        ...     "backbones": (TorchSGD(5e-5, momentum=0.8, weight_decay=1e-3), backbones),
        ...     "head": (TorchSGD(2e-4, momentum=0.8, weight_decay=1e-3), head),
        ... })
        >>> fusion.compile(optimizer=optimizer, loss=keras.losses.BinaryCrossentropy(from_logits=True))
    """
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError(f"Expected `groups` to be a non-empty dict of name -> (optimizer, layers), got {groups!r}.")
    optimizers, layers_of = {}, {}
    for group, spec in groups.items():
        if not isinstance(spec, (tuple, list)) or len(spec) != 2:
            raise ValueError(f"Group {group!r} must be an (optimizer, layers) pair, but got {spec!r}.")
        optimizer, layers = spec
        optimizers[group] = optimizer
        layers = [layers] if isinstance(layers, keras.layers.Layer) else list(layers)
        for layer in layers:
            if not isinstance(layer, keras.layers.Layer):
                raise ValueError(f"Group {group!r} lists {layer!r}, which is not a Keras layer or model.")
        layers_of[group] = layers
    grouped = GroupedOptimizer(optimizers, name=name)

    group_by_key, routing = {}, []
    for group, layers in layers_of.items():
        variables = [v for layer in layers for v in layer.trainable_variables]
        if not variables:
            raise ValueError(
                f"Group {group!r} has no trainable variables (its layers are frozen or not built): "
                "build the model first, and drop the group or unfreeze its layers."
            )
        for variable in variables:
            key = grouped._var_key(variable)
            other = group_by_key.get(key)
            if other is None:
                group_by_key[key] = group
                routing.append((variable.path, group))
            elif other != group:
                raise ValueError(
                    f"Variable {variable.path!r} is in two groups, {other!r} and {group!r}: each variable must "
                    "be trained by one optimiser. List each layer in one group only (a nested model's layers "
                    "are part of the model)."
                )
    grouped._route_by_identity(group_by_key)
    grouped._routing = routing
    return grouped
