"""The examples in the TF-free modules' docstrings run and give what they show.

Examples that need a trained model or a dataset on disk are marked ``# doctest: +SKIP``; every other
example runs here.
"""

import doctest
import importlib
import pkgutil

import pytest

import tf_fracture.configs
import tf_fracture.metrics

MODULES = [
    "tf_fracture.command",
    "tf_fracture.run_folder",
    "tf_fracture.validation",
    "tf_fracture.data.io",
    "tf_fracture.data.preprocess",
    "tf_fracture.data.store",
    "tf_fracture.data.targets",
    "tf_fracture.data.hashing",
    "tf_fracture.data.splits",
    "tf_fracture.audit.duplicates",
    "tf_fracture.explain.boxes",
    "tf_fracture_export.metadata",
    "tf_fracture_export.litert",
    "tf_fracture_export.predictor",
    *[f"tf_fracture.configs.{m.name}" for m in pkgutil.iter_modules(tf_fracture.configs.__path__)],
    *[f"tf_fracture.metrics.{m.name}" for m in pkgutil.iter_modules(tf_fracture.metrics.__path__)],
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)


def test_the_runner_catches_a_wrong_example():
    # The check above can fail: an example whose output is wrong is reported.
    parser = doctest.DocTestParser()
    test = parser.get_doctest(">>> 1 + 1\n3\n", {}, "wrong", "wrong.py", 0)
    runner = doctest.DocTestRunner()
    runner.run(test, out=lambda text: None)
    assert runner.summarize(verbose=False).failed == 1
