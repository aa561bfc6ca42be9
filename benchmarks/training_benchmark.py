"""Training throughput (images/s) per backbone, with and without XLA, beside ConvNeXt-Tiny in PyTorch eager.

One full training step (forward, binary cross-entropy on the logit, backward, SGD-with-momentum
update) on a fixed synthetic batch held in memory (no data loading), timed as the median of N steps
after warm-up steps (the first step's tracing and XLA compilation are reported on their own).
Each backbone is built with ``tf_fracture.models.build_classifier`` and trained through Keras'
``compile(jit_compile=...)`` + ``train_on_batch``, the path ``fit`` takes.

For ConvNeXt the like-for-like pair is Keras ConvNeXt-Tiny **without** CBAM and with an RGB stem
against the same network in PyTorch eager: the architecture of ConvNeXt-Tiny as published
(Liu et al. 2022), written independently below; the method's CBAM + grey-stem variant is an
extra row. Within each (backbone, size) every step function is timed in turn, step after step, so
that machine noise hits all of them alike; "vs PyTorch" is the ratio of images/s from the same run.

Run:
    .venv/bin/python benchmarks/training_benchmark.py                       # CPU, ~10-15 min on 2 cores
    .venv/bin/python benchmarks/training_benchmark.py --quick               # 1-minute smoke
    .venv/bin/python benchmarks/training_benchmark.py --backbones convnext --variant convnext=small
    .venv/bin/python benchmarks/training_benchmark.py --device gpu --precision bf16 --json gpu.json

On a GPU (``--device gpu``) it also prints the model FLOP/s reached and the fraction of the GPU's
peak dense bf16 FLOP/s (from a small table by GPU name; ``--peak-tflops`` overrides). Training FLOPs
per image: 3x the forward FLOPs counted by TensorFlow's profiler on the frozen inference graph
(a multiply-add is 2 FLOPs) for the Keras models, and 3x the forward FLOPs counted by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls) for the PyTorch model. Not
FlopCounterMode over the backward: in torch 2.13 its convolution-backward formula ignores ``groups``
and counts a depthwise conv's weight gradient C times over (77 instead of 27 GFLOPs per 224 px
ConvNeXt-Tiny image).
PyTorch (``pip install torch==2.13.0``, the ``vlm`` extra) is optional: without it the TensorFlow
rows run and a note says why the PyTorch row is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from tf_fracture.backbones import available_backbones, available_variants, get_family
from tf_fracture.models import build_classifier

KERAS = "TF/Keras"
TORCH = "PyTorch eager"
METHOD = "grey + CBAM"  # the method's backbone: greyscale stem, CBAM at the family's points
PUBLIC = "RGB, no CBAM"  # the published architecture, the like-for-like partner of PyTorch's
TORCH_DEPTHS = {"tiny": (3, 3, 9, 3), "small": (3, 3, 27, 3)}
TORCH_DIMS = (96, 192, 384, 768)
# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from NVIDIA's data sheets; first match wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L4", 121.0),
)


class DeviceUnavailableError(RuntimeError):
    """``--device gpu`` was asked for but no GPU is visible."""


@dataclass(frozen=True)
class BenchmarkSettings:
    """What to measure; the defaults are the full CPU run (about 10-15 minutes on 2 cores)."""

    backbones: tuple[str, ...] = ("convnext", "efficientnetv2", "mobilenetv3")
    variants: dict[str, str] = field(default_factory=dict)  # family -> variant; missing = the method's
    sizes: tuple[int, ...] = (224, 384)
    batch: dict[int, int] = field(default_factory=lambda: {224: 4, 384: 2})  # size -> batch; missing = 4
    steps: int = 3
    warmup: int = 1
    xla: tuple[bool, ...] = (False, True)
    torch: bool = True
    threads: int | None = None  # None = os.cpu_count()
    device: str = "cpu"
    precision: str = "fp32"
    peak_tflops: float | None = None
    flops: bool | None = None  # None = count where a peak is known
    drop_path: float = 0.0  # PyTorch stochastic depth; 0 matches the Keras network, which has none
    learning_rate: float = 1e-3
    momentum: float = 0.9
    seed: int = 0

    def __post_init__(self):
        unknown = sorted(set(self.backbones) - set(available_backbones()))
        if unknown:
            raise ValueError(f"Unknown backbone(s) {unknown}: expected names in {available_backbones()}.")
        for name, variant in self.variants.items():
            if name not in available_backbones() or variant not in available_variants(name):
                valid = {b: available_variants(b) for b in available_backbones()}
                raise ValueError(f"Unknown variant {name}={variant}: expected one of {valid}.")
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"Expected `device` to be 'cpu' or 'gpu', but got {self.device!r}.")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"Expected `precision` to be 'fp32' or 'bf16', but got {self.precision!r}.")
        if self.steps < 1 or self.warmup < 1:
            raise ValueError(
                f"Expected steps >= 1 and warmup >= 1 (the first step compiles), got {self.steps}, {self.warmup}."
            )
        if any(size < 32 for size in self.sizes):
            raise ValueError(f"Sizes must be at least 32 px (the backbones downsample 32x), got {self.sizes}.")

    def variant(self, name: str) -> str:
        return self.variants.get(name, get_family(name).default_variant)

    def batch_for(self, size: int) -> int:
        return self.batch.get(size, 4)


QUICK = dict(backbones=("convnext",), sizes=(64,), batch={64: 2}, steps=2, warmup=1)


@dataclass
class Row:
    backbone: str  # family-variant, e.g. "convnext-tiny"
    model: str  # METHOD or PUBLIC
    size: int
    xla: bool | None  # None for PyTorch
    framework: str
    batch: int
    params: int
    step_seconds: list[float]
    first_step_s: float  # the first warm-up step: tracing (+ XLA compilation) included
    images_per_s: float = 0.0
    vs_torch: float | None = None
    compile_s: float | None = None
    train_gflops_per_image: float | None = None
    tflops: float | None = None
    peak_fraction: float | None = None


# --------------------------------------------------------------------------- environment


def configure_threads(threads: int | None) -> tuple[int, list[str]]:
    """Gives TensorFlow and PyTorch the same thread count; returns it and notes on what could not be set."""
    count = threads or os.cpu_count() or 1
    notes = []
    try:
        tf.config.threading.set_intra_op_parallelism_threads(count)
        tf.config.threading.set_inter_op_parallelism_threads(count)
    except RuntimeError:
        # TensorFlow fixes its pools when it starts (e.g. when the test suite ran something before).
        intra = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        if intra != count:
            notes.append(f"TensorFlow had already started with {intra} intra-op threads; PyTorch gets {intra} too.")
            count = intra
    torch = _import_torch()
    if torch is not None:
        torch.set_num_threads(count)
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:
            pass  # only settable before PyTorch's first parallel work; intra-op threads are what convs use
    return count, notes


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_unavailable_reason(settings: BenchmarkSettings) -> str | None:
    """Why the PyTorch row cannot run, or None when it can."""
    if not settings.torch:
        return "PyTorch rows not requested (--no-torch)."
    torch = _import_torch()
    if torch is None:
        return "PyTorch is not installed (pip install torch==2.13.0, the `vlm` extra): PyTorch rows skipped."
    if settings.device == "gpu" and not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} sees no CUDA device (a CPU-only build?): PyTorch rows skipped."
    return None


def gpu_name(settings: BenchmarkSettings) -> str | None:
    """The GPU's name, or None on the CPU; raises DeviceUnavailableError if a GPU is asked for but absent."""
    if settings.device != "gpu":
        return None
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise DeviceUnavailableError(
            "--device gpu: TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty). "
            "Install a CUDA build (pip install 'tensorflow[and-cuda]~=2.21.0'), check nvidia-smi and "
            "CUDA_VISIBLE_DEVICES, or run with --device cpu."
        )
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")


