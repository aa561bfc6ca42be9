"""``tf-fracture``: one command with a subcommand per job.

    tf-fracture --help                      # each subcommand in one line
    tf-fracture train                       # the demo: train + evaluate on synthetic radiographs
    tf-fracture evaluate runs/demo
    tf-fracture predict model.tflite xray.png   # no TensorFlow needed

Each subcommand is the ``main(argv)`` of one module, imported only when it runs, so this module
imports nothing heavy: ``tf-fracture predict`` stays free of TensorFlow, and ``tf-fracture --help``
answers at once. The ``python -m`` forms (``python -m tf_fracture.train``, ...) keep working.

Example:
    >>> sorted(COMMANDS)[:4]
    ['audit', 'evaluate', 'explain', 'export']
    >>> COMMANDS["predict"].module
    'tf_fracture_export.predict'
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

PROG = "tf-fracture"


@dataclass(frozen=True)
class Command:
    """A subcommand: the module whose ``main(argv) -> int`` runs it, and its one-line summary."""

    module: str
    summary: str
    extra: str | None = None  # the pip extra it needs, if any


COMMANDS = {
    "train": Command("tf_fracture.train.__main__", "train a classifier into a run folder, then evaluate it"),
    "evaluate": Command(
        "tf_fracture.evaluate.__main__",
        "score runs: metrics, shortcut tests, plots, report (several runs: a comparison)",
    ),
    "explain": Command("tf_fracture.explain.__main__", "Grad-CAM and CAM heatmaps of a run's model on images"),
    "audit": Command(
        "tf_fracture.audit.__main__", "check a dataset: balance, corrupt files, duplicates, patients in two splits"
    ),
    "export": Command("tf_fracture_export.__main__", "write TFLite models (float32/float16/dynamic/int8) of a run"),
    "predict": Command(
        "tf_fracture_export.predict", "fracture probabilities from a .tflite model (no TensorFlow)", "edge"
    ),
    "export-split": Command("tf_fracture.data.export_split", "write a prepared split as PNG files + manifest.csv"),
    "smoke": Command("tf_fracture.smoke", "check the install: a synthetic batch through the pipeline and every model"),
    "vlm-train": Command("vlm_torch.train", "LoRA-finetune a vision-language model (PyTorch)", "vlm"),
    "vlm-evaluate": Command("vlm_torch.evaluate", "score a vision-language model with the same metrics", "vlm"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} <command> [options]   ({PROG} <command> --help for a command's options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from tf_fracture import __version__

        print(f"{PROG} {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"{PROG}: unknown command {name!r}; the commands are: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as error:
        if command.extra is None:
            raise
        print(
            f"{PROG} {name}: {error.name!r} is not installed; "
            f"install the extra: pip install 'tf-fracture[{command.extra}]'.",
            file=sys.stderr,
        )
        return 1
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
