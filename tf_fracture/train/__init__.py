"""Training: optimisers and schedules with PyTorch's semantics (the CLI comes with issue 7).

Import-light: ``import tf_fracture.train`` loads neither TensorFlow nor Keras; the public names
are loaded from their modules on first use.
"""

import importlib

_EXPORTS = {
    "CosineAnnealingWarmRestarts": "tf_fracture.train.schedules",
    "GroupedOptimizer": "tf_fracture.train.optimizers",
    "TorchSGD": "tf_fracture.train.optimizers",
    "optimizer_for_groups": "tf_fracture.train.optimizers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
