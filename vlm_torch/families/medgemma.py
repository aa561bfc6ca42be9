"""MedGemma 4B (Gemma 3: SigLIP vision tower + Gemma 3 language model) as a VLM family.

    family = get_family("medgemma")
    model, processor = family.load("google/medgemma-4b-it")       # or a local folder; 4-bit where possible
    batch = family.training_batch(processor, images, ["B: Fracture or dislocation", ...])
    model(**batch).loss                                            # the answer's tokens only

Batches go through the processor's chat template (user turn: the image and the question; model turn:
the answer) and carry the processor's ``token_type_ids``: Gemma 3 builds its attention mask from them,
letting the image tokens attend to each other both ways. Without them the model silently gives the image
tokens causal attention, unlike in its pre-training, in training and scoring alike.

Reference: Sellergren et al., "MedGemma Technical Report", 2025; Gemma Team, "Gemma 3 Technical Report", 2025.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlm_torch.families.base import IGNORE_INDEX
from vlm_torch.lora import language_model_linear_names
from vlm_torch.precision import fit_cpu_4bit_kernels, load_kwargs, resolve_quantization
from vlm_torch.prompts import QUESTION

logger = logging.getLogger(__name__)


def to_rgb(image: np.ndarray) -> Image.Image:
    """A 2-D uint8 greyscale radiograph as an RGB PIL image (the grey value in all three channels)."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 greyscale image, got shape {image.shape} and dtype {image.dtype}")
    return Image.fromarray(image, mode="L").convert("RGB")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class MedGemmaFamily:
    """MedGemma through transformers' ``AutoModelForImageTextToText`` (``Gemma3ForConditionalGeneration``)
    and ``AutoProcessor`` (``Gemma3Processor``; its PIL image processor, so torchvision is not needed)."""

    name = "medgemma"
    language_prefixes = ("model.language_model",)
    # Gemma 3's projector is an RMS norm and a bare matrix (no nn.Linear): LoRA has nothing to adapt there.
    projector_prefixes = ("model.multi_modal_projector",)

    def load(
        self,
        model_path: str,
        *,
        quantization: str = "auto",
        image_size: int | None = None,
        device: str | None = None,
    ) -> tuple[Any, Any]:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        resolved = resolve_quantization(quantization, device or default_device())
        print(resolved.message, flush=True)
        processor = AutoProcessor.from_pretrained(model_path)
        model = AutoModelForImageTextToText.from_pretrained(model_path, **load_kwargs(resolved))
        fit_cpu_4bit_kernels(model)
        model.vlm_quantization = resolved  # what was used, for the run folder's config.json
        native = model.config.vision_config.image_size
        if image_size is not None and image_size != native:
            logger.warning(
                "image_size %d differs from MedGemma's vision tower (%d px): images are resized to %d px",
                image_size,
                native,
                native,
            )
        return model, processor

    def tokenizer(self, processor: Any) -> Any:
        return processor.tokenizer

    def _messages(self, answer: str | None) -> list[dict[str, Any]]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return messages

    def prompt_text(self, processor: Any) -> str:
        """The chat template's text up to the generation prompt (the image as a single placeholder)."""
        return processor.apply_chat_template(self._messages(None), add_generation_prompt=True, tokenize=False)

    def _encode(self, processor: Any, texts: list[str], images: Sequence[np.ndarray], side: str) -> dict[str, Any]:
        if len(texts) != len(images):
            raise ValueError(f"got {len(images)} images for {len(texts)} texts")
        batch = processor(
            text=texts,
            images=[[to_rgb(image)] for image in images],
            padding="longest",
            padding_side=side,
            return_tensors="pt",
        )
        if "token_type_ids" not in batch:
            raise RuntimeError(
                "the processor returned no token_type_ids: Gemma 3 needs them to let image tokens attend both "
                "ways; use transformers' Gemma3Processor"
            )
        return dict(batch)

    def training_batch(self, processor: Any, images: Sequence[np.ndarray], answers: Sequence[str]) -> dict[str, Any]:
        prompt = self.prompt_text(processor)
        texts = []
        for answer in answers:
            text = processor.apply_chat_template(self._messages(answer), tokenize=False)
            if not text.startswith(prompt):
                raise RuntimeError(
                    "the chat template's prompt is not a prefix of the conversation with the answer: "
                    f"{prompt!r} vs {text!r}"
                )
            texts.append(text)
        batch = self._encode(processor, texts, images, "right")
        # The prompt's tokens (image tokens included), from the same processor: the answer starts after them.
        prompt_ids = self._encode(processor, [prompt], images[:1], "right")["input_ids"][0]
        n_prompt = len(prompt_ids)
        end_of_turn = processor.tokenizer.convert_tokens_to_ids("<end_of_turn>")
        input_ids = batch["input_ids"]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for row, ids in enumerate(input_ids):
            if not torch.equal(ids[:n_prompt], prompt_ids):
                raise RuntimeError("the prompt tokenises differently alone and before the answer: cannot mask it")
            ends = (ids[n_prompt:] == end_of_turn).nonzero()
            if len(ends) == 0:
                raise RuntimeError("no <end_of_turn> after the answer: is this Gemma 3's chat template?")
            stop = n_prompt + int(ends[0]) + 1  # the answer and its end-of-turn token
            labels[row, n_prompt:stop] = ids[n_prompt:stop]
        batch["labels"] = labels
        return batch

    def prompt_batch(self, processor: Any, images: Sequence[np.ndarray]) -> dict[str, Any]:
        return self._encode(processor, [self.prompt_text(processor)] * len(images), images, "left")

    def lora_target_modules(self, model: Any, include_projector: bool = False) -> list[str]:
        return language_model_linear_names(model, self.language_prefixes, self.projector_prefixes, include_projector)
