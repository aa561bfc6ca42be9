"""Training: `train` (one compile and fit for every model and stage), the run folder, optimisers and schedules.

``tf-fracture train`` is the command line (see ``__main__``).

Import-light: ``import tf_fracture.train`` loads neither TensorFlow nor Keras; the public names
are loaded from their modules on first use.
"""

from tf_fracture.lazy import lazy_exports

_EXPORTS = {
    "BestModel": "tf_fracture.train.callbacks",
    "ConfigMismatchError": "tf_fracture.train.loop",
    "CosineAnnealingWarmRestarts": "tf_fracture.train.schedules",
    "HistoryCSV": "tf_fracture.train.callbacks",
    "ResumableBackup": "tf_fracture.train.callbacks",
    "ValidationAUROC": "tf_fracture.train.callbacks",
    "build_model": "tf_fracture.train.model_factory",
    "build_optimizer": "tf_fracture.train.optimizer_factory",
    "class_weights": "tf_fracture.train.class_weights",
    "copy_weights": "tf_fracture.train.model_factory",
    "train": "tf_fracture.train.loop",
    "GroupedOptimizer": "tf_fracture.train.optimizers",
    "TorchSGD": "tf_fracture.train.optimizers",
    "optimizer_for_groups": "tf_fracture.train.optimizers",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
