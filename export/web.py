"""``tf-fracture export RUN --web DIR``: the exported models as an offline web app (a static site).

The site runs the models in the browser with LiteRT.js (WebAssembly, XNNPACK; WebGPU where the browser
has it) and preprocesses each image with OpenCV.js exactly as in training. Everything it needs is in
``DIR``, so after the first visit it works offline (a service worker caches every file) and installs as
an app (web manifest)::

    DIR/index.html, app.js, preprocess.js, runtime.js, heatmap.js, style.css, icon.svg, icon-*.png
    DIR/manifest.webmanifest, sw.js          # sw.js lists every file of the site and its version
    DIR/models.json                          # the models, in the order the page offers them
    DIR/models/model_<q>.tflite, model_<q>.json
    DIR/vendor/litertjs/core.js, wasm-utils.js, vendor/opencv.js, wasm/litert_wasm_*.{js,wasm}

The page's own files are part of this package (``export/web/``); the runtimes come from the npm
registry, pinned by ``web/package-lock.json`` and installed with ``npm ci`` into ``web/node_modules``
(``make web``), never from a CDN. TensorFlow-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tf_fracture_export.metadata import metadata_path, read_metadata, write_metadata

APP_DIR = Path(__file__).resolve().parent / "web"
# The project's npm folder (package.json, package-lock.json): beside this package in a source checkout.
DEFAULT_NODE_MODULES = Path(__file__).resolve().parent.parent / "web" / "node_modules"
NODE_MODULES_ENV = "TF_FRACTURE_WEB_NODE_MODULES"
APP_FILES = (
    "index.html",
    "app.js",
    "preprocess.js",
    "runtime.js",
    "heatmap.js",
    "style.css",
    "icon.svg",
    "manifest.webmanifest",
)
# PNG icons drawn at build time (the SVG one stays for browsers that take it): Android's install prompt
# wants 192 and 512 px, iOS' home screen 180 px (apple-touch-icon), and neither takes SVG everywhere.
ICONS = {"icon-192.png": 192, "icon-512.png": 512, "apple-touch-icon.png": 180}
SERVICE_WORKER = "sw.js"
MODELS_FILE = "models.json"
# (npm package path, file inside it, where the site serves it)
RUNTIME_FILES = (
    ("@litertjs/core", "dist/index.js", "vendor/litertjs/core.js"),
    ("@litertjs/wasm-utils", "dist/index.js", "vendor/litertjs/wasm-utils.js"),
    ("@techstark/opencv-js", "dist/opencv.js", "vendor/opencv.js"),
    # LiteRT.js picks one of these by what the browser supports (threads where cross-origin isolated,
    # "compat" without relaxed SIMD); the JSPI build (WebNN, partitioned WebGPU) is left out.
    *(
        ("@litertjs/core", f"wasm/litert_wasm_{kind}internal.{ext}", f"wasm/litert_wasm_{kind}internal.{ext}")
        for kind in ("", "threaded_", "compat_")
        for ext in ("js", "wasm")
    ),
)
ORDER = ("float32", "float16", "dynamic", "int8")


@dataclass(frozen=True)
class Site:
    """A built site: its folder, its models (quantizations, in the page's order) and its files."""

    folder: Path
    models: tuple[str, ...]
    files: tuple[str, ...]
    version: str


def node_modules(path: str | os.PathLike | None = None) -> Path:
    """The npm folder holding the runtimes: ``path``, else ``$TF_FRACTURE_WEB_NODE_MODULES``, else ``web/node_modules``.

    Raises:
        FileNotFoundError: a runtime file is missing there; the message says how to install them.
    """
    folder = Path(path or os.environ.get(NODE_MODULES_ENV) or DEFAULT_NODE_MODULES)
    missing = [
        f"{package}/{inside}" for package, inside, _ in RUNTIME_FILES if not (folder / package / inside).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"The web app's runtimes are not installed in {folder} (missing {missing[0]}"
            f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}): run `make web` (npm ci in the project's "
            f"web/ folder), or point {NODE_MODULES_ENV} at a node_modules folder that has them."
        )
    return folder


