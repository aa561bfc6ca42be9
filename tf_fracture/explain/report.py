"""What ``tf-fracture explain`` does, as importable functions.

- `load_for_explanation(source)`: a run folder or ``.keras`` file -> the model and the
  preprocessing it was trained with (stored in the model: never guessed).
- `heatmaps_of(...)`: every heatmap of a batch: Grad-CAM per feature map (one per fusion member)
  and the classifier's own class activation map (``"cam"``, see `tf_fracture.explain.cam`).
- `explain_files(...)`: one overlay PNG per image file, the bad files skipped and listed.
- `explain_examples(...)`: overlays of the first positives of a dataset split and the box hit rate
  of each heatmap beside chance, written to ``box_hit_rate.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tf_fracture.data.io import read_each, read_image
from tf_fracture.data.preprocess import PreprocessConfig, preprocess
from tf_fracture.explain.boxes import box_hit_rate, boxes_after_resize
from tf_fracture.explain.cam import MEMBER_CAM_PREFIX, OWN_CAM, OwnCam, own_cam_model, own_class_activation_maps
from tf_fracture.explain.cam import title as title_of
from tf_fracture.explain.gradcam import CamModel, cam_model, explain_batch
from tf_fracture.explain.overlay import save_overlay

HIT_RATE_FILE = "box_hit_rate.json"


HEATMAP_DEFINITIONS = {
    "grad_cam": "Grad-CAM of the backbone's feature map: ReLU(sum_k mean(d logit / d A_k) A_k)",
    OWN_CAM: "the classifier's own class activation map (its logit is the map's spatial mean)",
    MEMBER_CAM_PREFIX: (
        "a fusion member's own class activation map (the member classifier's logit is its spatial mean; "
        "the fusion's logit comes from an MLP on all members' pooled features)"
    ),
}


def heatmap_definition(name: str) -> str:
    """What the heatmap ``name`` is (for the reports)."""
    if name == OWN_CAM:
        return HEATMAP_DEFINITIONS[OWN_CAM]
    if name.startswith(MEMBER_CAM_PREFIX):
        return HEATMAP_DEFINITIONS[MEMBER_CAM_PREFIX]
    return HEATMAP_DEFINITIONS["grad_cam"]


@dataclass(frozen=True)
class Explainer:
    """A model ready to explain: its Grad-CAM graph, its own CAM and the preprocessing its inputs need.

    Attributes:
        model: the loaded model.
        cam: the Grad-CAM graph (`tf_fracture.explain.cam_model`).
        preprocessing: what the model's inputs need.
        source: where the model came from (for the reports).
        own_cam: the model's own CAMs (`tf_fracture.explain.OwnCam`: one for a classifier, one per member
            for a fusion built from classifiers); found from ``model`` when not given, None for a model
            without one (a fusion of bare backbones), ``own_cam_skipped`` saying why.
    """

    model: object
    cam: CamModel
    preprocessing: PreprocessConfig
    source: str
    own_cam: OwnCam | None = None
    own_cam_skipped: str | None = None

    def __post_init__(self):
        if self.own_cam is None and self.own_cam_skipped is None:
            own, skipped = own_cam_model(self.model)
            object.__setattr__(self, "own_cam", own)
            object.__setattr__(self, "own_cam_skipped", skipped)
        if self.own_cam is not None and set(self.own_cam.names) & set(self.cam.names):
            raise ValueError(f"A feature map is named {OWN_CAM!r}, the key of the own CAM: rename the backbone.")

    @property
    def names(self) -> tuple[str, ...]:
        """The Grad-CAM maps' names (one per backbone)."""
        return self.cam.names

    @property
    def heatmap_names(self) -> tuple[str, ...]:
        """Every heatmap's key: the own CAMs' (``"cam"``, ``"cam:<member>"``) if the model has them, then Grad-CAM's."""
        return (self.own_cam.names if self.own_cam is not None else ()) + self.cam.names


def heatmaps_of(explainer: Explainer, inputs: np.ndarray, *, batch_size: int = 8) -> tuple[dict, np.ndarray]:
    """Every heatmap of a batch of model inputs, and the logits.

    Returns:
        ``({name: (B, H, W) float32 in [0, 1]}, logits (B,))`` with the names of
        ``explainer.heatmap_names``: ``"cam"`` for the own CAM (``"cam:<member>"`` for a fusion's
        members), the backbones' for Grad-CAM.
    """
    result = explain_batch(explainer.cam, inputs, batch_size=batch_size)
    maps = {}
    if explainer.own_cam is not None:
        maps, _ = own_class_activation_maps(explainer.own_cam, inputs, batch_size=batch_size)
    maps.update(result.heatmaps)
    return maps, result.logits


