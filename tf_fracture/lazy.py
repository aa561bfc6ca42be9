"""Lazy public names for import-light packages (PEP 562): a name's module is imported on first use.

    from tf_fracture.lazy import lazy_exports

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"train": "tf_fracture.train.loop"})

``import tf_fracture.train`` then loads neither TensorFlow nor Keras; ``tf_fracture.train.train``
imports ``tf_fracture.train.loop`` and returns its ``train``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable, Callable, list[str]]:
    """Module-level ``__getattr__``, ``__dir__`` and ``__all__`` for ``package`` from ``{name: module}``."""
    exports = dict(exports)

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *exports})

    return __getattr__, __dir__, sorted(exports)
