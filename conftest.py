"""Repository-wide pytest configuration."""

import os

# TensorFlow's oneDNN kernels pick their code path by the CPU's instruction set (AVX2, AVX-512, VNNI):
# results then differ in the last bits from one CPU model to the next (TensorFlow says as much when it
# starts), and on an AVX-512 VNNI machine the suite died in them at about 40 % (a segmentation fault
# in a Conv2D, an abort while a variable was created). The tests run on TensorFlow's own (Eigen)
# kernels, the same on every x86 CPU; a user's training keeps oneDNN. Set before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Nothing is downloaded in a test. On a CPU with AVX512-BF16, importing bitsandbytes asks the Hugging Face
# Hub for a CPU kernel (and falls back to its own when that fails): offline, it fails at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase (the base of TFDS' DatasetBuilderTestCase) defines `test_session`, a
    # context manager that pytest collects as a test and then skips: drop it, it tests nothing.
    items[:] = [item for item in items if item.name != "test_session"]
