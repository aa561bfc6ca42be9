"""Which precision a VLM's base weights load in: 4-bit NF4 (bitsandbytes) where the device allows, else bf16.

    q = resolve_quantization("auto", "cuda")
    print(q.message)                       # "4-bit NF4 with double quantisation (bitsandbytes ...) on cuda ..."
    model = AutoModelForImageTextToText.from_pretrained(path, **load_kwargs(q))

The method trains LoRA adapters over base weights in 4 bits (QLoRA: NF4, double quantisation of the
quantisation constants, bf16 compute). bitsandbytes 0.49+ has backends for the CPU as well as CUDA, XPU,
HPU, NPU and MPS; where it has none for the device (or is not installed) "auto" falls back to bf16 and
says so, and an explicit "4bit" is an error.

Reference: Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs", NeurIPS 2023.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tf_fracture.validation import check_choice

MODES = ("auto", "4bit", "bf16", "float32")


@dataclass(frozen=True)
class Quantization:
    """How to load the base weights. ``mode``: "4bit", "bf16" or "float32" (never "auto": that is resolved);
    ``torch_dtype``: the dtype of the weights that are not quantised (and the 4-bit compute dtype);
    ``bnb_config``: the ``BitsAndBytesConfig`` in 4-bit mode, else None; ``message``: which was used and why;
    ``device``: where the model goes."""

    mode: str
    torch_dtype: torch.dtype
    bnb_config: Any | None
    message: str
    device: str = "cpu"


def bitsandbytes_unsupported_reason(device: str | torch.device) -> str | None:
    """None when bitsandbytes can quantise to 4 bits on ``device``; otherwise why not (for the message)."""
    device = torch.device(device)
    try:
        import bitsandbytes
    except Exception as error:  # not installed, or its native library fails to load
        return f"bitsandbytes cannot be imported ({type(error).__name__}: {error})"
    # bitsandbytes' own list of the devices it has a backend for (the one transformers checks too).
    supported = set(getattr(bitsandbytes, "supported_torch_devices", ()))
    if device.type not in supported:
        version = bitsandbytes.__version__
        return f"bitsandbytes {version} has no backend for {device.type!r} (it supports {sorted(supported)})"
    return None


def _compute_dtype(device: torch.device) -> torch.dtype:
    # bf16 everywhere but on CUDA GPUs without it (before Ampere), where float16 is the fast half precision.
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def resolve_quantization(requested: str, device: str | torch.device) -> Quantization:
    """The precision to load in: ``requested`` is auto | 4bit | bf16 | float32 (auto = 4-bit NF4 where
    bitsandbytes supports ``device``, bf16 otherwise). Raises ``ValueError`` for an unknown mode and
    ``RuntimeError`` for "4bit" where bitsandbytes cannot run."""
    check_choice("quantization", requested, MODES)
    device = torch.device(device)
    half = _compute_dtype(device)
    half_name = str(half).removeprefix("torch.")
    if requested == "float32":
        message = f"Loading the base weights in float32 on {device} (no quantisation, as asked)."
        return Quantization("float32", torch.float32, None, message, str(device))
    if requested == "bf16":
        message = f"Loading the base weights in {half_name} on {device} (no quantisation, as asked)."
        return Quantization("bf16", half, None, message, str(device))
    reason = bitsandbytes_unsupported_reason(device)
    if reason is not None:
        if requested == "4bit":
            raise RuntimeError(
                f"4-bit loading was asked for, but {reason}. Install a bitsandbytes with a backend for this "
                "device (pip install -U bitsandbytes), or pass --quantization bf16 (or auto, which falls back to bf16)."
            )
        message = (
            f"Loading the base weights in {half_name} on {device}, NOT in 4 bits: {reason}. "
            "Memory use is about 4 times that of 4-bit NF4."
        )
        return Quantization("bf16", half, None, message, str(device))
    import bitsandbytes
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=half,
        bnb_4bit_quant_storage=torch.uint8,
    )
    message = (
        f"Loading the base weights in 4-bit NF4 with double quantisation (bitsandbytes {bitsandbytes.__version__}, "
        f"compute in {half_name}) on {device}."
    )
    return Quantization("4bit", half, config, message, str(device))


def load_kwargs(quantization: Quantization) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained``: the dtype, the 4-bit config (if any) and the device."""
    kwargs: dict[str, Any] = {"dtype": quantization.torch_dtype, "device_map": {"": quantization.device}}
    if quantization.bnb_config is not None:
        kwargs["quantization_config"] = quantization.bnb_config
    return kwargs