@dataclass
class FilesReport:
    """The PNGs written by `explain_files`, and the files skipped ``{path: reason}``."""

    written: list[str] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def model_path(source: str | os.PathLike) -> Path:
    """The ``.keras`` file of a run folder (its ``model.keras``) or the ``.keras`` file itself."""
    from tf_fracture.run_folder import model_file

    return model_file(source)


def default_out_dir(source: str | os.PathLike) -> Path:
    """``RUN/explain`` for a run folder; ``explain/`` beside a ``.keras`` file."""
    source = Path(source)
    return (source if source.is_dir() else source.parent) / "explain"


def load_for_explanation(source: str | os.PathLike) -> Explainer:
    """Loads a run's model and reads the preprocessing it carries.

    Raises:
        ValueError: the model records no preprocessing (built without ``preprocessing=``).
    """
    from tf_fracture.models import load_model

    path = model_path(source)
    model = load_model(path, compile=False)
    stored = getattr(model, "preprocessing", None)
    if not stored:
        raise ValueError(
            f"The model in {str(path)!r} records no preprocessing, so the images it saw cannot be "
            "rebuilt: train it with tf-fracture train (which stores it), or rebuild it with "
            "build_classifier(..., preprocessing=PreprocessConfig(...)) and save it again."
        )
    return Explainer(model, cam_model(model), PreprocessConfig(**stored), str(path))


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def explain_files(
    explainer: Explainer, paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, batch_size: int = 8
) -> FilesReport:
    """One overlay PNG per readable image in ``out_dir``, titled with its fracture probability.

    A file that cannot be read (missing, truncated, not an image) is skipped and recorded in the
    report's ``skipped``; the others are still done.
    """
    report = FilesReport()
    names = _unique_stems([os.fspath(p) for p in paths])
    readable = read_each([os.fspath(p) for p in paths], read_image, report.skipped)
    for chunk in _chunks(readable, batch_size):
        inputs = np.stack([preprocess(image, explainer.preprocessing) for _, image in chunk])
        maps, logits = heatmaps_of(explainer, inputs, batch_size=batch_size)
        probabilities = _sigmoid(logits)
        for i, (path, _) in enumerate(chunk):
            probability = float(probabilities[i])
            heatmaps = {title_of(name): m[i] for name, m in maps.items()}
            title = f"{os.path.basename(path)}   P(fracture) = {probability:.3f}"
            report.written.append(save_overlay(Path(out_dir) / f"{names[path]}.png", inputs[i], heatmaps, title=title))
            report.probabilities[path] = probability
    return report


