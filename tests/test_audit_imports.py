"""One import direction: the library never imports the dataset registry; builders' audit imports stay light."""

import ast
import os
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tf_fracture")
REGISTRY = ("tf_fracture_datasets", "tf_fracture.datasets")


def entry_points():
    """Modules allowed to read the registry: the registry itself, every `__main__`, and the console scripts."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"].get("scripts", {})
    allowed = {os.path.join("tf_fracture", "datasets.py")}
    for target in scripts.values():
        module = target.split(":")[0]
        if module.startswith("tf_fracture."):
            allowed.add(module.replace(".", os.sep) + ".py")
    return allowed


def registry_imports(path):
    """The registry modules `path` imports, anywhere in it (function bodies included)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [n for n in names if any(n == r or n.startswith(r + ".") for r in REGISTRY)]
    return found


def test_registry_is_imported_only_at_entry_points():
    allowed = entry_points()
    offenders = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, ROOT)
            if name.endswith(".py") and name != "__main__.py" and relative not in allowed:
                if imports := registry_imports(path):
                    offenders[relative] = imports
    assert offenders == {}, (
        "Only entry points (`__main__.py`, console scripts) may import the dataset registry; builders import "
        f"tf_fracture, so the library importing them makes a cycle: {offenders}"
    )


def test_registry_scan_sees_every_import_form(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "import tf_fracture_datasets.fracatlas\n"
        "from tf_fracture import datasets\n"
        "def f():\n    import tf_fracture.datasets\n"
        "from tf_fracture.data import io\n"
    )
    assert registry_imports(path) == ["tf_fracture_datasets.fracatlas", "tf_fracture.datasets", "tf_fracture.datasets"]


@pytest.mark.parametrize("module", ["tf_fracture.audit.duplicates", "tf_fracture.audit"])
def test_duplicate_search_imports_no_tensorflow_tfds_or_registry(module):
    code = (
        f"import sys, {module}\n"
        "heavy = ('tensorflow', 'tensorflow_datasets', 'tf_fracture_datasets', 'tf_fracture.datasets', 'keras')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m == 'tf_fracture.datasets'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
