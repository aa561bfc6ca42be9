"""``tf-fracture export-split``: prepared TFDS splits as PNG files + a manifest, for readers
without TensorFlow (the PyTorch VLM track, ``vlm_torch.data``).

    tf-fracture export-split --dataset fracatlas --manual-dir FracAtlas/ --out exports/fracatlas
    tf-fracture export-split --dataset synthetic_xray --builder-config tiny --split test --out x
    tf-fracture export-split --config runs/paper-finetune-convnext/config.json --out exports/elbow

The same TFDS builders, configs and splits the CNN side trains and evaluates on, read in the same fixed
order, so that a CNN test image is a VLM test image. Writes

    OUT/dataset.json                 dataset, builder config, version, class names, split sizes
    OUT/<split>/manifest.csv         id, file, label, filename, group (+ body_part and the dataset's metadata)
    OUT/<split>/images/<id>.png      the image exactly as the builder stored it (8-bit greyscale PNG, lossless)

Running the command again resumes an interrupted export and changes nothing in a finished one: an image
file already holding the right bytes is left alone, and every file is written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from tf_fracture import cli

MANIFEST = "manifest.csv"
DATASET_INFO = "dataset.json"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-fracture export-split",
        description="Write prepared TFDS splits as PNG images + manifest.csv (+ dataset.json) for the VLM track.",
        epilog="Rerunning the same command resumes an interrupted export; a finished one is left unchanged.",
    )
    parser.add_argument("--out", required=True, help="the export folder (OUT/<split>/manifest.csv, images/)")
    parser.add_argument("--dataset", help="a dataset of tf_fracture.configs.datasets (synthetic_xray, fracatlas, ...)")
    parser.add_argument("--config", help="a CNN run's config.json: export its data (dataset, builder config, dirs)")
    parser.add_argument("--builder-config", help="TFDS builder config (default: the dataset's default)")
    parser.add_argument(
        "--split",
        dest="splits",
        action="append",
        metavar="SPLIT",
        help="a split to export (repeatable; default: the dataset's train, validation and test splits)",
    )
    parser.add_argument("--data-dir", help="TFDS data directory (default: TFDS' default, ~/tensorflow_datasets)")
    parser.add_argument("--manual-dir", help="manually downloaded data (FracAtlas/ folder, MURA-v1.1/, elbow images)")
    return parser


def resolve_data(args: argparse.Namespace):
    """The :class:`~tf_fracture.configs.DataConfig` to export: ``--config``'s data or ``--dataset``, then flags."""
    import dataclasses

    from tf_fracture.configs import DataConfig, ExperimentConfig

    if args.config:
        if args.dataset:
            raise ValueError("--config names the dataset already: drop --dataset.")
        data = ExperimentConfig.from_json(args.config).data
    elif args.dataset:
        data = DataConfig(dataset=args.dataset)
    else:
        raise ValueError("Name the data: --dataset NAME, or --config RUN/config.json.")
    changes = {
        key: value
        for key, value in (
            ("builder_config", args.builder_config),
            ("data_dir", args.data_dir),
            ("manual_dir", args.manual_dir),
        )
        if value is not None
    }
    return dataclasses.replace(data, **changes)


