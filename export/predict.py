"""``tf-fracture predict MODEL.tflite IMAGE... [--json] [--threads N] [--threshold NAME] [--heatmap DIR]``

Runs an exported model on radiographs (PNG, JPEG, DICOM) with LiteRT, NumPy and OpenCV only, without
TensorFlow, exactly as an app would: read, preprocess as the metadata beside the model says, run,
label at the operating threshold. Also ``python -m tf_fracture_export.predict``.

Prints one line per image, ``PATH<TAB>PROBABILITY<TAB>LABEL``, and lists the files it skipped (with
the reason) on stderr. ``--json`` prints one JSON object instead (`to_json`)::

    {"model": "...", "quantization": "int8", "labels": ["normal", "fracture"],
     "threshold": {"name": "youden", "value": 0.41},
     "predictions": [{"path": "a.png", "probability": 0.81, "label": "fracture",
                      "threshold": 0.41, "threshold_name": "youden", "heatmap": null}, ...],
     "skipped": [{"path": "b.jpg", "reason": "truncated JPEG data (no end-of-image marker)"}]}

``--heatmap DIR`` also writes, for each image read, a PNG of the model's class activation map (its
second output) over the preprocessed ``S x S`` image the model saw, to ``DIR/<file stem>_heatmap.png``
(`tf_fracture_export.heatmap`: the map upsampled bilinearly, ``sigmoid`` of it as a per-position
probability, JET colours whose opacity grows with it); the lines get the PNG as a fourth column and
the JSON its path in ``"heatmap"``. A model exported without a CAM output is refused (exit 2).

Exit status: 0 when at least one image was predicted (bad files are listed, not fatal);
`EXIT_NO_IMAGES` (1) when no image could be read; `EXIT_BAD_MODEL` (2) when the model, its metadata
or an argument is wrong.

Example:
    tf-fracture predict runs/demo/export/model_int8.tflite xrays/*.png study.dcm --threads 2
    tf-fracture predict runs/demo/export/model_float32.tflite a.png --heatmap heatmaps/   # heatmaps/a_heatmap.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from tf_fracture_export.predictor import Predictions, Predictor

EXIT_NO_IMAGES = 1
EXIT_BAD_MODEL = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-fracture predict",
        description="Fracture probability of each radiograph, from an exported .tflite model (no TensorFlow).",
    )
    parser.add_argument("model", help="the .tflite model; its metadata JSON (same name, .json) must be beside it")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG or DICOM files")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N", help="CPU threads for LiteRT")
    parser.add_argument(
        "--threshold",
        default=None,
        metavar="NAME",
        help="operating threshold for the label, by name in the metadata (default: the metadata's default)",
    )
    parser.add_argument(
        "--heatmap",
        default=None,
        metavar="DIR",
        help="also write each image's class activation map over the model's input as DIR/<stem>_heatmap.png",
    )
    return parser


def to_json(predictor: Predictor, result: Predictions) -> dict[str, Any]:
    """The ``--json`` document: the model, the threshold, one entry per prediction, and the skipped files."""
    return {
        "model": str(predictor.model_path),
        "quantization": predictor.metadata.quantization,
        "labels": list(predictor.labels),
        "threshold": {"name": predictor.threshold_name, "value": predictor.threshold},
        "predictions": [prediction.to_dict() for prediction in result.predictions],
        "skipped": [{"path": path, "reason": reason} for path, reason in result.skipped.items()],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        predictor = Predictor(args.model, num_threads=args.threads, threshold=args.threshold)
    except (FileNotFoundError, ValueError) as error:
        print(f"tf-fracture predict: {error}", file=sys.stderr)
        return EXIT_BAD_MODEL
    try:
        result = predictor.predict_files(args.images, heatmap_dir=args.heatmap)
    except ValueError as error:  # --heatmap for a model without a CAM output, refused before reading anything
        print(f"tf-fracture predict: {error}", file=sys.stderr)
        return EXIT_BAD_MODEL
    except OSError as error:  # --heatmap DIR cannot be created or written
        print(f"tf-fracture predict: cannot write the heatmaps to {args.heatmap}: {error}", file=sys.stderr)
        return EXIT_BAD_MODEL
    if args.json:
        print(json.dumps(to_json(predictor, result), indent=2))
    else:
        for prediction in result.predictions:
            heatmap = f"\t{prediction.heatmap}" if args.heatmap is not None else ""
            print(f"{prediction.path}\t{prediction.probability:.4f}\t{prediction.label}{heatmap}")
    if result.skipped:
        lines = "".join(f"\n  {path}: {reason}" for path, reason in result.skipped.items())
        print(f"tf-fracture predict: skipped {len(result.skipped)} unreadable file(s):{lines}", file=sys.stderr)
    if not result.predictions:
        print(
            f"tf-fracture predict: none of the {len(args.images)} image(s) could be read; "
            "pass PNG, JPEG or DICOM files (see the reasons above).",
            file=sys.stderr,
        )
        return EXIT_NO_IMAGES
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
