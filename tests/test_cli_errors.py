"""Errors a user can cause in evaluate, explain and export end in one line naming the problem."""

import zipfile

import pytest

from tf_fracture.evaluate.__main__ import main as evaluate_main
from tf_fracture.explain.__main__ import main as explain_main
from tf_fracture.models import load_model
from tf_fracture_export.__main__ import main as export_main


@pytest.fixture
def truncated_run(tmp_path):
    """A run folder whose model.keras was cut short (a copy interrupted)."""
    run = tmp_path / "run"
    run.mkdir()
    with zipfile.ZipFile(tmp_path / "whole.keras", "w") as archive:
        archive.writestr("config.json", "{}" * 5000)
        archive.writestr("model.weights.h5", bytes(range(256)) * 400)
    whole = (tmp_path / "whole.keras").read_bytes()
    (run / "model.keras").write_bytes(whole[: len(whole) // 2])
    (run / "config.json").write_text('{"data": {"dataset": "synthetic_xray"}}')
    return run


def test_a_damaged_keras_file_is_named_as_damaged_not_missing(truncated_run, tmp_path):
    with pytest.raises(ValueError, match=r"model\.keras is not a readable \.keras file \(not a zip archive\)"):
        load_model(truncated_run / "model.keras")
    # An archive whose member is corrupt (bytes flipped): its CRC check fails.
    data = bytearray((tmp_path / "whole.keras").read_bytes())
    data[200] ^= 0xFF
    (tmp_path / "flipped.keras").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"damaged zip archive"):
        load_model(tmp_path / "flipped.keras")


@pytest.mark.parametrize(
    ("main", "extra"),
    [(evaluate_main, ["--resamples", "0"]), (explain_main, ["image.png"]), (export_main, [])],
    ids=["evaluate", "explain", "export"],
)
@pytest.mark.parametrize("case", ["missing", "truncated"])
def test_a_bad_run_folder_is_one_line(main, extra, case, truncated_run, tmp_path, capsys):
    run = tmp_path / "nosuch" if case == "missing" else truncated_run
    assert main([str(run), *extra]) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error, error
    if case == "missing":
        assert "nosuch" in error and "--dataset" not in error  # the missing folder, not a missing flag
    else:
        assert "not a readable .keras file" in error and "File not found" not in error
