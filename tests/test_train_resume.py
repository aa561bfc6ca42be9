"""Exact resume: a real `python -m tf_fracture.train` killed with SIGKILL mid-training, then started again.

The resumed run must end with the weights (optimiser state included) of an uninterrupted run, which is
started from the first run's config.json alone (`--config`), so the test also proves that a run repeats
from its config file.
"""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds

import tf_fracture.datasets  # noqa: F401  (registers synthetic_xray)
from tf_fracture.models import load_model
from tf_fracture.run_folder import RunFolder
from tf_fracture.train.callbacks import ResumableBackup

EPOCHS = 6


def command(*args):
    return [sys.executable, "-m", "tf_fracture.train", "--no-evaluate", *args]


def overrides(data_dir):
    values = [
        "data.builder_config=tiny",
        f"data.data_dir={data_dir}",
        "data.image_size=64",
        "data.batch_size=4",
        "data.augmented_copies=1",
        "model.feature_dim=32",
        "model.dropout=0.2",  # random masks: their generators' states must be restored too
        f"train.epochs={EPOCHS}",
        "train.optimizer=torch_sgd",
        "train.learning_rate=0.01",
        "train.schedule=cosine_restarts",
        "train.t_0=2",
    ]
    return [arg for value in values for arg in ("--set", value)]


def h5_arrays(path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
        )
    return arrays


@pytest.mark.large
def test_a_run_killed_mid_training_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    data_dir = tmp_path / "tfds"
    tfds.builder("synthetic_xray/tiny", data_dir=str(data_dir)).download_and_prepare()
    killed = RunFolder(tmp_path / "killed")
    args = command(*overrides(data_dir), "--run-dir", str(killed.path))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while ResumableBackup.resume_epoch(killed.backup) < 2:
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no backup of epoch 2 within 10 minutes"
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not killed.summary.exists(), "the run finished before it was killed: make the epochs longer"
    interrupted_at = ResumableBackup.resume_epoch(killed.backup)
    assert 2 <= interrupted_at < EPOCHS

    resumed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming {killed.path} from its backup: epoch {interrupted_at + 1}" in resumed.stdout
    summary = killed.read_summary()
    assert summary["resumed_from_epoch"] == interrupted_at
    assert [row["epoch"] for row in killed.read_history()] == list(range(1, EPOCHS + 1))  # no replayed row twice
    assert not killed.backup.exists()

    reference = RunFolder(tmp_path / "reference")
    repeat = command("--config", str(killed.config), "--run-dir", str(reference.path))
    completed = subprocess.run(repeat, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert reference.read_config() == killed.read_config()

    expected, actual = h5_arrays(reference.final_weights), h5_arrays(killed.final_weights)
    assert sorted(actual) == sorted(expected)
    # The demo trains guided (a multi-task model around the classifier): final.weights.h5 holds the
    # classifier alone, without the optimiser's state. That state is still checked: the epochs after
    # the resume update the weights with the restored Adam moments, which any lost or wrong moment
    # would change beyond the tolerance below.
    assert "layers/dense/vars/0" in actual  # the CAM head's kernel is among the compared weights
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=1e-6, err_msg=name)
    assert summary["best_epoch"] == reference.read_summary()["best_epoch"]
    for a, b in zip(
        load_model(killed.model, compile=False).get_weights(),
        load_model(reference.model, compile=False).get_weights(),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # The weights moved during training: equal final weights are not equal initial weights.
    assert reference.read_history()[0]["loss"] != reference.read_history()[-1]["loss"]
