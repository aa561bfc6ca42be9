"""Grad-CAM overlays as PNG: the radiograph the model saw, each heatmap over it, the fracture boxes.

Matplotlib's object API with the Agg canvas (no pyplot, no global figure state), so it runs
headless and in parallel workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tf_fracture.explain.boxes import check_boxes, peak

PANEL_INCHES = 3.2


def overlay_figure(
    image: np.ndarray,
    heatmaps: Mapping[str, np.ndarray],
    *,
    boxes=None,
    title: str | None = None,
    alpha: float = 0.55,
    cmap: str = "jet",
) -> Figure:
    """A figure: the input radiograph, then one panel per heatmap over it, side by side.

    Args:
        image: the preprocessed model input, ``(H, W)`` or ``(H, W, 1)``, values in [0, 255].
        heatmaps: ``{panel title: (H, W) heatmap in [0, 1]}`` (Grad-CAM's and the own CAM's for one image).
        boxes: the image's fracture boxes (normalised ``ymin, xmin, ymax, xmax``), drawn on every
            panel in green; None or empty for none.
        title: the figure's title (e.g. the file name and the probability).
        alpha: the heatmap's opacity where it is hot (from half its peak up); it fades to clear at 0.
        cmap: a Matplotlib colour map name.

    Each heatmap panel rings its peak (argmax) in white: the point the box hit rate tests.
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"Expected a greyscale image (H, W) or (H, W, 1), but got shape {image.shape}.")
    boxes = check_boxes(boxes) if boxes is not None else np.zeros((0, 4))
    panels = 1 + len(heatmaps)
    figure = Figure(figsize=(PANEL_INCHES * panels, PANEL_INCHES + (0.5 if title else 0.25)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    height, width = image.shape
    extent = (0, width, height, 0)  # pixel edges: boxes in normalised units map by *width/*height
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="bilinear")
    axes[0].set_title("input", fontsize=10)
    colormap = matplotlib.colormaps[cmap]
    for ax, (name, heatmap) in zip(axes[1:], heatmaps.items(), strict=True):
        heatmap = np.asarray(heatmap, np.float32)
        if heatmap.shape != image.shape:
            raise ValueError(f"Heatmap {name!r} has shape {heatmap.shape}, but the image {image.shape}.")
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="bilinear")
        # Opacity grows with the heat (full ``alpha`` from half the peak up): cold regions leave the
        # radiograph as it is instead of tinting all of it with the colour map's low end.
        colours = colormap(np.clip(heatmap, 0.0, 1.0))
        colours[..., 3] = alpha * np.clip(2.0 * heatmap, 0.0, 1.0)
        ax.imshow(colours, extent=extent, interpolation="bilinear")
        if heatmap.max() > heatmap.min():
            y, x = peak(heatmap)
            # A hollow ring, not a cross: a small peak (one cell of a fine CAM) stays visible inside it.
            ax.plot(
                [x * width],
                [y * height],
                marker="o",
                markersize=16,
                markerfacecolor="none",
                markeredgecolor="white",
                markeredgewidth=1.5,
            )
        ax.set_title(name, fontsize=10)
    for ax in axes:
        for ymin, xmin, ymax, xmax in boxes:
            ax.add_patch(
                Rectangle(
                    (xmin * width, ymin * height),
                    (xmax - xmin) * width,
                    (ymax - ymin) * height,
                    fill=False,
                    edgecolor="lime",
                    linewidth=1.5,
                )
            )
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    if heatmaps:
        mappable = ScalarMappable(Normalize(0.0, 1.0), colormap)
        figure.colorbar(mappable, ax=list(axes[1:]), fraction=0.04, pad=0.01, label="heat (each map scaled to [0, 1])")
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def save_overlay(path: str | os.PathLike, image, heatmaps, *, boxes=None, title=None, dpi: int = 100, **kwargs) -> str:
    """Writes `overlay_figure` as a PNG at ``path`` (its folder is created); returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure = overlay_figure(image, heatmaps, boxes=boxes, title=title, **kwargs)
    figure.savefig(path, dpi=dpi, format="png")
    return path
