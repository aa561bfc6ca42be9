"""Quiet command lines: TensorFlow's start-up log is hidden unless --verbose / TF_FRACTURE_VERBOSE."""

import os
import subprocess
import sys

import pytest

from tf_fracture import cli

# Lines TensorFlow prints at start-up on CPU-only and GPU machines (C++ absl log and Python absl).
NOISE = (
    "absl",
    "cuda",
    "cuInit",
    "oneDNN custom operations",
    "Unable to register",
    "TF-TRT",
    "cpu_feature_guard",
    "This TensorFlow binary is optimized",
)


def run(*args, env=None):
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", cli.VERBOSE_ENV)}
    # oneDNN on (the tests turn it off, conftest.py): TensorFlow then logs "oneDNN custom operations are
    # on" at start-up on every x86 build, so there is always a start-up log to hide.
    environment["TF_ENABLE_ONEDNN_OPTS"] = "1"
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=environment, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def noise_in(output):
    return [marker for marker in NOISE if marker.lower() in output.lower()]


@pytest.fixture(scope="module")
def verbose_output():
    output = run("-m", "tf_fracture.cli", "--verbose")
    assert "oneDNN custom operations" in output  # the log this test hides is there to hide
    return output


def test_cli_hides_tensorflow_start_up_log(verbose_output):
    output = run("-m", "tf_fracture.cli")
    assert noise_in(output) == []
    assert output.startswith("tf-fracture ") and "devices: " in output  # our own output is still there
    assert output.splitlines()[0] in verbose_output


def test_environment_variable_brings_it_back(verbose_output):
    output = run("-m", "tf_fracture.cli", env={cli.VERBOSE_ENV: "1"})
    assert noise_in(output) == noise_in(verbose_output)
    assert noise_in(run("-m", "tf_fracture.cli", env={cli.VERBOSE_ENV: "0"})) == []


def test_smoke_help_is_quiet_and_offers_verbose():
    output = run("-m", "tf_fracture.smoke", "--help")
    assert "--verbose" in output and noise_in(output) == []


def test_captured_start_up_output_is_shown_when_loading_fails(capfd):
    with cli._stderr_descriptor_captured():
        os.write(2, b"hidden start-up line\n")
    assert "hidden" not in capfd.readouterr().err
    with pytest.raises(RuntimeError), cli._stderr_descriptor_captured() as caught:
        os.write(2, b"the reason it failed\n")
        caught.flush_to_stderr = True
        raise RuntimeError("import failed")
    assert "the reason it failed" in capfd.readouterr().err


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        ([], "", False),
        (["--verbose"], "", True),
        ([], "1", True),
        ([], "true", True),
        ([], "0", False),
        ([], "no", False),
    ],
)
def test_verbose_requested(monkeypatch, argv, env, expected):
    monkeypatch.setenv(cli.VERBOSE_ENV, env)
    assert cli.verbose_requested(argv) is expected


def test_audit_of_a_folder_is_quiet_and_never_loads_tensorflow():
    # A folder audit reads files with the TF-free reader: it must work where TensorFlow cannot load,
    # and print nothing of TensorFlow's start-up.
    folder = os.path.join(os.path.dirname(__file__), "..", "datasets", "fracatlas", "dummy_data", "FracAtlas", "images")
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from tf_fracture.audit.__main__ import main\n"
        f"sys.exit(main(['--folder', {folder!r}, '--labels-from-parent']))\n"
    )
    output = run("-c", code)
    assert "positive class: Fractured (1)" in output
    assert not noise_in(output), output
