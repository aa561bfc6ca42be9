"""tf.distribute on the CPU: MirroredStrategy over two logical CPUs, MultiWorkerMirroredStrategy over two local
processes talking over 127.0.0.1. Each runs tests/distribute_scripts.py in a fresh process (logical devices and
collective ops must be configured before TensorFlow starts)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tf_fracture.models import load_model

SCRIPT = Path(__file__).with_name("distribute_scripts.py")
TIMEOUT = 600


def _env(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **extra}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _group(arrays, name):
    keys = sorted((k for k in arrays.files if k.startswith(f"{name}/")), key=lambda k: int(k.split("/")[1]))
    return [arrays[k] for k in keys]


def _norm(arrays):
    return float(np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in arrays)))


def _relative(a, b, scale):
    return _norm([x - y for x, y in zip(a, b, strict=True)]) / _norm(scale)


@pytest.mark.large
def test_mirrored_over_two_cpus_equals_the_per_replica_reference(tmp_path):
    out = tmp_path / "mirrored.npz"
    subprocess.run([sys.executable, str(SCRIPT), "mirrored", str(out)], env=_env(), check=True, timeout=TIMEOUT)
    arrays = np.load(out)
    assert int(arrays["replicas"]) == 2
    initial, mirrored = _group(arrays, "initial"), _group(arrays, "mirrored")
    update = [m - i for m, i in zip(mirrored, initial, strict=True)]
    # The reference runs each half of the global batch as one replica would and averages the gradients: the
    # same arithmetic, eager instead of Grappler-fused, so float32 rounding differs by ~1e-6 relative per
    # step (measured 6e-6 after 3 steps); 1e-4 of the update leaves that margin and is 10^4 times smaller
    # than the gap to BatchNorm over the whole global batch (~1.1 of the update), checked below.
    assert _relative(mirrored, _group(arrays, "reference"), update) < 1e-4
    assert _relative(mirrored, _group(arrays, "whole"), update) > 0.1
    # Keras 3 BatchNorm moving statistics are per replica (aggregation "none"): each replica's copy follows
    # its own half of the batches, and the saved value is replica 0's.
    for r in (0, 1):
        moving = _group(arrays, f"mirrored_moving{r}")
        assert _relative(moving, _group(arrays, f"reference_moving{r}"), moving) < 1e-6
    moving0, moving1 = _group(arrays, "mirrored_moving0"), _group(arrays, "mirrored_moving1")
    assert _relative(moving0, moving1, moving0) > 1e-5
    # sync_moving_statistics: both copies become the replicas' mean.
    synced0, synced1 = _group(arrays, "synced0"), _group(arrays, "synced1")
    for a, b in zip(synced0, synced1, strict=True):
        np.testing.assert_array_equal(a, b)
    mean = [(a + b) / 2 for a, b in zip(moving0, moving1, strict=True)]
    assert _relative(synced0, mean, mean) < 1e-7


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(tmp_path, *flags):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes, logs = [], []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = open(tmp_path / f"worker{index}.log", "w")
        logs.append(log)
        processes.append(
            subprocess.Popen(
                [sys.executable, str(SCRIPT), "multi_worker", str(tmp_path / f"worker{index}.npz"), *flags],
                env=_env(TF_CONFIG=config),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        codes = [p.wait(timeout=TIMEOUT) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    return codes, [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]


@pytest.mark.large
def test_two_workers_train_in_step(tmp_path):
    codes, logs = _run_workers(tmp_path)
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    workers = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    assert [int(w["replicas"]) for w in workers] == [2, 2]
    assert [bool(w["chief"]) for w in workers] == [True, False]
    assert [str(w["worker_dir"]) for w in workers] == ["RUN", os.path.join("RUN", "workers", "worker-1")]
    # Seeded differently, the workers start from worker 0's broadcast initial values and apply the same
    # all-reduced gradients: their trainable weights agree to the last bit.
    for a, b in zip(_group(workers[0], "trainable"), _group(workers[1], "trainable"), strict=True):
        np.testing.assert_array_equal(a, b)
    # The epoch logs are the cluster's (metrics read from SyncOnRead variables summed over the workers).
    histories = [json.loads(str(w["history"])) for w in workers]
    assert histories[0] == histories[1]
    assert set(histories[0]) == {"loss", "auroc", "val_loss", "val_auroc"}
    # model.predict under the strategy gives every worker all predictions, in the dataset's order, partial
    # last batch included (what a validation callback that scores with predict needs).
    for worker in workers:
        assert worker["predicted"].shape == (30, 1)
        np.testing.assert_allclose(worker["predicted"], worker["direct"], rtol=1e-5, atol=1e-5)
    # The chief alone saved model.keras (no collective op in Keras 3's save); it reloads with its weights.
    assert not (tmp_path / "worker1.keras").exists()
    saved = load_model(tmp_path / "worker0.keras")
    for a, b in zip(saved.trainable_weights, _group(workers[0], "trainable"), strict=True):
        np.testing.assert_array_equal(a.numpy(), b)
    # BatchNorm moving statistics are not synchronised (Keras 3: aggregation "none"), so each worker keeps
    # its own; if this starts to fail, Keras syncs them and SyncMovingStatistics can go.
    moving0, moving1 = _group(workers[0], "moving"), _group(workers[1], "moving")
    assert _relative(moving0, moving1, moving0) > 1e-6
    # After an epoch with SyncMovingStatistics every worker holds the cluster's mean.
    for a, b in zip(_group(workers[0], "synced"), _group(workers[1], "synced"), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.large
def test_keras_multi_worker_fit_still_needs_the_fixes(tmp_path):
    # Documents keras-team/keras#20585: drop keras_multi_worker_fixes when this starts to fail.
    codes, logs = _run_workers(tmp_path, "--no-fixes")
    assert codes != [0, 0]
    assert "with an unsupported type (<class 'tensorflow.python.distribute.values.PerReplica'>)" in logs[0]


@pytest.mark.large
def test_the_train_command_on_two_workers(tmp_path):
    # The real entry point, `python -m tf_fracture.train`, as two workers of one cluster on synthetic_xray/tiny.
    import tensorflow_datasets as tfds

    import tf_fracture.datasets  # noqa: F401  (registers the builders)

    data_dir = tmp_path / "tfds"
    tfds.builder("synthetic_xray/tiny", data_dir=str(data_dir)).download_and_prepare()  # once, not per worker
    run_dir = tmp_path / "run"
    overrides = {
        "train.distribute": "multi_worker",
        "data.builder_config": "tiny",
        "data.data_dir": str(data_dir),
        "data.image_size": 64,
        "data.batch_size": 8,
        "train.epochs": 2,
        "model.variant": "small",
    }
    command = [sys.executable, "-m", "tf_fracture.train", "--run-dir", str(run_dir), "--no-evaluate"]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = [
        subprocess.Popen(
            command,
            env=_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    worker = run_dir / "workers" / "worker-1"
    for folder in (run_dir, worker):
        assert {"config.json", "model.keras", "history.csv", "summary.json"} <= {p.name for p in folder.iterdir()}
    model = load_model(run_dir / "model.keras")
    final = []
    for folder in (run_dir, worker):
        model.load_weights(folder / "final.weights.h5")
        final.append([w.numpy() for w in model.trainable_weights])
    for a, b in zip(*final, strict=True):
        np.testing.assert_array_equal(a, b)