def build_site(
    model_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, modules: str | os.PathLike | None = None
) -> Site:
    """Writes the static site for the given exported models into ``out_dir``.

    The site is written to a temporary folder beside ``out_dir`` and moved into place at the end, so a
    failed build leaves nothing half-written and a rebuild replaces the old site whole.

    Args:
        model_paths: ``.tflite`` files written by ``tf-fracture export``, each with its ``.json`` metadata
            beside it; float32, float16, dynamic, and int8 exported with ``int8_io="float32"`` (LiteRT.js
            has no int8 tensors).
        out_dir: the site's folder (replaced if it exists and holds a site built here).
        modules: the npm folder with the runtimes (`node_modules`).

    Raises:
        FileNotFoundError: a model, its metadata or a runtime file is missing.
        ValueError: no model, two models of one quantization, an int8 model with int8 input, or an
            ``out_dir`` that exists and is not a site.
    """
    modules = node_modules(modules)
    out_dir = Path(out_dir)
    models = _models(model_paths)
    if out_dir.exists() and not (out_dir / SERVICE_WORKER).is_file():
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise ValueError(
                f"{out_dir} exists and is not a site built by tf-fracture (no {SERVICE_WORKER}): choose another "
                "folder, or empty it first."
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name in APP_FILES:
            shutil.copyfile(APP_DIR / name, staging / name)
        for name, size in ICONS.items():
            (staging / name).write_bytes(icon_png(size))
        for package, inside, target in RUNTIME_FILES:
            (staging / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(modules / package / inside, staging / target)
        entries = []
        (staging / "models").mkdir()
        for quantization, model_path, metadata in models:
            shutil.copyfile(model_path, staging / "models" / model_path.name)
            # The run's name, not a path on this machine.
            site_metadata = metadata.replace(source_run=Path(metadata.source_run).name)
            write_metadata(site_metadata, metadata_path(staging / "models" / model_path.name))
            entries.append(
                {
                    "quantization": quantization,
                    "model": f"models/{model_path.name}",
                    "metadata": f"models/{model_path.stem}.json",
                    "bytes": model_path.stat().st_size,
                }
            )
        (staging / MODELS_FILE).write_text(json.dumps({"models": entries}, indent=2) + "\n")
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        version = _version(staging, files)
        worker = (APP_DIR / SERVICE_WORKER).read_text()
        for placeholder, value in (("__VERSION__", version), ('"__FILES__"', json.dumps(["./", *files]))):
            if placeholder not in worker:
                raise RuntimeError(f"{APP_DIR / SERVICE_WORKER} lacks its placeholder {placeholder}.")
            worker = worker.replace(placeholder, value)
        (staging / SERVICE_WORKER).write_text(worker)
        staging.chmod(0o755)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            out_dir.rename(old / "site")
            staging.rename(out_dir)
            shutil.rmtree(old)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Site(out_dir, tuple(q for q, _, _ in models), tuple([*files, SERVICE_WORKER]), version)


def _models(model_paths: Sequence[str | os.PathLike]):
    if not model_paths:
        raise ValueError("No model for the site: export at least one variant (tf-fracture export RUN --web DIR).")
    models = {}
    for path in map(Path, model_paths):
        if not path.is_file():
            raise FileNotFoundError(f"No model at {path}: export the run first (tf-fracture export).")
        metadata = read_metadata(path.with_suffix(".json"))
        if metadata.io_dtype != "float32":
            raise ValueError(
                f"{path}: an int8 model with int8 input and outputs, which LiteRT.js cannot feed (it has no int8 "
                "tensors): export it with `tf-fracture export RUN --quantize int8 --web DIR`, or --int8-io float32."
            )
        if metadata.quantization in models:
            raise ValueError(
                f"Two {metadata.quantization} models for one site: {models[metadata.quantization][0]} and {path}."
            )
        models[metadata.quantization] = (path, metadata)
    return [(q, *models[q]) for q in ORDER if q in models]


def icon_png(size: int) -> bytes:
    """The app's icon as a ``size`` x ``size`` PNG: icon.svg's drawing (a bone broken by an orange line)."""
    import cv2
    import numpy as np

    scale = 8  # drawn large, then shrunk with area averaging: smooth edges
    side = size * scale
    unit = side / 96  # icon.svg's view box is 96 x 96
    image = np.zeros((side, side, 3), np.uint8)
    image[:] = (0x18, 0x13, 0x11)  # BGR of #111318

    def points(*xy):
        return (np.array(xy, np.float64).reshape(-1, 1, 2) * unit).astype(np.int32)

    ivory, orange = (0xDF, 0xE6, 0xE8), (0x3D, 0x6A, 0xFF)
    cv2.line(image, *[tuple(p) for p in points((30, 66), (66, 30)).reshape(-1, 2)], ivory, int(12 * unit), cv2.LINE_AA)
    for x, y in ((24, 64), (32, 72), (64, 24), (72, 32)):  # the knobs at both ends
        cv2.circle(image, tuple(points((x, y)).reshape(2)), int(8 * unit), ivory, -1, cv2.LINE_AA)
    crack = points((38, 42), (46, 46), (46, 50), (54, 58))
    cv2.polylines(image, [crack], False, orange, int(4 * unit), cv2.LINE_AA)
    small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    ok, png = cv2.imencode(".png", small)
    if not ok:
        raise RuntimeError("OpenCV could not encode the app icon as PNG.")
    return png.tobytes()


def _version(folder: Path, files: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0")
        with open(folder / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
