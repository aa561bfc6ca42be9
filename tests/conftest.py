import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

# Tests call the library's data functions directly, as a user's script does: register tf-fracture's
# TFDS builders once first, as such a script must (the command lines do it themselves).
import tf_fracture.datasets  # noqa: F401


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """synthetic_xray/tiny built once for the session (read-only once prepared: runs only read it)."""
    import tensorflow_datasets as tfds

    path = tmp_path_factory.mktemp("tfds")
    tfds.builder("synthetic_xray/tiny", data_dir=str(path)).download_and_prepare()
    return str(path)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def float64():
    """Exact-equivalence tests run in float64: a deep random-init net can amplify float32 rounding."""
    # Both: Keras pins its global dtype policy to floatx at the first layer built, so a float64 floatx
    # alone would leave a float64 policy behind for every later test.
    previous_floatx, previous_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(previous_floatx)
    keras.config.set_dtype_policy(previous_policy)


@pytest.fixture(autouse=True)
def _no_leaked_dtype():
    # Keras keeps floatx and the dtype policy as process-wide state: a test that changes either must
    # put it back, or every later test silently runs in another precision.
    yield
    policy, floatx = keras.config.dtype_policy().name, keras.config.floatx()
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
    assert (policy, floatx) == ("float32", "float32"), f"the test left dtype policy {policy!r}, floatx {floatx!r}"


@pytest.fixture(autouse=True)
def _torch_one_thread():
    # The VLM tests' models are tiny: they gain nothing from threads, and on a shared 2-core machine
    # torch's spinning OpenMP threads make each step ~50x slower. Tests that never import torch skip this.
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
