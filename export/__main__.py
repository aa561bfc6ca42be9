"""``tf-fracture export RUN [--quantize Q ... | all]`` (``python -m tf_fracture_export``).

    tf-fracture export runs/demo --quantize all                 # -> runs/demo/export/
    tf-fracture export runs/demo --quantize int8 --calibration-images 500 --out app/models
    tf-fracture export runs/demo --quantize float32 int8 --web site    # + the offline web app in site/

Writes ``model_<q>.tflite`` with its metadata ``model_<q>.json``, ``verification_<q>.json`` and one
``report.md``; prints where they are and the report's table. Exits 1 when a variant fails the
verification (probability or heatmap difference beyond tolerance, int8 probabilities that do not follow
Keras', or an AUROC drop on a split large enough to judge it; see `tf_fracture_export.verify`), 2 on a
bad run or argument.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from tf_fracture import cli
from tf_fracture_export.convert import DEFAULT_CALIBRATION_IMAGES, INT8_IO
from tf_fracture_export.metadata import QUANTIZATIONS
from tf_fracture_export.verify import (
    DEFAULT_AUROC_TOLERANCE,
    DEFAULT_LATENCY_RUNS,
    MIN_AUROC_IMAGES_PER_CLASS,
    PROBABILITY_TOLERANCES,
)

ALL = "all"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-fracture export",
        description=(
            "Export a training run's model to TFLite (batch 1, preprocessed 0-255 greyscale in; out: the fracture "
            "probability, then the class activation map where the classifier has one), with metadata JSON, and "
            "verify each variant against the Keras model on the validation split. "
            f"Probability tolerances: {', '.join(f'{q} {t:g}' for q, t in PROBABILITY_TOLERANCES.items())}."
        ),
    )
    parser.add_argument("run", metavar="RUN", help="a training run folder (config.json + model.keras)")
    parser.add_argument(
        "--quantize",
        nargs="+",
        default=["float32"],
        metavar="Q",
        help=f"variants to export: {', '.join(QUANTIZATIONS)}, or {ALL} (default float32)",
    )
    parser.add_argument("--out", help="output folder (default RUN/export)")
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=DEFAULT_CALIBRATION_IMAGES,
        metavar="N",
        help=f"int8: training images sampled for calibration (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    parser.add_argument("--limit", type=int, metavar="N", help="verify on the first N validation images only")
    parser.add_argument(
        "--auroc-tolerance",
        type=float,
        default=DEFAULT_AUROC_TOLERANCE,
        metavar="X",
        help=(
            f"fail when a variant's AUROC is more than X below Keras' (default {DEFAULT_AUROC_TOLERANCE}), on a "
            f"split with at least {MIN_AUROC_IMAGES_PER_CLASS} images of each class (on fewer it is only reported)"
        ),
    )
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=DEFAULT_LATENCY_RUNS,
        metavar="N",
        help=f"timed runs per thread count (default {DEFAULT_LATENCY_RUNS})",
    )
    parser.add_argument("--no-verify", action="store_true", help="convert only: no verification or report")
    parser.add_argument(
        "--int8-io",
        choices=INT8_IO,
        help="int8: the input and output type (default int8; float32 with --web, as LiteRT.js has no int8 tensors)",
    )
    parser.add_argument(
        "--web",
        metavar="DIR",
        help=(
            "also write the offline web app with the exported variants to DIR: a static site (serve it with any "
            "static server; see the README, The web app); needs `make web` (npm ci) once"
        ),
    )
    return parser


def quantizations(values: Sequence[str]) -> list[str]:
    """``--quantize``'s values: ``all`` alone, or some of `QUANTIZATIONS` (order kept, repeats dropped)."""
    if ALL in values:
        if len(values) > 1:
            raise ValueError(f"--quantize {ALL} stands alone, but got {' '.join(values)}.")
        return list(QUANTIZATIONS)
    unknown = [v for v in values if v not in QUANTIZATIONS]
    if unknown:
        raise ValueError(
            f"Unknown --quantize {', '.join(unknown)}; expected some of {', '.join(QUANTIZATIONS)} or {ALL}."
        )
    return list(dict.fromkeys(values))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    try:
        variants = quantizations(args.quantize)
    except ValueError as error:
        parser.error(str(error))
    for name in ("calibration_images", "limit", "latency_runs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if not 0.0 <= args.auroc_tolerance <= 1.0:
        parser.error(f"--auroc-tolerance must be in [0, 1], got {args.auroc_tolerance}")
    int8_io = args.int8_io or ("float32" if args.web else "int8")
    if args.web and int8_io != "float32" and "int8" in variants:
        parser.error("--web needs --int8-io float32: LiteRT.js, the web app's runtime, has no int8 tensors")
    if args.web:
        from tf_fracture_export import web

        try:
            web.node_modules()  # before the long conversions: the runtimes must be there
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    import tf_fracture.datasets  # noqa: F401  (registers the TFDS builders: an entry point's job)
    from tf_fracture_export.exporter import EXPORT_DIR, export_run
    from tf_fracture_export.verify import REPORT_FILE, VerificationError, markdown_table

    out = args.out or f"{args.run.rstrip('/')}/{EXPORT_DIR}"
    command = shlex.join(["tf-fracture export", *(sys.argv[1:] if argv is None else argv)])
    try:
        results = export_run(
            args.run,
            variants,
            out_dir=out,
            calibration_images=args.calibration_images,
            verify=not args.no_verify,
            limit=args.limit,
            auroc_tolerance=args.auroc_tolerance,
            latency_runs=args.latency_runs,
            command=command,
            int8_io=int8_io,
        )
    except VerificationError as error:
        print(markdown_table(error.reports), file=sys.stderr)
        print(f"\nerror: {args.run}: {error}\nreport: {out}/{REPORT_FILE}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {args.run}: {error}", file=sys.stderr)
        return 2
    for result in results:
        print(f"{result.quantization}: {result.model_path} (metadata {result.metadata_path.name})")
    if args.web:
        try:
            site = web.build_site([r.model_path for r in results], args.web)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {args.web}: {error}", file=sys.stderr)
            return 2
        print(
            f"web app: {site.folder}/index.html ({', '.join(site.models)}; serve the folder, e.g. "
            f"python -m http.server -d {shlex.quote(str(site.folder))})"
        )
    reports = [r.verification for r in results if r.verification is not None]
    if reports:
        print(f"report: {out}/{REPORT_FILE}\n")
        print(markdown_table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