def explain_examples(
    explainer: Explainer,
    examples: Iterable[Mapping],
    out_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    boxes_feature: str = "fracture_boxes",
    batch_size: int = 8,
    description: Mapping | None = None,
) -> dict:
    """Overlays of the first ``limit`` positive examples and the box hit rate of each heatmap.

    Args:
        explainer: from `load_for_explanation`.
        examples: dicts with NumPy values (``tfds ... .as_numpy_iterator()``): ``image`` (H, W, 1)
            uint8, ``label`` (1 = fracture), ``filename`` and ``boxes_feature`` ((k, 4) normalised
            ``ymin, xmin, ymax, xmax`` of the original image).
        out_dir: where the PNGs and ``box_hit_rate.json`` go.
        limit: how many positives (None for all).
        boxes_feature: the examples' box feature.
        batch_size: images per Grad-CAM batch.
        description: recorded in the JSON (dataset, split, model).

    Returns:
        The report written to ``box_hit_rate.json``: per heatmap (``"cam"``, the model's own CAM, and
        Grad-CAM per backbone) its `BoxHitRate` (hit rate, chance rate, n), what each heatmap is, why
        there is no own CAM where there is none, and per image its probability, its boxes in the model
        input's normalised coordinates (after the preprocessing's resize: padding moves them) and its hits.
    """
    out_dir = Path(out_dir)
    positives = _positives(examples, limit, boxes_feature)
    names = explainer.heatmap_names
    heatmaps = {name: [] for name in names}
    all_boxes, images, stems = [], [], set()
    for chunk in _chunks(positives, batch_size):
        inputs = np.stack([preprocess(image, explainer.preprocessing) for _, image, _ in chunk])
        batch_maps, logits = heatmaps_of(explainer, inputs, batch_size=batch_size)
        probabilities = _sigmoid(logits)
        for i, (filename, image, boxes) in enumerate(chunk):
            boxes = boxes_after_resize(boxes, image.shape, explainer.preprocessing.resize_mode)
            maps = {name: batch_maps[name][i] for name in names}
            probability = float(probabilities[i])
            stem = _safe_stem(filename, len(images))
            stem = stem if stem not in stems else f"{stem}_{len(images)}"
            stems.add(stem)
            caption = f"{filename}   P(fracture) = {probability:.3f}   ({len(boxes)} box{'es' * (len(boxes) != 1)})"
            panels = {title_of(name): m for name, m in maps.items()}
            save_overlay(out_dir / f"{stem}.png", inputs[i], panels, boxes=boxes, title=caption)
            for name in names:
                heatmaps[name].append(maps[name])
            all_boxes.append(boxes)
            images.append(
                {"filename": filename, "png": f"{stem}.png", "probability": probability, "boxes": boxes.tolist()}
            )
    rates = {name: box_hit_rate(maps, all_boxes) for name, maps in heatmaps.items()}
    hits = {name: iter(rate.hits) for name, rate in rates.items()}
    distances = {name: iter(rate.distances) for name, rate in rates.items()}
    for record, boxes in zip(images, all_boxes, strict=True):
        record["peak_in_box"] = {name: next(hits[name]) for name in names} if len(boxes) else None
        record["peak_distance_px"] = _json_safe({name: next(distances[name]) for name in names}) if len(boxes) else None
    report = {
        **dict(description or {}),
        "model": explainer.source,
        "positives": len(images),
        "box_hit_rate": {name: _json_safe(rate.to_dict()) for name, rate in rates.items()},
        "heatmaps": {name: heatmap_definition(name) for name in names},
        "cam_skipped": explainer.own_cam_skipped,
        "images": images,
        "definition": (
            "hit: the heatmap's argmax pixel centre (at the input's size) lies inside one of the image's "
            "fracture boxes; chance_rate: mean fraction of pixels inside a box (the hit rate of a random peak); "
            "n: positives with at least one box; peak_distance_px: the peak's distance to the nearest box in "
            "pixels of the model input (0 inside, null for a flat map)"
        ),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / HIT_RATE_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary_lines(report: Mapping) -> list[str]:
    """The printed summary of `explain_examples`' report: one line per heatmap, the own CAM first."""
    lines = []
    for name, rate in report["box_hit_rate"].items():
        if not rate["n"]:
            lines.append(f"{title_of(name)}: no positive with a fracture box among {report['positives']} explained")
            continue
        hits = round(rate["hit_rate"] * rate["n"])
        lines.append(
            f"{title_of(name)}: box hit rate {rate['hit_rate']:.3f} ({hits}/{rate['n']}), "
            f"chance {rate['chance_rate']:.3f}, n = {rate['n']}"
        )
    if report.get("cam_skipped"):
        lines.append(f"no own CAM: {report['cam_skipped']}")
    return lines


def _positives(examples, limit, boxes_feature):
    count = 0
    for example in examples:
        if limit is not None and count >= limit:
            return
        if int(example["label"]) != 1:
            continue
        if boxes_feature not in example:
            raise ValueError(
                f"The examples have no {boxes_feature!r} feature (they have {sorted(example)}): "
                "the box hit rate needs a dataset with fracture boxes (fracatlas, synthetic_xray)."
            )
        filename = example.get("filename", f"example_{count}")
        if isinstance(filename, bytes):
            filename = filename.decode()
        image = np.asarray(example["image"])
        if image.ndim == 3:
            image = image[..., 0]
        count += 1
        yield str(filename), image, np.asarray(example[boxes_feature], np.float64).reshape(-1, 4)


def _chunks(items, size):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _safe_stem(filename: str, index: int) -> str:
    stem = Path(filename.replace("\\", "/")).stem or f"image_{index}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


def _unique_stems(paths: list[str]) -> dict[str, str]:
    stems, seen = {}, {}
    for i, path in enumerate(paths):
        stem = _safe_stem(path, i)
        seen[stem] = seen.get(stem, 0) + 1
        stems[path] = stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"
    return stems


def _json_safe(values: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}
