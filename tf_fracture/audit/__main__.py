"""The audit's command line: `tf-fracture audit` (see `--help`).

The only module of the audit that knows tf-fracture's dataset registry: it registers the builders
before it looks a TFDS dataset up by name. Exit code 0 whatever the audit finds, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence

from tf_fracture.audit.duplicates import MIN_CORRELATION
from tf_fracture.audit.report import audit
from tf_fracture.audit.sources import AuditSource, records_from_folder, records_from_tfds
from tf_fracture.cli import add_verbose_argument, quiet_tensorflow
from tf_fracture.data.hashing import HASH_BITS

__all__ = ["main"]


def _parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="tf-fracture audit",
        description=(
            "Audit a dataset: class balance per split, corrupt files, exact and near duplicates (perceptual hash) "
            "within and across splits, duplicates with different labels, and patients in several splits. "
            "Prints a report naming every flagged file; exits 0 whatever it finds."
        ),
    )
    parser.add_argument("dataset", nargs="?", help="a TFDS dataset name (ours are registered automatically)")
    parser.add_argument("--data-dir", help="the TFDS data directory the dataset was built in")
    parser.add_argument("--folder", help="audit every image file under this folder instead of a TFDS dataset")
    parser.add_argument(
        "--labels-from-parent",
        action="store_true",
        help="with --folder: label each file by its parent folder's name; of two folders the positive one is "
        "label 1 (recognised by its name, e.g. Fractured vs Non_fractured, or named by --positive)",
    )
    parser.add_argument(
        "--positive",
        metavar="NAME",
        help="the positive class: a folder name with --labels-from-parent, or a label name of the TFDS dataset "
        "(default: recognised from the names: fractured, fracture, positive, abnormal, injury, injured)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    parser.add_argument(
        "--min-correlation",
        type=float,
        default=MIN_CORRELATION,
        metavar="R",
        help="thumbnail correlation that confirms a pHash candidate; -1 keeps every candidate (default: 0.99)",
    )
    parser.add_argument(
        "--near-threshold",
        type=int,
        default=4,
        metavar="N",
        help="largest pHash Hamming distance (of 64 bits) counted as a near duplicate (default: 4)",
    )
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if (args.dataset is None) == (args.folder is None):
        parser.error("give either a TFDS dataset name or --folder PATH (exactly one of them)")
    if args.folder is not None:
        if args.data_dir is not None:
            parser.error("--data-dir applies to TFDS datasets, not to --folder")
        if not os.path.isdir(args.folder):
            parser.error(f"--folder {args.folder!r} is not a directory")
        if args.positive is not None and not args.labels_from_parent:
            parser.error("--positive with --folder needs --labels-from-parent (the folders are the classes)")
    elif args.labels_from_parent:
        parser.error("--labels-from-parent applies to --folder only (TFDS datasets carry their labels)")
    if not 0 <= args.near_threshold <= HASH_BITS:
        parser.error(f"--near-threshold must be in [0, {HASH_BITS}], but got {args.near_threshold}")
    return parser, args


def _read_tfds(name: str, data_dir: str | None, positive: str | None) -> AuditSource:
    try:
        import tf_fracture.datasets  # noqa: F401  (registers our builders)
    except ImportError as e:
        # Datasets registered elsewhere (TFDS's own, a user's) can still be audited.
        warnings.warn(
            f"tf-fracture's datasets are not registered ({e}); only other TFDS datasets are found.", stacklevel=2
        )
    return records_from_tfds(name, data_dir, positive)


def main(argv: Sequence[str] | None = None) -> int:
    parser, args = _parse_args(argv)
    start = time.perf_counter()
    try:
        if args.folder is not None:
            source = records_from_folder(args.folder, args.labels_from_parent, args.positive)
        else:
            quiet_tensorflow(args.verbose)  # only a TFDS dataset needs TensorFlow: a folder is read without it
            source = _read_tfds(args.dataset, args.data_dir, args.positive)
    except ValueError as e:
        parser.error(str(e))
    read_s = time.perf_counter() - start
    report = audit(
        source.records,
        args.near_threshold,
        min_correlation=None if args.min_correlation <= -1 else args.min_correlation,
        source=source.name,
        label_names=source.label_names,
        positive_label=source.positive_label,
        ignored_files=source.ignored_files,
    )
    total_s = time.perf_counter() - start
    print(report.to_text(), end="")
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
            f.write("\n")
        print(f"Wrote the JSON report to {args.json}", file=sys.stderr)
    n = len(source.records)
    print(f"Audited {n} files in {total_s:.1f} s (reading and hashing {read_s:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
