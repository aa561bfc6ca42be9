"""Explanation: the classifier's own class activation map (CAM: its logit is the map's mean; one
per member for a fusion built from classifiers) and Grad-CAM heatmaps from each backbone's feature
map (one per fusion member), overlays over the radiograph, and the box hit rate of each (how often a
heatmap's peak falls in a fracture box) beside chance.

    tf-fracture explain RUN IMAGE... [--out DIR]
    tf-fracture explain RUN --dataset fracatlas --split test [--limit N]

Import-light: ``import tf_fracture.explain`` loads neither TensorFlow nor Matplotlib (``python -m``
imports this package before the CLI can hide TensorFlow's start-up log); the public names are
loaded from their modules on first use.
"""

from tf_fracture.lazy import lazy_exports

_EXPORTS = {
    "BoxHitRate": "tf_fracture.explain.boxes",
    "box_area_fraction": "tf_fracture.explain.boxes",
    "box_hit_rate": "tf_fracture.explain.boxes",
    "boxes_after_resize": "tf_fracture.explain.boxes",
    "peak": "tf_fracture.explain.boxes",
    "peak_in_boxes": "tf_fracture.explain.boxes",
    "peak_distance": "tf_fracture.explain.boxes",
    "OWN_CAM": "tf_fracture.explain.cam",
    "OwnCam": "tf_fracture.explain.cam",
    "class_activation_maps": "tf_fracture.explain.cam",
    "own_cam_model": "tf_fracture.explain.cam",
    "own_class_activation_maps": "tf_fracture.explain.cam",
    "heatmaps_of": "tf_fracture.explain.report",
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

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
