"""What every VLM family (MedGemma, LLaVA-Rad) gives the generic training, scoring and evaluation code.

A family knows how to load its model and processor, how to turn radiographs + answers into a batch,
and which linear layers LoRA adapts. Everything else (the training loop, greedy answers, the A/B
score, the metrics) is written once against this protocol:

    family = get_family("medgemma")
    model, processor = family.load(model_path, quantization="auto")
    batch = family.training_batch(processor, images, answers)   # labels: -100 except the answer
    loss = model(**batch).loss
    batch = family.prompt_batch(processor, images)              # left padded, ends where the answer starts
    logits = model(**batch).logits[:, -1]                       # the answer position
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

IGNORE_INDEX = -100  # labels with this value add nothing to the loss (PyTorch's cross-entropy default)


class Family(Protocol):
    name: str  # the registry key and the --model value

    def load(
        self, model_path: str, *, quantization: str = "auto", image_size: int | None = None, device: str | None = None
    ) -> tuple[Any, Any]:
        """(model, processor) from a local folder (or hub id), placed on ``device`` (default: CUDA if present, else
        the CPU). ``quantization``: auto | 4bit | bf16 | float32; vlm_torch.precision decides, the family prints
        which was used and keeps it as ``model.vlm_quantization`` (a ``vlm_torch.precision.Quantization``)."""
        ...

    def training_batch(self, processor: Any, images: Sequence[np.ndarray], answers: Sequence[str]) -> dict[str, Any]:
        """Tensors for ``model(**batch)``: the question with each image, followed by its answer and the end of
        the turn. ``labels`` are ``IGNORE_INDEX`` everywhere except the answer's tokens (and the end-of-turn
        token after them): the prompt, the image tokens and the padding add nothing to the loss. Right
        padding. MedGemma's batch carries the processor's ``token_type_ids``."""
        ...

    def prompt_batch(self, processor: Any, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """Tensors for ``model(**batch)`` / ``model.generate(**batch)``: the question with each image up to the
        generation prompt, LEFT padded, so that position -1 of every row is where the answer starts."""
        ...

    def tokenizer(self, processor: Any) -> Any:
        """The text tokenizer inside the processor."""
        ...

    def lora_target_modules(self, model: Any, include_projector: bool = False) -> list[str]:
        """Names (full module paths) of the linear layers LoRA adapts: all linear layers of the language
        model, and the vision-to-language projector's when ``include_projector``; never the vision tower
        or the output head."""
        ...
