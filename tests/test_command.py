"""The one command, ``tf-fracture <command>``: its help, its dispatch, and its errors."""

import importlib
import subprocess
import sys

import pytest

from tf_fracture import command


def test_help_lists_every_command_in_one_line(capsys):
    assert command.main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == list(command.COMMANDS)
    for name in ("train", "evaluate", "explain", "audit", "export", "predict"):
        assert name in listed


def test_no_command_prints_the_help_and_fails(capsys):
    assert command.main([]) == 2
    assert "commands:" in capsys.readouterr().out


def test_unknown_command_is_one_line_naming_the_commands(capsys):
    assert command.main(["trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown command 'trian'" in err and "train" in err


@pytest.mark.parametrize("name", list(command.COMMANDS))
def test_each_command_dispatches_to_its_module(name, capsys):
    # `--help` goes through the dispatcher into the module's own parser, whose usage names the command.
    assert callable(importlib.import_module(command.COMMANDS[name].module).main)
    with pytest.raises(SystemExit) as exit_:
        command.main([name, "--help"])
    assert exit_.value.code == 0
    assert f"usage: tf-fracture {name}" in capsys.readouterr().out


def test_arguments_reach_the_subcommand(monkeypatch):
    seen = {}

    class Module:
        @staticmethod
        def main(argv):
            seen["argv"] = argv
            return 7

    monkeypatch.setattr(command.importlib, "import_module", lambda name: Module)
    assert command.main(["evaluate", "runs/a", "runs/b", "--resamples", "0"]) == 7
    assert seen["argv"] == ["runs/a", "runs/b", "--resamples", "0"]


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, capsys):
    def missing(name):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(command.importlib, "import_module", missing)
    assert command.main(["vlm-train", "--data", "x"]) == 1
    err = capsys.readouterr().err
    assert "'torch' is not installed" in err and "tf-fracture[vlm]" in err


def test_python_dash_m_form():
    result = subprocess.run(
        [sys.executable, "-m", "tf_fracture", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "export-split" in result.stdout, result.stderr


def test_the_readme_shows_the_real_help(capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("$ tf-fracture --help\n", 1)[1].split("```", 1)[0]
    command.main(["--help"])
    assert block == capsys.readouterr().out
