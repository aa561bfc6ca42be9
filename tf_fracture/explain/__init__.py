"""Explanation: Grad-CAM heatmaps from each backbone's feature map (one per fusion member), overlays
over the radiograph, and the box hit rate (how often a heatmap's peak falls in a fracture box).

    python -m tf_fracture.explain RUN IMAGE... [--out DIR]
    python -m tf_fracture.explain RUN --dataset fracatlas --split test [--limit N]
"""

from tf_fracture.explain.boxes import (
    BoxHitRate,
    box_area_fraction,
    box_hit_rate,
    boxes_after_resize,
    peak,
    peak_in_boxes,
)
from tf_fracture.explain.gradcam import (
    CamModel,
    GradCamResult,
    cam_model,
    explain_batch,
    grad_cam,
    heatmap_from_gradients,
    upsample_and_scale,
)
from tf_fracture.explain.overlay import overlay_figure, save_overlay

__all__ = [
    "BoxHitRate",
    "CamModel",
    "GradCamResult",
    "box_area_fraction",
    "box_hit_rate",
    "boxes_after_resize",
    "cam_model",
    "explain_batch",
    "grad_cam",
    "heatmap_from_gradients",
    "overlay_figure",
    "peak",
    "peak_in_boxes",
    "save_overlay",
    "upsample_and_scale",
]