def peak_tflops(settings: BenchmarkSettings, name: str | None) -> float | None:
    """``--peak-tflops`` if given, else the bf16 table's entry for a GPU run in bf16, else None."""
    if settings.peak_tflops is not None:
        return settings.peak_tflops
    if name is None or settings.precision != "bf16":
        return None
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return value
    return None


# --------------------------------------------------------------------------- PyTorch ConvNeXt
#
# The architecture of ConvNeXt-Tiny/-Small as published (Liu et al. 2022, "A ConvNet for the 2020s"),
# written independently for this benchmark from the paper's description of the network.


def _stage_specs(variant: str) -> tuple[tuple[int, int], ...]:
    """(channels, blocks) per stage for a published ConvNeXt variant (Liu et al. 2022)."""
    return tuple(zip(TORCH_DIMS, TORCH_DEPTHS[variant], strict=True))


@functools.cache
def _torch_convnext_network():
    """The PyTorch ConvNeXt network class, built on first use so that torch stays an optional import."""
    import torch
    from torch import nn

    def randomly_skip_residual(branch, rate: float, training: bool):
        """Stochastic depth (Huang et al. 2016): drop a sample's residual branch with probability ``rate``.

        Kept branches are scaled by 1 / (1 - rate) so that the expected output is unchanged; at
        inference, or with ``rate == 0``, the branch passes through untouched.
        """
        if not training or rate == 0.0:
            return branch
        keep = 1.0 - rate
        per_sample = torch.rand((branch.shape[0],) + (1,) * (branch.dim() - 1), device=branch.device) < keep
        return branch * per_sample.to(branch.dtype) / keep

    class _ChannelsFirstLayerNorm(nn.LayerNorm):
        """``nn.LayerNorm`` over the channel axis of an (N, C, H, W) tensor, by moving C last and back."""

        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class _ConvNeXtBlock(nn.Module):
        """One ConvNeXt block (Liu et al. 2022): an inverted bottleneck behind a 7x7 depthwise conv.

        7x7 depthwise conv -> LayerNorm -> Linear (4x wider) -> GELU -> Linear -> LayerScale (per-channel,
        initialised to 1e-6) -> stochastic depth, added to the input. The pointwise layers run
        channels-last as ``nn.Linear`` (equivalent to 1x1 convolutions).
        """

        def __init__(self, channels: int, skip_rate: float, layer_scale: float = 1e-6):
            super().__init__()
            self.spatial_mix = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels)
            self.channel_mix = nn.Sequential(
                nn.LayerNorm(channels, eps=1e-6),
                nn.Linear(channels, 4 * channels),
                nn.GELU(),
                nn.Linear(4 * channels, channels),
            )
            self.layer_scale = nn.Parameter(torch.full((channels,), layer_scale))
            self.skip_rate = skip_rate

        def forward(self, x):
            residual = self.channel_mix(self.spatial_mix(x).permute(0, 2, 3, 1)) * self.layer_scale
            residual = randomly_skip_residual(residual.permute(0, 3, 1, 2), self.skip_rate, self.training)
            return x + residual

    class _ConvNeXt(nn.Module):
        """ConvNeXt image classifier (Liu et al. 2022) for (N, C, H, W) input.

        Patchify stem (4x4 conv, stride 4, then LayerNorm); four stages of ``_ConvNeXtBlock`` with a
        LayerNorm + 2x2 stride-2 conv between consecutive stages; global average pooling, LayerNorm
        and a linear head. Stochastic-depth rates rise linearly from 0 at the first block to
        ``drop_path_rate`` at the last; conv and linear weights start from a truncated normal with
        standard deviation 0.02 and their biases from zero.
        """

        def __init__(self, stages: Sequence[tuple[int, int]], num_classes: int, in_chans: int, drop_path_rate: float):
            super().__init__()
            total_blocks = sum(blocks for _, blocks in stages)
            rates = iter(drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks))
            first = stages[0][0]
            layers: list[nn.Module] = [
                nn.Conv2d(in_chans, first, kernel_size=4, stride=4),
                _ChannelsFirstLayerNorm(first, eps=1e-6),
            ]
            previous = first
            for index, (channels, blocks) in enumerate(stages):
                if index > 0:  # halve the resolution between stages
                    layers += [
                        _ChannelsFirstLayerNorm(previous, eps=1e-6),
                        nn.Conv2d(previous, channels, kernel_size=2, stride=2),
                    ]
                layers += [_ConvNeXtBlock(channels, next(rates)) for _ in range(blocks)]
                previous = channels
            self.features = nn.Sequential(*layers)
            self.pooled_norm = nn.LayerNorm(previous, eps=1e-6)
            self.classifier = nn.Linear(previous, num_classes)
            for module in self.modules():
                if isinstance(module, nn.Conv2d | nn.Linear):
                    nn.init.trunc_normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)

        def forward(self, x):
            pooled = self.features(x).mean(dim=(2, 3))
            return self.classifier(self.pooled_norm(pooled))

    return _ConvNeXt


