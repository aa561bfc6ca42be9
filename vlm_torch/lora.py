"""LoRA adapters (PEFT) on the linear layers of a VLM's language model, over 4-bit or half-precision base weights.

    model, processor = family.load(path, quantization="auto")
    model = add_lora(model, family, config.lora, gradient_checkpointing=True)
    model.save_pretrained(run / "adapter")     # adapter_model.safetensors + adapter_config.json only

Reference: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022; Dettmers et al.,
"QLoRA", NeurIPS 2023 (4-bit base weights, adapters in higher precision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from vlm_torch.config import LoraSettings
from vlm_torch.precision import generic_cpu_4bit_path


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == prefix or name.startswith(prefix.rstrip(".") + ".") for prefix in prefixes)


def _linear_layers(model: nn.Module):
    """(name, module) of the linear layers, an adapted layer under its own name (PEFT wraps the original
    as ``<name>.base_layer`` and adds ``lora_A`` / ``lora_B``, which are not layers of the model)."""
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or any(part.startswith("lora_") for part in name.split(".")):
            continue
        yield name.removesuffix(".base_layer"), module


def language_model_linear_names(
    model: nn.Module,
    language_prefixes: Sequence[str],
    projector_prefixes: Sequence[str] = (),
    include_projector: bool = False,
) -> list[str]:
    """Full module paths of the linear layers (``nn.Linear``, bitsandbytes' ``Linear4bit`` included) under
    ``language_prefixes`` (and ``projector_prefixes`` when ``include_projector``); never the output head.

    The vision tower is left out by not being under either prefix. Raises ``ValueError`` when no layer
    matches (the prefixes do not fit this model) or when the projector is asked for and has no linear layer.
    """
    prefixes = tuple(language_prefixes) + (tuple(projector_prefixes) if include_projector else ())
    names = [
        name for name, _ in _linear_layers(model) if _under(name, prefixes) and name.rsplit(".", 1)[-1] != "lm_head"
    ]
    if not any(_under(name, language_prefixes) for name in names):
        raise ValueError(
            f"no linear layer under the language model prefixes {list(language_prefixes)} in "
            f"{type(model).__name__}: is this the family's model?"
        )
    if include_projector and not any(_under(name, projector_prefixes) for name in names):
        raise ValueError(
            f"include_projector was asked for, but {type(model).__name__} has no linear layer under "
            f"{list(projector_prefixes)}: train without --include-projector"
        )
    return names


def is_4bit(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False))


def add_lora(model: Any, family: Any, settings: LoraSettings, *, gradient_checkpointing: bool) -> Any:
    """``model`` wrapped as a PEFT model with LoRA (rank, alpha, dropout from ``settings``) on the layers
    ``family.lora_target_modules`` names; only the adapters train. A 4-bit model is first prepared with
    PEFT's ``prepare_model_for_kbit_training`` (norms in float32, input gradients for checkpointing), its
    4-bit layers on bitsandbytes' generic CPU path (`vlm_torch.precision.generic_cpu_4bit_path`)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    checkpointing_kwargs = {"use_reentrant": False}
    if is_4bit(model):
        generic_cpu_4bit_path(model)  # bitsandbytes' AVX512-BF16 CPU kernel cannot train
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing_kwargs,
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)
        model.enable_input_require_grads()
    if gradient_checkpointing:
        model.config.use_cache = False  # a cache is useless in training and clashes with checkpointing
    targets = family.lora_target_modules(model, include_projector=settings.include_projector)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
