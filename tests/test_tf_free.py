"""The TF-free data core: each module in MODULES imports and works where TensorFlow cannot be imported.

Each check runs in a fresh interpreter whose import system refuses `tensorflow` (a `sys.meta_path`
finder installed before anything else is imported), so a module that imports TensorFlow at any depth
fails there with ImportError, and one that imports it lazily is caught by the `sys.modules` check.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

# The modules the edge predictor, the PyTorch track and the dataset builders reuse; give a module an
# EXERCISES entry to run it too, not only import it.
MODULES = [
    "tf_fracture.data.io",
    "tf_fracture.data.preprocess",
    "tf_fracture.data.store",
    "tf_fracture.audit.duplicates",
    "tf_fracture.metrics",
    "tf_fracture.configs",
    "tf_fracture.run_folder",
    "tf_fracture.explain.boxes",
    "tf_fracture_export.metadata",
    "tf_fracture_export.litert",
    "tf_fracture_export.predictor",
    "tf_fracture.command",
]

BLOCK_TENSORFLOW = """
import importlib.abc
import sys


class BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"{name} is blocked: this module must work without TensorFlow")
        return None


sys.meta_path.insert(0, BlockTensorFlow())
"""

# What each module must do once imported (the module is bound to `module`, a temporary folder to `tmp`).
EXERCISES = {
    "tf_fracture.data.io": """
import cv2
import numpy as np
import pydicom
from pydicom.data import get_testdata_file

rng = np.random.default_rng(0)
grey = cv2.GaussianBlur(rng.integers(0, 256, (40, 50), dtype=np.uint8), (5, 5), 0)
twelve_bit = (grey.astype(np.uint16) * 16)
for ext, image in ((".png", grey), (".png", twelve_bit), (".jpg", grey)):
    path = os.path.join(tmp, "image" + ext)
    with open(path, "wb") as f:
        f.write(cv2.imencode(ext, image)[1].tobytes())
    out = module.read_image(path)
    assert out.dtype == np.uint8 and out.shape == (40, 50), (ext, out.dtype, out.shape)
    if image.dtype == np.uint8:
        np.testing.assert_array_equal(out, cv2.imread(path, cv2.IMREAD_UNCHANGED))
    else:
        np.testing.assert_array_equal(out, module.scale_to_uint8(image))

# A real CT slice from pydicom's own files (shipped with pydicom; download=False keeps it offline).
path = get_testdata_file("CT_small.dcm", download=False)
ds = pydicom.dcmread(path)
out = module.read_image(path)
assert out.shape == ds.pixel_array.shape and out.dtype == np.uint8 and out.std() > 10, (out.shape, out.std())

cut = cv2.imencode(".jpg", grey)[1].tobytes()
try:
    module.decode_image(cut[: len(cut) // 2] + b"\\xff\\xd9", "cut.jpg")
    raise AssertionError("a truncated JPEG was read")
except module.ImageReadError as error:
    assert "truncated or corrupt JPEG" in error.reason, error.reason
""",
    "tf_fracture_export.litert": """
# LiteRT itself (the interpreter and the CompiledModel API) loads where TensorFlow cannot; the predictor's
# own test runs a real model here (tests/test_export_predictor.py).
from ai_edge_litert.compiled_model import CompiledModel
from ai_edge_litert.interpreter import Interpreter

try:
    module.load_interpreter(os.path.join(tmp, "missing.tflite"))
    raise AssertionError("a missing model was loaded")
except FileNotFoundError as error:
    assert "No model at" in str(error), error
""",
    "tf_fracture.command": """
# `tf-fracture predict` runs its parser and its predictor without TensorFlow.
import contextlib, io
try:
    with contextlib.redirect_stdout(io.StringIO()):
        module.main(["predict", "--help"])
except SystemExit as exit_:
    assert exit_.code == 0, exit_.code
err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = module.main(["predict", os.path.join(tmp, "missing.tflite"), os.path.join(tmp, "a.png")])
assert code != 0 and "missing.tflite" in err.getvalue(), (code, err.getvalue())
""",
    "tf_fracture.data.preprocess": """
import numpy as np

image = np.random.default_rng(0).integers(0, 256, (50, 70), dtype=np.uint8)
for name in ("mura", "elbow"):
    config = module.get_preprocess_config(name)
    out = module.preprocess(image, config)
    assert out.shape == (config.image_size, config.image_size) and out.dtype == np.uint8, out.shape
""",
}


def run_without_tensorflow(module_name, tmp_path, exercise=""):
    expected = importlib.util.find_spec(module_name).origin  # the copy under test, not an installed one
    script = "\n".join(
        [
            BLOCK_TENSORFLOW,
            "import importlib, os",
            f"module = importlib.import_module({module_name!r})",
            f"assert os.path.samefile(module.__file__, {expected!r}), module.__file__",
            f"tmp = {str(tmp_path)!r}",
            textwrap.dedent(exercise),
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))",
            "assert not loaded, f'imported {loaded}'",
            "print('ok')",
        ]
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("module_name", MODULES)
def test_module_works_without_tensorflow(module_name, tmp_path):
    result = run_without_tensorflow(module_name, tmp_path, EXERCISES.get(module_name, ""))
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_the_block_catches_a_tensorflow_import(tmp_path):
    # The harness itself: code that imports TensorFlow must fail in it.
    result = run_without_tensorflow("json", tmp_path, "import tensorflow")
    assert result.returncode != 0 and "tensorflow is blocked" in result.stderr
