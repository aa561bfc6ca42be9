"""Synthetic radiograph-like images with and without fractures, deterministic per (seed, index).

The built-in dataset for demos and tests (``synthetic_xray`` in TFDS). Each image is rendered from
a projected-attenuation model: a limb of soft tissue (muscle and a fat layer), one or two long
bones drawn as hollow capsules (a bright cortex, a darker medulla, flared ends, trabecular
texture), an exposure curve, heel effect, collimation, a lead marker, blur, quantum noise and film
grain. Half the images carry a fracture on one bone: a thin lucent line (complete or
incomplete), a displaced fracture (the distal fragment shifted, angulated, with a gap or an
overlap) or a cortical step.

It is designed to be learnable but not trivial. The nuisance variation (exposure, contrast,
limb and bone size, pose, number of bones, collimation, markers) is drawn independently of the
label and is large, while a fracture changes only a few pixels on one bone, so global image
statistics carry almost no information about the label (a logistic regression on the mean, the
standard deviation and a histogram scores AUROC ~0.5), but a small CNN learns it.

The scene, the fracture and the noise come from independent random streams, so
``generate_radiograph(i, fracture=False)`` and ``generate_radiograph(i, fracture=True)`` are the
same radiograph except near the fractured bone.

Example:
    >>> from tf_fracture.data.synthetic import generate_radiograph
    >>> sample = generate_radiograph(3, size=128, seed=0)
    >>> sample.image.shape, sample.image.dtype, sample.label in (0, 1)
    ((128, 128), dtype('uint8'), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from tf_fracture.validation import check_int

FRACTURE_KINDS = ("none", "lucent_line", "displaced", "cortical_step")
LABEL_NAMES = ("normal", "fracture")

# The renderer's geometry is written for a 256-px image and scaled to the requested size.
_REFERENCE_SIZE = 256
_MIN_SIZE = 32
# Independent random streams: the label, the scene (nuisance), the fracture and the noise.
_LABEL_STREAM, _SCENE_STREAM, _FRACTURE_STREAM, _NOISE_STREAM = 0, 1, 2, 3
_KIND_PROBABILITIES = {"lucent_line": 0.4, "displaced": 0.3, "cortical_step": 0.3}


@dataclass(frozen=True, eq=False)
class SyntheticRadiograph:
    """One generated radiograph and what was drawn in it.

    Args:
        image: uint8 array of shape ``(size, size)``; bright is dense, as on a radiograph.
        label: 1 for a fracture, 0 for normal.
        patient_id: unique per (seed, index); every synthetic patient has one image.
        index: the image's index.
        seed: the generator seed.
        num_bones: 1 or 2 long bones.
        fracture_kind: one of `FRACTURE_KINDS` (``"none"`` when ``label == 0``).
        fracture_box: ``(ymin, xmin, ymax, xmax)`` of the fracture region in [0, 1], or ``None``.
        bone_angle: orientation of the main bone in degrees, in [0, 180).
        exposure: the exposure factor of the attenuation-to-brightness curve.
        bone_mask: bool ``(size, size)``, where bone attenuation is present.
        fracture_mask: bool ``(size, size)``, the pixels the fracture changed near its site
            (empty when ``label == 0``).
    """

    image: np.ndarray
    label: int
    patient_id: str
    index: int
    seed: int
    num_bones: int
    fracture_kind: str
    fracture_box: tuple[float, float, float, float] | None
    bone_angle: float
    exposure: float
    bone_mask: np.ndarray
    fracture_mask: np.ndarray


@dataclass(frozen=True)
class _Bone:
    cx: float
    cy: float
    angle: float  # radians, direction of the long axis
    radius: float  # outer radius of the shaft, px
    medulla: float  # inner / outer radius of the shaft
    half_length: float  # px, to the start of the rounded end
    flare: float  # relative widening of the ends
    marrow: float  # attenuation of the marrow relative to cortex


@dataclass(frozen=True)
class _Fracture:
    kind: str
    bone: int
    x0: float
    y0: float
    normal: tuple[float, float]  # unit normal of the fracture line
    depth: float  # lucency of the line, 0..1
    width: float  # Gaussian sigma of the line, px
    extent: float  # fraction of the bone width the line crosses (1 = complete)
    side: float  # the cortex an incomplete line starts from (+1 or -1)
    shift: tuple[float, float]  # translation of the distal fragment, px
    rotation: float  # angulation of the distal fragment, radians


def label_for_index(index: int, seed: int = 0) -> int:
    """The default label of an index: exactly one of each pair (2k, 2k+1) is a fracture, which one is random."""
    _check_index_and_seed(index, seed)
    first = int(np.random.default_rng([seed, index // 2, _LABEL_STREAM]).integers(2))
    return int(index % 2 == first)


def patient_id_for_index(index: int, seed: int = 0) -> str:
    """The unique patient id of an image."""
    return f"synthetic-s{seed}-p{index:09d}"


def generate_radiograph(
    index: int, *, size: int = 256, seed: int = 0, fracture: bool | None = None
) -> SyntheticRadiograph:
    """Renders the radiograph ``index`` of the synthetic set with ``seed``.

    Args:
        index: non-negative image index; the same (seed, index, size) always gives the same image.
        size: side of the square image in pixels (at least 32).
        seed: non-negative seed of the whole set.
        fracture: force a fracture (``True``) or none (``False``); ``None`` takes the index's
            default label (`label_for_index`, exactly balanced over each pair of indices).

    Returns:
        A `SyntheticRadiograph`.
    """
    _check_index_and_seed(index, seed)
    check_int("size", size, minimum=_MIN_SIZE)
    if fracture is not None and not isinstance(fracture, bool | np.bool_):
        raise ValueError(f"Expected `fracture` to be True, False or None, but got `fracture={fracture!r}`.")
    label = label_for_index(index, seed) if fracture is None else int(fracture)
    scale = size / _REFERENCE_SIZE

    scene = np.random.default_rng([seed, index, _SCENE_STREAM])
    bones, tissue_params = _draw_scene(scene, size, scale)
    exposure_params = _draw_exposure(scene)
    extras = _draw_extras(scene, size)
    # The fracture has its own stream, so forcing `fracture` changes nothing else in the image.
    fracture_params = _draw_fracture(np.random.default_rng([seed, index, _FRACTURE_STREAM]), bones, size, scale)
    noise = np.random.default_rng([seed, index, _NOISE_STREAM])

    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    texture = _smooth_noise(scene, size, sigma=max(0.6, 1.2 * scale), amplitude=1.0)
    tissue = _render_tissue(xs, ys, bones, tissue_params, scene, size)
    clean = [_render_bone(xs, ys, bone) for bone in bones]
    rendered = list(clean)
    fracture_mask = np.zeros((size, size), bool)
    if label:
        f = fracture_params
        rendered[f.bone] = _render_fractured_bone(xs, ys, bones[f.bone], f)
        fracture_mask = _fracture_region(xs, ys, clean[f.bone], rendered[f.bone], bones[f.bone], f)
    bone = sum(rendered) * (1.0 + exposure_params["trabecular"] * texture)
    attenuation = tissue_params["level"] * tissue + exposure_params["bone_level"] * bone

    # The attenuation through the middle of the shaft, which the exposure is set for.
    reference = tissue_params["level"] * _tissue_thickness(tissue_params, scale) + exposure_params["bone_level"]
    image = _expose(attenuation, reference, exposure_params, extras, xs, ys, size)
    image = _degrade(image, noise, size, scale)
    image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)

    box = None
    if fracture_mask.any():
        rows, cols = np.nonzero(fracture_mask)
        box = (rows.min() / size, cols.min() / size, (rows.max() + 1) / size, (cols.max() + 1) / size)
    return SyntheticRadiograph(
        image=image,
        label=label,
        patient_id=patient_id_for_index(index, seed),
        index=int(index),
        seed=int(seed),
        num_bones=len(bones),
        fracture_kind=fracture_params.kind if label else "none",
        fracture_box=tuple(float(v) for v in box) if box else None,
        bone_angle=float(math.degrees(bones[0].angle) % 180.0),
        exposure=float(exposure_params["exposure"]),
        bone_mask=sum(rendered) > 1e-3,
        fracture_mask=fracture_mask,
    )


def _check_index_and_seed(index, seed):
    check_int("index", index, minimum=0)
    check_int("seed", seed, minimum=0)


# --- the scene --------------------------------------------------------------------------------


def _draw_scene(rng, size, scale):
    # Long bones are usually imaged along the detector's long axis: vertical, give or take 30 degrees.
    angle = math.pi / 2 + math.radians(rng.uniform(-30.0, 30.0))
    cx, cy = rng.uniform(0.3, 0.7, size=2) * size
    radius = rng.uniform(12.0, 24.0) * scale
    bones = [
        _Bone(
            cx=cx,
            cy=cy,
            angle=angle,
            radius=radius,
            medulla=rng.uniform(0.5, 0.8),
            # Long bones often run off the image; otherwise one or both rounded ends show.
            half_length=rng.uniform(0.35, 0.9) * size,
            flare=rng.uniform(0.15, 0.6),
            marrow=rng.uniform(0.05, 0.25),
        )
    ]
    if rng.random() < 0.5:  # a paired bone (radius/ulna, tibia/fibula), roughly parallel
        radius2 = radius * rng.uniform(0.5, 0.95)
        gap = rng.uniform(0.3, 1.5) * radius
        side = rng.choice([-1.0, 1.0])
        offset = side * (radius + radius2 + gap)
        along = rng.uniform(-0.15, 0.15) * size
        bones.append(
            _Bone(
                cx=cx - math.sin(angle) * offset + math.cos(angle) * along,
                cy=cy + math.cos(angle) * offset + math.sin(angle) * along,
                angle=angle + math.radians(rng.uniform(-8.0, 8.0)),
                radius=radius2,
                medulla=rng.uniform(0.45, 0.75),
                half_length=rng.uniform(0.3, 0.9) * size,
                flare=rng.uniform(0.1, 0.5),
                marrow=rng.uniform(0.05, 0.25),
            )
        )
    span = radius if len(bones) == 1 else radius + bones[1].radius * 2 + abs(offset)
    tissue = {
        "level": rng.uniform(0.25, 0.9),
        "half_width": span * rng.uniform(1.6, 3.2) + rng.uniform(5.0, 20.0) * scale,
        "center_shift": rng.uniform(-0.3, 0.3),
        "fat": rng.uniform(0.05, 0.2),
        "muscle_texture": rng.uniform(0.05, 0.2),
    }
    return bones, tissue


def _draw_exposure(rng):
    return {
        "exposure": float(np.exp(rng.uniform(np.log(0.7), np.log(3.0)))),
        "bone_level": rng.uniform(0.6, 1.6),
        "trabecular": rng.uniform(0.03, 0.15),
        "gamma": float(np.exp(rng.uniform(np.log(0.6), np.log(1.7)))),
        "black": rng.uniform(0.0, 0.25),
        "white": rng.uniform(0.6, 1.0),
        "heel": rng.uniform(-0.15, 0.15),
        "heel_angle": rng.uniform(0.0, 2 * math.pi),
    }


def _draw_extras(rng, size):
    extras = {"collimation": None, "marker": None}
    if rng.random() < 0.35:
        # A rotated collimation rectangle; outside it the film is unexposed (bright).
        extras["collimation"] = (
            rng.uniform(0.3, 0.45) * size,
            rng.uniform(0.3, 0.45) * size,
            rng.uniform(-0.08, 0.08) * size,
            rng.uniform(-0.08, 0.08) * size,
            math.radians(rng.uniform(-10.0, 10.0)),
            rng.uniform(0.75, 1.0),
        )
    if rng.random() < 0.5:
        extras["marker"] = (str(rng.choice(["L", "R"])), int(rng.integers(4)), rng.uniform(0.8, 1.0))
    return extras


def _draw_fracture(rng, bones, size, scale):
    kinds = list(_KIND_PROBABILITIES)
    kind = str(rng.choice(kinds, p=list(_KIND_PROBABILITIES.values())))
    # Either bone, the main one more often.
    index = int(rng.integers(len(bones))) if rng.random() < 0.7 else 0
    bone = bones[index]
    # A point on the shaft, inside the image with a margin, away from the rounded ends.
    margin = 2.0 * bone.radius + 2.0
    ax, ay = math.cos(bone.angle), math.sin(bone.angle)
    limit = max(bone.half_length - 1.5 * bone.radius, 0.0)
    candidates = rng.uniform(-limit, limit, size=200)
    for candidate in candidates:
        x, y = bone.cx + candidate * ax, bone.cy + candidate * ay
        if margin <= x <= size - margin and margin <= y <= size - margin:
            u = float(candidate)
            break
    else:  # fall back to the point of the shaft nearest the image centre
        u = float(np.clip((size / 2 - bone.cx) * ax + (size / 2 - bone.cy) * ay, -limit, limit))
    x0, y0 = bone.cx + u * ax, bone.cy + u * ay
    # The line runs across the bone, from transverse to oblique.
    tilt = math.radians(rng.uniform(-40.0, 40.0))
    normal = (math.cos(bone.angle + tilt), math.sin(bone.angle + tilt))
    px, py = -ay, ax  # perpendicular to the bone
    # A sigma of at least 1.5 px at every size: thinner lines are lost in the noise that CLAHE and
    # the unsharp mask amplify, and a small CNN trained on a few thousand images learns them slowly.
    width = max(1.5, rng.uniform(1.5, 2.5) * scale)
    side = float(rng.choice([-1.0, 1.0]))
    depth, extent, shift, rotation = 0.0, 1.0, (0.0, 0.0), 0.0
    if kind == "lucent_line":
        depth = rng.uniform(0.9, 1.0)
        extent = 1.0 if rng.random() < 0.7 else rng.uniform(0.6, 0.9)
    elif kind == "displaced":
        depth = rng.uniform(0.8, 1.0)
        lateral = side * rng.uniform(0.35, 0.8) * bone.radius
        gap = rng.uniform(-0.5, 3.0) * max(1.0, 1.5 * scale)  # negative: the fragments overlap
        shift = (lateral * px + gap * normal[0], lateral * py + gap * normal[1])
        rotation = math.radians(rng.uniform(-12.0, 12.0))
    else:  # cortical_step
        depth = rng.uniform(0.8, 1.0)
        lateral = side * max(1.0, rng.uniform(0.3, 0.45) * bone.radius)
        shift = (lateral * px, lateral * py)
    return _Fracture(
        kind=kind,
        bone=index,
        x0=x0,
        y0=y0,
        normal=normal,
        depth=depth,
        width=width,
        extent=extent,
        side=side,
        shift=shift,
        rotation=rotation,
    )


# --- rendering --------------------------------------------------------------------------------


def _axis_coordinates(xs, ys, cx, cy, angle):
    """Coordinates along (u) and across (v) an axis through (cx, cy) at ``angle``."""
    ax, ay = math.cos(angle), math.sin(angle)
    dx, dy = xs - cx, ys - cy
    return dx * ax + dy * ay, -dx * ay + dy * ax


def _bone_coordinates(xs, ys, bone):
    return _axis_coordinates(xs, ys, bone.cx, bone.cy, bone.angle)


def _render_bone(xs, ys, bone):
    """Projected thickness of a hollow capsule with flared ends, in units of the shaft radius."""
    u, v = _bone_coordinates(xs, ys, bone)
    along = np.abs(u)
    beyond = np.maximum(along - bone.half_length, 0.0)
    end = np.exp(-(((along - bone.half_length) / (2.0 * bone.radius)) ** 2))
    outer = bone.radius * (1.0 + bone.flare * end)
    inner = outer * (bone.medulla + (0.9 - bone.medulla) * end)  # thinner cortex at the ends
    d2 = v * v + beyond * beyond
    shell = np.sqrt(np.maximum(outer**2 - d2, 0.0))
    core = np.sqrt(np.maximum(inner**2 - d2, 0.0))
    marrow = bone.marrow + 0.25 * end  # cancellous bone fills the ends
    return ((shell - core) + marrow * core) / bone.radius


def _render_fractured_bone(xs, ys, bone, f):
    nx, ny = f.normal
    proximal = (xs - f.x0) * nx + (ys - f.y0) * ny
    if f.shift != (0.0, 0.0) or f.rotation:
        # The distal fragment: the same bone seen through the inverse of its displacement.
        c, s = math.cos(-f.rotation), math.sin(-f.rotation)
        dx, dy = xs - f.x0 - f.shift[0], ys - f.y0 - f.shift[1]
        xd, yd = f.x0 + c * dx - s * dy, f.y0 + s * dx + c * dy
        distal_side = (xd - f.x0) * nx + (yd - f.y0) * ny
        soft = 0.5
        thickness = _sigmoid(-proximal / soft) * _render_bone(xs, ys, bone)
        thickness = thickness + _sigmoid(distal_side / soft) * _render_bone(xd, yd, bone)
    else:
        thickness = _render_bone(xs, ys, bone)
    if f.depth > 0:
        line = np.exp(-0.5 * (proximal / f.width) ** 2)
        if f.extent < 1.0:
            # An incomplete fracture: the line starts at one cortex and stops part-way across.
            _, v = _bone_coordinates(xs, ys, bone)
            reach = bone.radius * (1.0 - 2.0 * f.extent)
            line = line * _sigmoid((f.side * v - reach) / max(1.0, 0.15 * bone.radius))
        thickness = thickness * (1.0 - f.depth * line)
    return thickness


def _fracture_region(xs, ys, clean, fractured, bone, f):
    """Pixels the fracture changed, within reach of its site (displacement also moves the far fragment)."""
    reach = 1.6 * bone.radius * (1.0 + bone.flare) + math.hypot(*f.shift) + 3.0 * f.width
    near = (xs - f.x0) ** 2 + (ys - f.y0) ** 2 <= reach**2
    return near & (np.abs(fractured - clean) > 0.05)


def _render_tissue(xs, ys, bones, params, rng, size):
    main = bones[0]
    cx = np.mean([b.cx for b in bones])
    cy = np.mean([b.cy for b in bones])
    ax, ay = math.cos(main.angle), math.sin(main.angle)
    half_width = params["half_width"]
    cx -= ay * params["center_shift"] * half_width
    cy += ax * params["center_shift"] * half_width
    u, v = _axis_coordinates(xs, ys, cx, cy, main.angle)
    # The limb narrows slowly along its length (a cone, not a cylinder).
    taper = 1.0 + rng.uniform(-0.25, 0.25) * u / size
    width = half_width * taper
    limb = np.sqrt(np.maximum(1.0 - (v / width) ** 2, 0.0))
    muscle = np.sqrt(np.maximum(1.0 - (v / (width * (1.0 - params["fat"]))) ** 2, 0.0))
    texture = _smooth_noise(rng, size, sigma=size / 16, amplitude=params["muscle_texture"])
    # Fat attenuates about half as much as muscle.
    return (0.5 * limb + 0.5 * muscle * (1.0 + texture)) * _tissue_thickness(params, size / _REFERENCE_SIZE)


def _tissue_thickness(params, scale):
    """Thicker limbs attenuate more, up to a limit."""
    return min(params["half_width"] / (60.0 * scale), 1.5)


def _expose(attenuation, reference, p, extras, xs, ys, size):
    # The exposure is set for the anatomy (as a radiographer would), relative to the attenuation
    # through the middle of the shaft, so that the bone stays visible at every exposure.
    exposed = np.power(1.0 - np.exp(-p["exposure"] * attenuation / reference), p["gamma"])
    image = p["black"] + (p["white"] - p["black"]) * exposed
    hx, hy = math.cos(p["heel_angle"]), math.sin(p["heel_angle"])
    image = image * (1.0 + p["heel"] * ((xs - size / 2) * hx + (ys - size / 2) * hy) / size)
    if extras["collimation"] is not None:
        half_w, half_h, ox, oy, angle, level = extras["collimation"]
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = xs - size / 2 - ox, ys - size / 2 - oy
        outside = np.maximum(np.abs(c * dx + s * dy) - half_w, np.abs(-s * dx + c * dy) - half_h)
        weight = _sigmoid(outside / 0.7)
        image = image * (1.0 - weight) + level * weight
    if extras["marker"] is not None:
        letter, corner, level = extras["marker"]
        canvas = np.zeros((size, size), np.uint8)
        scale = size / 160.0
        (w, h), _ = cv2.getTextSize(letter, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        pad = max(2, size // 24)
        x = pad if corner % 2 == 0 else size - pad - w
        y = pad + h if corner < 2 else size - pad
        thickness = max(1, round(size / 128))
        cv2.putText(canvas, letter, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
        weight = canvas.astype(np.float32) / 255.0
        image = image * (1.0 - weight) + level * weight
    return image


def _degrade(image, rng, size, scale):
    blur = rng.uniform(0.2, 1.0) * scale
    if blur >= 0.3:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    quantum = rng.uniform(0.005, 0.03)
    image = image + quantum * np.sqrt(np.clip(image, 0.0, 1.0) + 0.05) * rng.standard_normal(image.shape)
    grain = rng.uniform(0.0, 0.02)
    return image + _smooth_noise(rng, size, sigma=max(0.5, 1.0 * scale), amplitude=grain)


def _smooth_noise(rng, size, *, sigma, amplitude):
    """Gaussian-filtered white noise with unit standard deviation, times ``amplitude``."""
    field = rng.standard_normal((size, size)).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return amplitude * field / max(float(field.std()), 1e-6)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))
