"""`tf_fracture.lazy.lazy_exports` and the import-light packages built on it."""

import importlib
import sys
import types

import pytest

from tf_fracture.lazy import lazy_exports


def test_names_resolve_on_first_use_and_unknown_names_raise(monkeypatch):
    package = types.ModuleType("fake_package")
    package.__getattr__, package.__dir__, package.__all__ = lazy_exports(
        "fake_package", {"sqrt": "math", "OrderedDict": "collections"}
    )
    monkeypatch.setitem(sys.modules, "fake_package", package)
    assert package.__all__ == ["OrderedDict", "sqrt"]
    assert package.sqrt(9.0) == 3.0
    assert package.OrderedDict is importlib.import_module("collections").OrderedDict
    assert {"sqrt", "OrderedDict", "__getattr__"} <= set(dir(package))
    with pytest.raises(AttributeError, match="'fake_package' has no attribute 'cosine'"):
        package.cosine  # noqa: B018


@pytest.mark.parametrize("name", ["tf_fracture.train", "tf_fracture.explain"])
def test_every_public_name_of_the_packages_resolves(name):
    package = importlib.import_module(name)
    for export in package.__all__:
        assert getattr(package, export) is not None, export
