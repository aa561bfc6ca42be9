"""The import rule between the two tracks: vlm_torch never imports TensorFlow, the CNN side never imports torch.

Two checks each way:
- static: every ``import`` statement in the sources (at any depth, lazy ones inside functions included);
  vlm_torch may use only the TF-free parts of tf_fracture (metrics, data.io, data.preprocess);
- dynamic: every module of vlm_torch imports in a fresh interpreter where TensorFlow cannot be imported
  (a ``sys.meta_path`` finder installed first refuses it, as in tests/test_tf_free.py), and
  leaves no TensorFlow / Keras module behind; the CNN side's entry points import with torch blocked likewise.
"""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TENSORFLOW = ("tensorflow", "keras", "tf_keras", "tensorflow_datasets", "tensorflow_hub", "tf2onnx", "ai_edge_litert")
TORCH = ("torch", "torchvision", "transformers", "peft", "bitsandbytes", "accelerate", "trl", "open_clip", "timm")
# The TF-free parts of the CNN side that vlm_torch shares (tests/test_tf_free.py checks each without TensorFlow).
SHARED = (
    "tf_fracture.metrics",
    "tf_fracture.data.io",
    "tf_fracture.data.preprocess",
    "tf_fracture.run_folder",
    "tf_fracture.validation",
)
CNN_PACKAGES = ("tf_fracture", "datasets", "export")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file; ``from a import b`` gives ``a.b`` as well as ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _is(name: str, roots) -> bool:
    return name.split(".")[0] in roots


def _shared_or_package(name: str) -> bool:
    # `from tf_fracture import metrics` names the package "tf_fracture" and "tf_fracture.metrics".
    return (
        name == "tf_fracture"
        or name == "tf_fracture.data"
        or any(name == s or name.startswith(s + ".") for s in SHARED)
    )


def test_vlm_torch_sources_import_no_tensorflow_and_only_the_shared_cnn_modules():
    files = sources("vlm_torch")
    assert len(files) >= 8, files  # the scan sees the package
    bad = []
    for path in files:
        for line, name in imports_of(path):
            if _is(name, TENSORFLOW) or (_is(name, ("tf_fracture", "tf_fracture_datasets", "tf_fracture_export"))
                                         and not _shared_or_package(name)):  # fmt: skip
                bad.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert not bad, "vlm_torch must stay TensorFlow-free:\n" + "\n".join(bad)


def test_cnn_sources_import_no_torch():
    files = sources(*CNN_PACKAGES)
    assert len(files) >= 50, len(files)
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in files
        for line, name in imports_of(path)
        if _is(name, (*TORCH, "vlm_torch"))
    ]
    assert not bad, "the CNN side must never import torch or vlm_torch:\n" + "\n".join(bad)


def test_the_static_scan_sees_lazy_imports(tmp_path):
    # The scan itself: an import inside a function, and `from x import y`, are found.
    path = tmp_path / "m.py"
    path.write_text("def f():\n    import tensorflow as tf\n\nfrom tf_fracture import train\n")
    assert sorted(imports_of(path)) == [(2, "tensorflow"), (4, "tf_fracture"), (4, "tf_fracture.train")]
    assert not _shared_or_package("tf_fracture.train") and _shared_or_package("tf_fracture.metrics")


BLOCK = """
import importlib.abc
import sys


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked: this track must not import it", name=name)
        return None


sys.meta_path.insert(0, Block())
# A blocked top-level name also maps to None: `import` then fails, while importlib.util.find_spec (which
# torch._dynamo calls on a list of libraries, TensorFlow among them) answers "not installed". Not for
# torch: SciPy (imported by Keras through scikit-learn) reads sys.modules["torch"] and expects a module.
for _name in BLOCKED - PLAIN:
    sys.modules[_name] = None
"""


def run_blocked(blocked, code: str, placeholders: bool = True) -> subprocess.CompletedProcess:
    plain = set() if placeholders else set(blocked)
    script = "\n".join([f"BLOCKED = {set(blocked)!r}", f"PLAIN = {plain!r}", BLOCK, textwrap.dedent(code)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=240)


IMPORT_ALL_OF_VLM_TORCH = """
import importlib, pkgutil
import vlm_torch

names = ["vlm_torch"] + [m.name for m in pkgutil.walk_packages(vlm_torch.__path__, "vlm_torch.")]
for name in names:
    importlib.import_module(name)
heavy = sorted(m for m, module in sys.modules.items() if module is not None and m.split(".")[0] in {heavy!r})
assert not heavy, heavy
print("imported", len(names), "modules:", " ".join(names))
"""


def test_every_vlm_torch_module_imports_without_tensorflow():
    result = run_blocked(TENSORFLOW, IMPORT_ALL_OF_VLM_TORCH.replace("{heavy!r}", repr(set(TENSORFLOW))))
    assert result.returncode == 0, result.stderr[-3000:]
    for module in ("vlm_torch.answers", "vlm_torch.data", "vlm_torch.evaluate", "vlm_torch.config"):
        assert module in result.stdout.split(), result.stdout


def test_the_block_catches_a_tensorflow_import():
    result = run_blocked(TENSORFLOW, "import tf_fracture.data.sources")  # imports TensorFlow at its top
    assert result.returncode != 0 and "import of tensorflow halted" in result.stderr, result.stderr[-2000:]


# ~30 s (TensorFlow's import on 2 cores): large; test_cnn_sources_import_no_torch checks the rule by default.
@pytest.mark.large
@pytest.mark.parametrize(
    "modules",
    [
        # The CNN side's entry points and what they load: TensorFlow, Keras, TFDS builders, export.
        ("tf_fracture.train.loop", "tf_fracture.evaluate", "tf_fracture.datasets", "tf_fracture.data.export_split"),
    ],
)
def test_the_cnn_side_imports_with_torch_blocked(modules):
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += f"assert not [m for m in sys.modules if m.split('.')[0] in {set(TORCH)!r}]\nprint('ok')"
    result = run_blocked(TORCH, code, placeholders=False)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
