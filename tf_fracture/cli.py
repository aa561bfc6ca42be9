"""Quiet command lines: TensorFlow's start-up noise is hidden unless the user asks for it.

    python -m tf_fracture.cli              # versions and devices, nothing else
    python -m tf_fracture.cli --verbose    # the same, with TensorFlow's start-up log
    TF_FRACTURE_VERBOSE=1 python -m tf_fracture.smoke

Importing TensorFlow prints C++ log lines before any of our output: "All log messages
before absl::InitializeLog() is called are written to STDERR", "Could not find cuda
drivers", "failed call to cuInit", and on other machines the oneDNN, cuDNN/cuBLAS
"Unable to register ... factory" and TF-TRT lines. They come *twice* because two shared
objects of the TensorFlow wheel each link their own copy of absl logging and of the CUDA
runtime stub: ``libtensorflow_framework.so.2`` (loaded first) and
``tensorflow/python/profiler/internal/_pywrap_profiler_plugin.so`` (loaded later in the same
``import tensorflow``, in the same process); each prints the absl preamble and the driver
line when it probes for ``libcudart``.

``TF_CPP_MIN_LOG_LEVEL`` does not hide them: absl writes everything logged before
``absl::InitializeLog()`` straight to file descriptor 2, whatever the level. So
`quiet_tensorflow` redirects descriptor 2 (not only ``sys.stderr``) while TensorFlow is
imported and its devices are listed, and prints what it caught only if that fails. After
start-up, ``TF_CPP_MIN_LOG_LEVEL=2`` (unless the user set it) hides TensorFlow's C++ INFO and
WARNING lines and keeps its errors; the Python loggers of absl, TensorFlow and TFDS are
set to ERROR. ``TF_ENABLE_ONEDNN_OPTS`` is left alone: it changes numerics, not only the log.

The pattern of an entry point (``python -m tf_fracture.<tool>``): keep TensorFlow imports
out of the module top, and parse the arguments with `parse_args`, which adds ``--verbose``:

    def main(argv=None) -> int:
        parser = argparse.ArgumentParser(...)
        ...
        args = cli.parse_args(parser, argv)  # before anything imports TensorFlow
        import keras  # noqa: the imports that load TensorFlow come after
        ...

A ``__main__.py`` whose imports load TensorFlow at module top calls ``quiet_tensorflow()``
(which reads ``--verbose`` and ``TF_FRACTURE_VERBOSE`` itself) before those imports.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile

from tf_fracture.run_folder import RunLockedError

VERBOSE_ENV = "TF_FRACTURE_VERBOSE"
VERBOSE_FLAG = "--verbose"

__all__ = [
    "USER_ERRORS",
    "VERBOSE_ENV",
    "add_verbose_argument",
    "main",
    "parse_args",
    "progress_bars_on_terminal_only",
    "quiet_tensorflow",
    "user_error",
    "verbose_requested",
]

# The errors a user can cause (a bad value, a missing or unreadable file or folder, a locked run
# folder): a command prints them as one line with `user_error`. Anything else is a bug, and keeps
# its traceback.
USER_ERRORS = (ValueError, OSError, RunLockedError)


def verbose_requested(argv=None) -> bool:
    """True if ``--verbose`` is in ``argv`` (default ``sys.argv``) or ``TF_FRACTURE_VERBOSE`` is set."""
    argv = sys.argv[1:] if argv is None else argv
    value = os.environ.get(VERBOSE_ENV, "").strip().lower()
    return VERBOSE_FLAG in argv or value not in ("", "0", "false", "no", "off")


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        VERBOSE_FLAG,
        action="store_true",
        help=f"show TensorFlow's start-up log (hidden by default; or set {VERBOSE_ENV}=1)",
    )


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with a ``--verbose`` flag, then `quiet_tensorflow` unless verbose.

    ``--help`` and argument errors exit inside ``parse_args`` before TensorFlow is loaded.
    """
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    args.verbose = args.verbose or verbose_requested([])
    quiet_tensorflow(args.verbose)
    return args


def progress_bars_on_terminal_only() -> None:
    """Turns TFDS' progress bars off when stderr is not a terminal (a log file gets no bar redraws)."""
    if not sys.stderr.isatty():
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()


def user_error(prog: str, error: BaseException, verbose: bool = False) -> int:
    """Prints ``error`` as one line, ``PROG: error: MESSAGE``, and returns the exit status 1.

    With ``verbose`` it raises ``error`` again instead, for the traceback.
    """
    if verbose:
        raise error
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{prog}: error: {message} (--verbose shows the traceback)", file=sys.stderr, flush=True)
    return 1


def quiet_tensorflow(verbose: bool | None = None) -> None:
    """Loads TensorFlow with its start-up log hidden (see the module docstring); no-op if ``verbose``.

    Args:
        verbose: show everything; ``None`` reads ``--verbose`` in ``sys.argv`` and the
            ``TF_FRACTURE_VERBOSE`` environment variable.

    If TensorFlow is already imported, its start-up lines are already out: only the Python
    loggers are quietened.
    """
    if verbose is None:
        verbose = verbose_requested()
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        with _stderr_descriptor_captured() as caught:
            try:
                import tensorflow as tf

                tf.config.list_physical_devices()  # the CUDA probe logs "failed call to cuInit" here
            except BaseException:
                caught.flush_to_stderr = True
                raise
    for name in ("absl", "tensorflow", "tensorflow_datasets", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


class _Caught:
    flush_to_stderr = False


@contextlib.contextmanager
def _stderr_descriptor_captured():
    """Points file descriptor 2 at a temporary file; writes the file back to stderr on failure."""
    caught = _Caught()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield caught
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if caught.flush_to_stderr:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))
                sys.stderr.flush()


def main(argv=None) -> int:
    """``python -m tf_fracture.cli``: the versions and devices this install sees."""
    parser = argparse.ArgumentParser(
        description="Print the versions of tf-fracture, TensorFlow and Keras, and the devices."
    )
    parse_args(parser, argv)
    import keras
    import tensorflow as tf

    import tf_fracture

    devices = ", ".join(d.name.removeprefix("/physical_device:") for d in tf.config.list_physical_devices())
    print(f"tf-fracture {tf_fracture.__version__}, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"devices: {devices}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
