"""``tf-fracture train`` as a user meets it: bad values fail before the run folder is written, in one
line; a folder being written by another training is refused; the log of a run has one line per epoch."""

import errno
import os
import re
import subprocess
import sys

import pytest

from tf_fracture.run_folder import RunFolder, RunLockedError
from tf_fracture.train.__main__ import main

TINY = ["data.builder_config=tiny", "data.image_size=32", "data.batch_size=8", "model.feature_dim=16"]


def tiny_args(data_dir, run_dir, *assignments):
    sets = [f"data.data_dir={data_dir}", *TINY, "train.epochs=2", *assignments]
    return ["--run-dir", str(run_dir), "--no-evaluate", *[arg for value in sets for arg in ("--set", value)]]


@pytest.mark.parametrize(
    ("assignment", "named"),
    [
        ("data.image_size=16", "image_size"),  # below any backbone's 32x downsampling
        ("data.image_size=100000", "image_size"),  # used to hang, allocating
        ("model.variant=nosuch", "nosuch"),  # fails when the model is built
        ("data.builder_config=nosuch", "nosuch"),  # fails when the data are loaded
        ("data.train_split=nosuch", "nosuch"),
        ("model.stem=rgb", "stem=grey"),  # the grey pipeline cannot feed it: refused, naming the fix
    ],
)
def test_a_bad_value_fails_in_one_line_and_writes_nothing(assignment, named, data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(tiny_args(data_dir, run_dir, assignment)) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("tf-fracture train: error:"), error
    assert named in error and "Traceback" not in error
    assert not run_dir.exists() or not any(run_dir.iterdir())  # no config.json to lock the folder


def test_a_read_only_run_folder_is_one_line(data_dir, tmp_path, capsys, monkeypatch):
    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o500)
    # Root ignores the mode: refuse as the kernel refuses everyone else, so the test runs as any user.
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if os.fspath(path).startswith(os.fspath(parent) + os.sep):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        assert main(tiny_args(data_dir, parent / "run")) == 1
    finally:
        monkeypatch.undo()
        parent.chmod(0o700)
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Permission denied" in error


HOLD_LOCK = """
import sys
from tf_fracture.run_folder import RunFolder
with RunFolder(sys.argv[1]).lock():
    print("locked", flush=True)
    sys.stdin.readline()
"""


def _holder(path):
    """A process holding the folder's lock until its stdin closes (or it is killed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout.readline().strip() == "locked"
    return process


def test_the_lock_refuses_a_second_writer_and_is_released_with_its_process(tmp_path):
    holder = _holder(tmp_path)
    with pytest.raises(RunLockedError, match=rf"being written by another training \(pid {holder.pid} "):
        with RunFolder(tmp_path).lock():
            pass
    holder.communicate("\n", timeout=60)  # ends normally
    with RunFolder(tmp_path).lock():  # free again
        pass
    holder = _holder(tmp_path)
    holder.kill()  # kill -9: the kernel drops the lock with the process
    holder.wait(60)
    with RunFolder(tmp_path).lock():
        pass


def test_a_second_training_into_a_locked_folder_is_one_line(data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    with RunFolder(run_dir).lock():
        assert main(tiny_args(data_dir, run_dir)) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "being written by another training" in error


def test_a_run_logs_one_line_per_epoch_and_its_folder_moves(data_dir, tmp_path, capfd):
    run_dir = tmp_path / "run"
    assert main(tiny_args(data_dir, run_dir)) == 0
    out, err = capfd.readouterr()
    # No TensorFlow C++ error lines (captured at the file descriptor, where TensorFlow writes them).
    assert "node_def_util" not in err and not re.search(r"^E0000 ", err, flags=re.MULTILINE), err
    assert "\x1b[" not in out and "━" not in out and "\r" not in out  # no progress-bar redraws
    assert len(re.findall(r"^Epoch \d+/2$", out, flags=re.MULTILINE)) == 2
    assert re.search(r"Best model: .*model\.keras \(epoch [12], validation AUROC", out)
    # Epochs are counted from 1 everywhere.
    run = RunFolder(run_dir)
    summary = run.read_summary()
    assert [row["epoch"] for row in run.read_history()] == [1, 2] and summary["best_epoch"] in (1, 2)
    assert f"(epoch {summary['best_epoch']}," in out
    # Paths in summary.json are relative: the folder still reads right once moved.
    moved = RunFolder(run_dir.rename(tmp_path / "moved"))
    assert summary["model"] == "model.keras" and moved.path_of(summary["model"]).is_file()
    # The same command again finds the finished run; another configuration is refused in one line.
    assert main(tiny_args(data_dir, moved.path)) == 0
    capfd.readouterr()
    assert main(tiny_args(data_dir, moved.path, "train.epochs=3")) == 1
    error = capfd.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "train.epochs" in error
