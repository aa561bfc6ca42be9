"""Explanation: Grad-CAM heatmaps from each backbone's feature map (one per fusion member), overlays
over the radiograph, and the box hit rate (how often a heatmap's peak falls in a fracture box).

    python -m tf_fracture.explain RUN IMAGE... [--out DIR]
    python -m tf_fracture.explain RUN --dataset fracatlas --split test [--limit N]

Import-light: ``import tf_fracture.explain`` loads neither TensorFlow nor Matplotlib (``python -m``
imports this package before the CLI can hide TensorFlow's start-up log); the public names are
loaded from their modules on first use.
"""

import importlib

_EXPORTS = {
    "BoxHitRate": "tf_fracture.explain.boxes",
    "box_area_fraction": "tf_fracture.explain.boxes",
    "box_hit_rate": "tf_fracture.explain.boxes",
    "boxes_after_resize": "tf_fracture.explain.boxes",
    "peak": "tf_fracture.explain.boxes",
    "peak_in_boxes": "tf_fracture.explain.boxes",
    "CamModel": "tf_fracture.explain.gradcam",
    "GradCamResult": "tf_fracture.explain.gradcam",
    "cam_model": "tf_fracture.explain.gradcam",
    "explain_batch": "tf_fracture.explain.gradcam",
    "grad_cam": "tf_fracture.explain.gradcam",
    "heatmap_from_gradients": "tf_fracture.explain.gradcam",
    "upsample_and_scale": "tf_fracture.explain.gradcam",
    "overlay_figure": "tf_fracture.explain.overlay",
    "save_overlay": "tf_fracture.explain.overlay",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