def torch_convnext(variant: str = "tiny", num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0):
    """ConvNeXt-Tiny (or -Small) in PyTorch, as published; 28.59 M parameters for Tiny with 1000 classes."""
    if variant not in TORCH_DEPTHS:
        raise ValueError(f"Expected a ConvNeXt variant in {tuple(TORCH_DEPTHS)}, but got {variant!r}.")
    return _torch_convnext_network()(_stage_specs(variant), num_classes, in_chans, drop_path_rate)


# --------------------------------------------------------------------------- step functions


@dataclass
class Candidate:
    """One row to be measured: a zero-argument train step that returns after the step has finished."""

    row: Row
    step: Callable[[], None]
    count_flops: Callable[[], float] | None = None  # training FLOPs per image


def _dtype_policy(settings: BenchmarkSettings) -> str:
    return "mixed_bfloat16" if settings.precision == "bf16" else "float32"


def keras_forward_flops(model: keras.Model, size: int) -> float:
    """Forward FLOPs of one image, counted by TensorFlow's profiler on the frozen inference graph."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((1, size, size, model.input_shape[-1]), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def keras_candidate(
    settings: BenchmarkSettings, name: str, model_kind: str, size: int, xla: bool, images: np.ndarray, labels
) -> Candidate:
    variant = settings.variant(name)
    options = dict(attention=False, stem="rgb", feature_dim=None) if model_kind == PUBLIC else {}
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_dtype_policy(settings))
    try:
        model = build_classifier(name, variant, weights=None, input_size=size, preprocessing=None, **options)
    finally:
        keras.config.set_dtype_policy(policy)  # the model keeps its layers' policy; the process gets its own back
    model.compile(
        optimizer=keras.optimizers.SGD(settings.learning_rate, momentum=settings.momentum),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        jit_compile=xla,
    )
    channels = model.input_shape[-1]
    with tf.device("/GPU:0" if settings.device == "gpu" else "/CPU:0"):
        x = tf.constant(images if channels == 3 else images[..., :1])
        y = tf.constant(labels)

    def step():
        model.train_on_batch(x, y)  # returns the loss as a NumPy value: the step has finished

    row = Row(f"{name}-{variant}", model_kind, size, xla, KERAS, len(labels), model.count_params(), [], 0.0)
    return Candidate(row, step, lambda: 3 * keras_forward_flops(model, size))


def torch_candidate(settings: BenchmarkSettings, size: int, images: np.ndarray, labels: np.ndarray) -> Candidate:
    import torch
    from torch.nn import functional as F

    device = "cuda" if settings.device == "gpu" else "cpu"
    variant = settings.variant("convnext")
    torch.manual_seed(settings.seed)
    model = torch_convnext(variant, num_classes=1, drop_path_rate=settings.drop_path).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.learning_rate, momentum=settings.momentum)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)  # NCHW, PyTorch's layout
    y = torch.from_numpy(labels).to(device)
    bf16 = settings.precision == "bf16"

    def forward_backward():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)[:, 0]
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        loss.backward()
        return loss

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = forward_backward()
        optimizer.step()
        loss.item()  # waits for the device, like Keras' NumPy logs

    def count_flops():
        from torch.utils.flop_counter import FlopCounterMode

        # The forward only, x3 as for the Keras models: torch 2.13's count of convolution_backward
        # ignores `groups`, so it counts a depthwise conv's weight gradient C times over.
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            model(x)
        return 3 * counter.get_total_flops() / len(labels)

    params = sum(p.numel() for p in model.parameters())
    row = Row(f"convnext-{variant}", PUBLIC, size, None, TORCH, len(labels), params, [], 0.0)
    return Candidate(row, step, count_flops)


def candidates_for(settings: BenchmarkSettings, name: str, size: int, torch_ok: bool) -> list[Candidate]:
    rng = np.random.default_rng(settings.seed)
    batch = settings.batch_for(size)
    images = (rng.random((batch, size, size, 3)) * 255).astype(np.float32)
    labels = (np.arange(batch) % 2).astype(np.float32)
    convnext = name == "convnext"
    kinds = (PUBLIC, METHOD) if convnext else (METHOD,)
    found = [keras_candidate(settings, name, kind, size, xla, images, labels) for kind in kinds for xla in settings.xla]
    if convnext and torch_ok:
        found.append(torch_candidate(settings, size, images, labels))
    return found


# --------------------------------------------------------------------------- measuring


def measure(candidates: Sequence[Candidate], steps: int, warmup: int, log=print) -> None:
    """Warms each up, then times them in turn step after step (interleaved), filling the rows."""
    for candidate in candidates:
        for i in range(warmup):
            start = time.perf_counter()
            candidate.step()
            if i == 0:
                candidate.row.first_step_s = time.perf_counter() - start
        log(f"  warmed up {_label(candidate.row)} (first step {candidate.row.first_step_s:.1f} s)")
    for _ in range(steps):
        for candidate in candidates:
            start = time.perf_counter()
            candidate.step()
            candidate.row.step_seconds.append(time.perf_counter() - start)
    for candidate in candidates:
        row = candidate.row
        median = statistics.median(row.step_seconds)
        row.images_per_s = row.batch / median
        if row.xla:
            row.compile_s = max(row.first_step_s - median, 0.0)
    reference = [c.row for c in candidates if c.row.framework == TORCH]
    for candidate in candidates:
        if reference:
            candidate.row.vs_torch = candidate.row.images_per_s / reference[0].images_per_s


def _label(row: Row) -> str:
    xla = "" if row.xla is None else f" XLA {'on' if row.xla else 'off'}"
    return f"{row.framework} {row.backbone} {row.model} {row.size} px{xla}"


def add_flops(candidates: Sequence[Candidate], peak: float | None) -> None:
    for candidate in candidates:
        row = candidate.row
        row.train_gflops_per_image = candidate.count_flops() / 1e9
        row.tflops = row.train_gflops_per_image * row.images_per_s / 1e3
        if peak:
            row.peak_fraction = row.tflops / peak


def run_benchmark(settings: BenchmarkSettings, log=print) -> dict:
    """Measures every row ``settings`` asks for; returns ``{"environment", "settings", "notes", "rows"}``."""
    gpu = gpu_name(settings)  # fails first, with a clear message, when a GPU is asked for and absent
    threads, notes = configure_threads(settings.threads)
    reason = torch_unavailable_reason(settings)
    if reason:
        notes.append(reason)
    if settings.torch and reason is None and "convnext" in settings.backbones:
        if settings.variant("convnext") not in TORCH_DEPTHS:
            notes.append(f"No PyTorch ConvNeXt-{settings.variant('convnext')}: PyTorch rows skipped.")
    peak = peak_tflops(settings, gpu)
    if gpu and peak is None:
        notes.append(f"No peak FLOP/s known for {gpu} in {settings.precision}: pass --peak-tflops for the fraction.")
    count = settings.flops if settings.flops is not None else peak is not None
    environment = describe_environment(threads, gpu, peak)
    log(f"{environment['device']}; {threads} threads for TensorFlow and PyTorch; load {environment['load_before']}")
    rows = []
    keras.utils.set_random_seed(settings.seed)
    for name in settings.backbones:
        for size in settings.sizes:
            log(f"{name} at {size} px, batch {settings.batch_for(size)}:")
            candidates = candidates_for(settings, name, size, reason is None)
            measure(candidates, settings.steps, settings.warmup, log)
            if count:
                add_flops(candidates, peak)
            rows.extend(c.row for c in candidates)
            log(format_table({"rows": [c.row for c in candidates]}))  # so that a long run shows progress
            keras.backend.clear_session()
    environment["load_after"] = _load()
    settings_dict = dataclasses.asdict(settings)
    settings_dict["batch"] = {str(k): v for k, v in settings.batch.items()}
    return {"environment": environment, "settings": settings_dict, "notes": notes, "rows": rows}


def _load() -> str:
    try:
        return "/".join(f"{value:.2f}" for value in os.getloadavg()) + " (1/5/15 min)"
    except OSError:
        return "unknown"


def describe_environment(threads: int, gpu: str | None, peak: float | None) -> dict:
    torch = _import_torch()
    cpu = platform.processor() or platform.machine()
    return {
        "device": gpu or f"CPU {cpu}, {os.cpu_count()} cores",
        "threads": threads,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "torch": torch.__version__ if torch else None,
        "python": platform.python_version(),
        "peak_tflops": peak,
        "load_before": _load(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# --------------------------------------------------------------------------- output

COLUMNS = (
    "backbone",
    "model",
    "size",
    "XLA",
    "framework",
    "batch",
    "params (M)",
    "images/s",
    "vs PyTorch eager",
    "XLA compile s",
)


def _fmt(value, spec: str, missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def format_table(result: dict) -> str:
    """The Markdown table; FLOP columns appear when FLOPs were counted."""
    rows = result["rows"]
    flops = any(row.train_gflops_per_image is not None for row in rows)
    peak = any(row.peak_fraction is not None for row in rows)
    columns = COLUMNS + (("train GFLOPs/image", "TFLOP/s") if flops else ()) + (("% of peak",) if peak else ())
    right = {"size", "batch", "params (M)", "images/s", "vs PyTorch eager", "XLA compile s"}
    right |= {"train GFLOPs/image", "TFLOP/s", "% of peak"}
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" if c in right else "---" for c in columns) + "|"]
    for row in rows:
        cells = [
            row.backbone,
            row.model,
            str(row.size),
            "—" if row.xla is None else ("on" if row.xla else "off"),
            row.framework,
            str(row.batch),
            f"{row.params / 1e6:.2f}",
            f"{row.images_per_s:.2f}",
            _fmt(row.vs_torch, ".2f"),
            _fmt(row.compile_s, ".1f"),
        ]
        if flops:
            cells += [_fmt(row.train_gflops_per_image, ".2f"), _fmt(row.tflops, ".3f")]
        if peak:
            cells.append(_fmt(None if row.peak_fraction is None else 100 * row.peak_fraction, ".1f"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_report(result: dict) -> str:
    env, settings = result["environment"], result["settings"]
    header = (
        f"{env['device']}; {env['threads']} threads (TensorFlow and PyTorch); TensorFlow {env['tensorflow']}, "
        f"Keras {env['keras']}, PyTorch {env['torch'] or 'not installed'}; {settings['precision']}; "
        f"median of {settings['steps']} train steps after {settings['warmup']} warm-up; "
        f"load average {env['load_before']} before, {env.get('load_after', '?')} after; {env['when']}."
    )
    notes = "".join(f"\nNote: {note}" for note in result["notes"])
    return f"{header}{notes}\n\n{format_table(result)}"


def to_json(result: dict) -> dict:
    return {**result, "rows": [dataclasses.asdict(row) for row in result["rows"]]}


# --------------------------------------------------------------------------- command line


def _parse_variants(values: Sequence[str], backbones: Sequence[str]) -> dict[str, str]:
    variants = {}
    for value in values:
        if "=" in value:
            name, variant = value.split("=", 1)
        elif len(backbones) == 1:
            name, variant = backbones[0], value
        else:
            raise ValueError(f"--variant {value}: say which backbone, e.g. --variant convnext={value}.")
        variants[name] = variant
    return variants


def _parse_batch(values: Sequence[str], sizes: Sequence[int]) -> dict[int, int]:
    if len(values) == 1 and "=" not in values[0]:
        return dict.fromkeys(sizes, int(values[0]))
    batch = {}
    for value in values:
        size, _, count = value.partition("=")
        if not count:
            raise ValueError(f"--batch {value}: give one number for every size, or SIZE=BATCH pairs.")
        batch[int(size)] = int(count)
    return batch


def settings_from_args(argv: Sequence[str] | None = None) -> tuple[BenchmarkSettings, str | None]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", choices=available_backbones(), help="default: all three")
    parser.add_argument(
        "--variant",
        nargs="+",
        default=[],
        metavar="NAME=VARIANT",
        help="e.g. convnext=small (default: the method's: tiny, m, large)",
    )
    parser.add_argument("--sizes", nargs="+", type=int, help="default: 224 384")
    parser.add_argument("--batch", nargs="+", metavar="N|SIZE=N", help="default: 224=4 384=2")
    parser.add_argument("--steps", type=int, help="timed steps (median taken); default 3")
    parser.add_argument("--warmup", type=int, help="untimed steps first (the first compiles); default 1")
    parser.add_argument("--xla", choices=("both", "on", "off"), default="both")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    parser.add_argument("--threads", type=int, help="for both frameworks; default: all cores")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: Keras mixed_bfloat16, torch.autocast(bfloat16)",
    )
    parser.add_argument("--peak-tflops", type=float, help="the device's peak FLOP/s for the %% of peak column")
    parser.add_argument("--flops", action="store_true", help="count FLOPs even where no peak is known")
    parser.add_argument("--drop-path", type=float, default=0.0, help="PyTorch stochastic depth rate (default 0)")
    parser.add_argument("--quick", action="store_true", help="1-minute smoke: ConvNeXt at 64 px, batch 2, 2 steps")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)

    base = dict(QUICK) if args.quick else {}
    given = dict(backbones=args.backbones, sizes=args.sizes, steps=args.steps, warmup=args.warmup)
    base.update({key: (tuple(value) if isinstance(value, list) else value) for key, value in given.items() if value})
    backbones = base.get("backbones", BenchmarkSettings.backbones)
    sizes = base.get("sizes", BenchmarkSettings.sizes)
    if args.batch:
        base["batch"] = _parse_batch(args.batch, sizes)
    base["variants"] = _parse_variants(args.variant, backbones)
    base["xla"] = {"both": (False, True), "on": (True,), "off": (False,)}[args.xla]
    settings = BenchmarkSettings(
        **base,
        torch=not args.no_torch,
        threads=args.threads,
        device=args.device,
        precision=args.precision,
        peak_tflops=args.peak_tflops,
        flops=True if args.flops else None,
        drop_path=args.drop_path,
    )
    return settings, args.json


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings, json_path = settings_from_args(argv)
        result = run_benchmark(settings, log=lambda message: print(message, file=sys.stderr, flush=True))
    except (ValueError, DeviceUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_report(result))
    if json_path:
        with open(json_path, "w") as file:
            json.dump(to_json(result), file, indent=2)
        print(f"\nWrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
