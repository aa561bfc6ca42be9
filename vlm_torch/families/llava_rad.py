"""LLaVA-Rad as a VLM family: the port in ``vlm_torch.llava_rad``, loaded from a folder its converter wrote.

    python -m vlm_torch.llava_rad.convert --published llava-rad/ --vicuna vicuna-7b-v1.5/ --out llava-rad-port/
    family = get_family("llava_rad")
    model, processor = family.load("llava-rad-port/", quantization="auto")

LLaVA-Rad (Microsoft Research; Vicuna-7B v1.5 + BiomedCLIP-CXR at 518 px + a 2-layer GELU projector) was trained
on chest X-rays only (MIMIC-CXR images and reports: findings generation). The method fine-tunes it on other
radiographs anyway, from its released weights; nothing in its pre-training saw bones outside the chest.

Batches: the Vicuna v1 conversation LLaVA-Rad was trained with, the question with the image's 1,369 patch tokens,
labels only on the answer and the ``</s>`` after it (right padding); prompt batches end at ``ASSISTANT:`` and are
left padded, so position -1 is where the answer starts (its first token is ``▁A`` or ``▁B``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vlm_torch.lora import language_model_linear_names
from vlm_torch.precision import fit_cpu_4bit_kernels, load_kwargs, resolve_quantization
from vlm_torch.prompts import QUESTION

logger = logging.getLogger(__name__)

LANGUAGE_PREFIXES = ("model.",)  # the Llama decoder (LlamaModel); lm_head and vision_tower lie outside
PROJECTOR_PREFIXES = ("mm_projector.",)
# Kept out of 4-bit: the frozen image trunk and the small projector (LLaVA-Rad loaded its tower unquantised too).
NOT_QUANTISED = ["vision_tower", "mm_projector", "lm_head"]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class LlavaRadFamily:
    """LLaVA-Rad through ``LlavaRadForCausalLM`` and ``LlavaRadProcessor`` (see ``vlm_torch.llava_rad``)."""

    name = "llava_rad"

    def load(
        self,
        model_path: str,
        *,
        quantization: str = "auto",
        image_size: int | None = None,
        device: str | None = None,
    ) -> tuple[Any, Any]:
        from vlm_torch.llava_rad.modeling import LlavaRadForCausalLM
        from vlm_torch.llava_rad.processing import LlavaRadProcessor

        resolved = resolve_quantization(quantization, device or default_device())
        print(resolved.message, flush=True)
        processor = LlavaRadProcessor.from_pretrained(model_path)
        kwargs = load_kwargs(resolved)
        if kwargs.get("quantization_config") is not None:
            bnb = copy.deepcopy(kwargs["quantization_config"])
            bnb.llm_int8_skip_modules = list(NOT_QUANTISED)
            kwargs["quantization_config"] = bnb
        model = LlavaRadForCausalLM.from_pretrained(model_path, **kwargs)
        fit_cpu_4bit_kernels(model)
        model.vlm_quantization = resolved  # what was used, for the run folder's config.json
        if image_size is not None and image_size != processor.image_size:
            logger.warning(
                "image_size %d differs from LLaVA-Rad's vision tower (%d px, fixed by its position embedding): "
                "images are resized to %d px",
                image_size,
                processor.image_size,
                processor.image_size,
            )
        return model, processor

    def tokenizer(self, processor: Any) -> Any:
        return processor.tokenizer

    def training_batch(self, processor: Any, images: Sequence[np.ndarray], answers: Sequence[str]) -> dict[str, Any]:
        return processor(images, [QUESTION] * len(images), answers, padding_side="right")

    def prompt_batch(self, processor: Any, images: Sequence[np.ndarray]) -> dict[str, Any]:
        return processor(images, [QUESTION] * len(images), padding_side="left")

    def lora_target_modules(self, model: Any, include_projector: bool = False) -> list[str]:
        return language_model_linear_names(model, LANGUAGE_PREFIXES, PROJECTOR_PREFIXES, include_projector)


__all__ = ["LlavaRadFamily"]