# bitsandbytes' fast CPU path (AVX512-BF16 CPUs, e.g. AMD Zen 4 and Intel Sapphire Rapids) repacks a 4-bit
# layer's weight for its kernel the first time the layer runs in inference: it needs the output width a
# multiple of 32 and the input width a multiple of the quantisation block (64). A narrower layer fails
# there ("shape '[32, 0]' is invalid", an assertion), on those CPUs only; every other CPU dequantises.
_CPU_PACKED_BLOCK_N = 32


def fit_cpu_4bit_kernels(model: Any) -> int:
    """Keeps the 4-bit layers that bitsandbytes' AVX512-BF16 CPU kernel cannot take on its generic path.

    Real checkpoints (widths of hundreds or thousands) keep the fast kernel; layers whose output width is
    not a multiple of 32 or whose input width is not a multiple of their quantisation block (small test
    models, odd projections) dequantise and multiply instead, the path every other CPU takes. A no-op
    where the CPU has no AVX512-BF16 or the model is not in 4 bits.

    Returns:
        How many layers were moved to the generic path.

    Example:
        >>> model = AutoModelForImageTextToText.from_pretrained(path, **load_kwargs(q))
        >>> fit_cpu_4bit_kernels(model)
        0
    """
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    moved = 0
    for module in model.modules():
        if not isinstance(module, Linear4bit) or not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        state = module.weight.quant_state
        blocksize = state.blocksize if state is not None else 64
        if module.out_features % _CPU_PACKED_BLOCK_N or module.in_features % blocksize:
            module.support_avx512bf16_for_cpu = False
            moved += 1
    return moved


def generic_cpu_4bit_path(model: Any) -> int:
    """Puts every 4-bit layer on bitsandbytes' generic CPU path for good, unpacking the ones already repacked.

    On an AVX512-BF16 CPU bitsandbytes (0.50) repacks a 4-bit layer for its fast kernel the first time the
    layer runs in inference, and keeps the packed weight: every later call, training included, goes through
    that kernel, which has no backward pass ("a view of a leaf Variable that requires grad is being used in
    an in-place operation" at the first training step after a validation pass). A model that will train
    (`vlm_torch.lora.add_lora`) therefore stays on the generic path, which dequantises and multiplies, as on
    every other CPU; a model that only predicts keeps the fast kernel. A no-op where the model has no 4-bit
    layers.

    Returns:
        How many layers had been repacked and were unpacked.

    Example:
        >>> with torch.no_grad():
        ...     model(**batch)                       # an AVX512-BF16 CPU repacks the 4-bit layers here
        >>> generic_cpu_4bit_path(model) > 0
        True
    """
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    unpacked = 0
    for module in model.modules():
        if not isinstance(module, Linear4bit):
            continue
        module.support_avx512bf16_for_cpu = False
        state = module.weight.quant_state
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            module.weight.data, module.weight.quant_state = _unpack_for_cpu(module.weight.data, state)
            unpacked += 1
    return unpacked


def _unpack_for_cpu(weight: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
    from bitsandbytes import functional

    inverse = getattr(functional, "_convert_weight_packed_for_cpu_inverse", None)
    if inverse is None:
        raise RuntimeError(
            "A 4-bit layer was repacked for bitsandbytes' AVX512-BF16 CPU kernel, and this bitsandbytes version "
            "has no way back to the generic layout for training: load the model again before training it, "
            "without running it in inference first, or install bitsandbytes 0.49-0.50"
        )
    return inverse(weight, state)
