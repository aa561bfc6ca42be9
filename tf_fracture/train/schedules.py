"""Learning-rate schedules with PyTorch's definitions, as Keras ``LearningRateSchedule`` objects.

Reference:
    Loshchilov, Hutter. "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    PyTorch's ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``, which the method used.
"""

from __future__ import annotations

import math

import keras
from keras import ops

_PACKAGE = "tf_fracture"


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive integer, but got `{name}={value!r}`.")
    return value


def _check_non_negative_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"Expected `{name}` to be a finite number >= 0, but got `{name}={value!r}`.")
    return float(value)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CosineAnnealingWarmRestarts(keras.optimizers.schedules.LearningRateSchedule):
    """PyTorch's ``CosineAnnealingWarmRestarts``, stepped once per epoch (or per batch), for Keras.

    Within a cycle of ``T_i`` epochs the learning rate follows

        lr = eta_min + (initial_learning_rate - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2

    where ``T_cur`` counts the epochs since the last restart. The first cycle lasts ``T_0``
    epochs and each next one ``T_mult`` times longer: with ``T_0=5, T_mult=2`` the cycles are
    5, 10, 20 epochs and the learning rate is back at ``initial_learning_rate`` at epochs 5,
    15 and 35.

    The schedule is called by the optimiser with its iteration count (the number of batches
    applied so far), and turns it into an epoch with ``steps_per_epoch``:

    - ``per_batch=False`` (default): the epoch is ``floor(step / steps_per_epoch)``, so the
      learning rate is constant within an epoch. This is PyTorch's common use, one
      ``scheduler.step()`` after each epoch.
    - ``per_batch=True``: the epoch is fractional, ``step / steps_per_epoch``, the learning
      rate PyTorch computes for ``scheduler.step(epoch + i / iters)``. It equals
      ``keras.optimizers.schedules.CosineDecayRestarts(initial_learning_rate,
      T_0 * steps_per_epoch, t_mul=T_mult, alpha=eta_min / initial_learning_rate)``. Note that
      PyTorch's documented loop calls ``scheduler.step(epoch + i / iters)`` *after* batch ``i``,
      so there each batch uses the value of the batch before it; here batch ``s`` uses the
      value at its own start, ``s / steps_per_epoch``.

    The value is a pure function of the step, so a run resumed from a checkpoint (which
    restores the optimiser's iteration count) continues on the same curve.

    Args:
        initial_learning_rate: the learning rate at the start of every cycle (PyTorch's
            ``base_lr``, the optimiser's ``lr``).
        T_0: the length of the first cycle, in epochs.
        steps_per_epoch: the number of batches (optimiser steps) in an epoch.
        T_mult: the factor by which each cycle is longer than the one before (an integer >= 1,
            as in PyTorch).
        eta_min: the learning rate at the end of each cycle.
        per_batch: step the schedule every batch (fractional epochs) rather than every epoch.
        name: the name of the schedule's ops.

    Example:
        >>> schedule = CosineAnnealingWarmRestarts(1.2e-3, T_0=5, steps_per_epoch=100)
        >>> [round(float(schedule(epoch * 100)), 7) for epoch in (0, 4, 5, 15, 35)]
        [0.0012, 0.0001146, 0.0012, 0.0012, 0.0012]
    """

    def __init__(
        self,
        initial_learning_rate: float,
        T_0: int,
        steps_per_epoch: int,
        T_mult: int = 2,
        eta_min: float = 0.0,
        per_batch: bool = False,
        name: str = "CosineAnnealingWarmRestarts",
    ):
        super().__init__()
        self.initial_learning_rate = _check_non_negative_float("initial_learning_rate", initial_learning_rate)
        self.T_0 = _check_positive_int("T_0", T_0)
        self.steps_per_epoch = _check_positive_int("steps_per_epoch", steps_per_epoch)
        self.T_mult = _check_positive_int("T_mult", T_mult)
        self.eta_min = _check_non_negative_float("eta_min", eta_min)
        if not isinstance(per_batch, bool):
            raise ValueError(f"Expected `per_batch` to be True or False, but got `per_batch={per_batch!r}`.")
        self.per_batch = per_batch
        self.name = name

    def __call__(self, step):
        # float64: the cycle boundaries are exact integers in epochs, and float32 logarithms
        # can put an epoch on the wrong side of a restart.
        with keras.name_scope(self.name):
            epoch = ops.cast(step, "float64") / float(self.steps_per_epoch)
            if not self.per_batch:
                epoch = ops.floor(epoch)
            t_cur, t_i = self._position_in_cycle(epoch)
            cosine = (1.0 + ops.cos(math.pi * t_cur / t_i)) / 2.0
            lr = self.eta_min + (self.initial_learning_rate - self.eta_min) * cosine
            return ops.cast(lr, keras.config.floatx())

    def _position_in_cycle(self, epoch):
        """(T_cur, T_i): epochs since the last restart and the current cycle's length."""
        t_0 = float(self.T_0)
        if self.T_mult == 1:
            cycle = ops.floor(epoch / t_0)
            return epoch - cycle * t_0, ops.convert_to_tensor(t_0, "float64")
        t_mult = float(self.T_mult)

        def cycle_start(n):  # the epoch at which cycle n starts: T_0 * (T_mult^n - 1) / (T_mult - 1)
            return t_0 * (ops.power(t_mult, n) - 1.0) / (t_mult - 1.0)

        # PyTorch's closed form, n = int(log_{T_mult}(epoch / T_0 * (T_mult - 1) + 1)), then moved by
        # one where rounding put the epoch on the wrong side of a boundary.
        n = ops.floor(ops.log(epoch / t_0 * (t_mult - 1.0) + 1.0) / math.log(t_mult))
        n = ops.where(cycle_start(n + 1.0) <= epoch, n + 1.0, n)
        n = ops.where(cycle_start(n) > epoch, n - 1.0, n)
        return epoch - cycle_start(n), t_0 * ops.power(t_mult, n)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "T_0": self.T_0,
            "steps_per_epoch": self.steps_per_epoch,
            "T_mult": self.T_mult,
            "eta_min": self.eta_min,
            "per_batch": self.per_batch,
            "name": self.name,
        }