def export_splits(data, splits: Sequence[str], out_dir: str | os.PathLike) -> dict:
    """Writes each split of ``data`` (a DataConfig) under ``out_dir``; returns the ``dataset.json`` content.

    Raises:
        ValueError: ``out_dir`` holds an export of another dataset, builder config or version.
    """
    import tensorflow_datasets as tfds

    from tf_fracture.configs.datasets import get_dataset_spec
    from tf_fracture.data.sources import load_split, split_metadata, tfds_builder

    spec = get_dataset_spec(data.dataset)
    builder_config = data.resolved_builder_config()
    builder = tfds_builder(data)
    info = _read_info(out_dir)
    identity = {"dataset": data.dataset, "builder_config": builder_config, "version": str(builder.VERSION)}
    if info and any(info.get(k) != v for k, v in identity.items()):
        raise ValueError(
            f"{os.fspath(out_dir)!r} holds an export of {info.get('dataset')}/{info.get('builder_config')} "
            f"{info.get('version')}, not {data.dataset}/{builder_config} {identity['version']}: "
            "choose another --out."
        )
    info = {**identity, "splits": {}, **{k: v for k, v in info.items() if k not in identity}}
    for split in splits:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
            raise ValueError(f"Export whole splits by name (e.g. 'test'), not {split!r}: it names the export's folder.")
    for split in splits:
        where = {"builder_config": builder_config, "data_dir": data.data_dir, "manual_dir": data.manual_dir}
        meta = split_metadata(data.dataset, load_split(data.dataset, split, **where, decode_images=False))
        encoded = load_split(data.dataset, split, **where, decode_images=False).map(lambda e: e["image"])
        rows = _rows(spec, meta)
        split_dir = os.path.join(out_dir, split)
        os.makedirs(os.path.join(split_dir, "images"), exist_ok=True)
        written = 0
        for row, png in zip(rows, tfds.as_numpy(encoded), strict=True):
            written += _write_if_changed(os.path.join(split_dir, row["file"]), _as_png(png, row["filename"]))
        _write_manifest(os.path.join(split_dir, MANIFEST), rows)
        labels = meta["labels"]
        info["splits"][split] = {"n": int(labels.size), "n_positive": int(labels.sum())}
        print(f"{data.dataset}/{split}: {labels.size} images ({written} written) -> {split_dir}", flush=True)
    builder_info = builder.info
    info["class_names"] = [str(n) for n in builder_info.features["label"].names]
    info["written_by"] = "tf-fracture export-split"
    _write_atomically(os.path.join(out_dir, DATASET_INFO), (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    return info


def _rows(spec, meta: dict[str, np.ndarray]) -> list[dict[str, str]]:
    """One manifest row per example: id, file, label, filename, group, and body_part / metadata where present."""
    rows, used = [], {}
    scalar_features = [f for f in spec.metadata_features if f in meta and meta[f].dtype != object]
    for i, filename in enumerate(meta["filenames"]):
        base = _UNSAFE.sub("_", os.path.splitext(str(filename))[0].replace("/", "__")).strip("._") or "image"
        count = used.get(base, 0)
        used[base] = count + 1
        image_id = base if count == 0 else f"{base}-{count}"
        row = {
            "id": image_id,
            "file": f"images/{image_id}.png",
            "label": str(int(meta["labels"][i])),
            "filename": str(filename),
            "group": str(meta["groups"][i]),
        }
        if "body_parts" in meta:
            part = int(meta["body_parts"][i])
            row["body_part"] = spec.body_part_names[part] if 0 <= part < len(spec.body_part_names) else ""
        for feature in scalar_features:
            if feature in row:  # MURA's body_part: the name is there already, not the class id
                continue
            value = meta[feature][i]
            row[feature] = str(int(value) if isinstance(value, np.bool_ | bool) else value)
        rows.append(row)
    if len(used) != len(rows):
        print(f"note: {len(rows) - len(used)} file name(s) repeat; their ids carry a -N suffix", file=sys.stderr)
    return rows


def _as_png(data: bytes, name: str) -> bytes:
    """The builder's encoded image as PNG bytes: as stored when it is a PNG, else decoded and re-encoded."""
    if data[:8] == _PNG_MAGIC:
        return bytes(data)
    import cv2

    from tf_fracture.data.io import decode_image

    ok, png = cv2.imencode(".png", decode_image(bytes(data), name))
    if not ok:
        raise RuntimeError(f"could not encode {name!r} as PNG")
    return png.tobytes()


def _write_if_changed(path: str, data: bytes) -> int:
    if os.path.isfile(path) and os.path.getsize(path) == len(data):
        with open(path, "rb") as f:
            if f.read() == data:
                return 0
    _write_atomically(path, data)
    return 1


def _write_atomically(path: str, data: bytes) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_manifest(path: str, rows: list[dict[str, str]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomically(path, buffer.getvalue().encode("utf-8"))


def _read_info(out_dir) -> dict:
    path = os.path.join(out_dir, DATASET_INFO)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    import tf_fracture.datasets  # noqa: F401  (registers the TFDS builders: an entry point's job)

    try:
        data = resolve_data(args)
        splits = args.splits or [data.train_split, data.validation_split, data.test_split]
        export_splits(data, list(dict.fromkeys(splits)), args.out)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    print(f"Export in {args.out}: {DATASET_INFO}, <split>/{MANIFEST}, <split>/images/", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
