"""LLaVA-Rad's inputs: the Vicuna v1 conversation it was trained with, one image token per patch, 518 px pixels.

    processor = LlavaRadProcessor.from_pretrained(converted_dir)
    batch = processor(images, [QUESTION] * len(images))                      # prompts, left padded
    batch = processor(images, [QUESTION] * len(images), answers=answers)     # + labels on the answers, right padded

The prompt is the one LLaVA-Rad's own evaluation builds (``conv_mode v1``)::

    {SYSTEM} USER: <image>\\n{question} ASSISTANT:

and is tokenised the way its ``tokenizer_image_token`` did: the text before and after ``<image>`` separately, the
second part without its BOS, so the ids (Llama's ``▁`` artefact after the image included) are the ones the model
saw in training. The ``<image>`` placeholder becomes ``num_image_tokens`` copies of ``image_token_id``; the model
swaps them for the image features. A training answer follows as ``" {answer}</s>"`` (the Vicuna v1 separator).

Images: 2-D uint8 greyscale arrays (any size) or RGB arrays/PIL images, resized to ``image_size`` x ``image_size``
(bicubic) and normalised with the vision tower's mean/std. The whole radiograph is kept (``resize="squash"``, as
the MedGemma side does); ``resize="center_crop"`` reproduces open_clip's shortest-side resize and centre crop,
which LLaVA-Rad's chest X-rays went through.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from vlm_torch.families.base import IGNORE_INDEX
from vlm_torch.llava_rad.configuration import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, LlavaRadConfig

PROCESSOR_FILE = "llava_rad_processor.json"
IMAGE_PLACEHOLDER = "<image>"
# LLaVA's conv_vicuna_v1 system prompt, which LLaVA-Rad was fine-tuned and evaluated with.
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
RESIZE_MODES = ("squash", "center_crop")


class LlavaRadProcessor:
    """Tokenizer + image transform + conversation template for ``LlavaRadForCausalLM``.

    Args:
        tokenizer: Vicuna's tokenizer with ``<image>`` added (the converter adds it).
        image_size: the vision tower's input side (518).
        num_image_tokens: image tokens per image, (image_size / patch_size) ** 2 (1369).
        image_mean, image_std: the vision tower's normalisation.
        resize: "squash" (whole image, aspect not kept) or "center_crop" (open_clip's transform).
        system_prompt: the conversation's system line.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        image_size: int = 518,
        num_image_tokens: int = 1369,
        image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        image_std: Sequence[float] = OPENAI_CLIP_STD,
        resize: str = "squash",
        system_prompt: str = VICUNA_V1_SYSTEM,
    ):
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
        if image_token_id is None or image_token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"the tokenizer has no {IMAGE_PLACEHOLDER!r} token: load the folder written by "
                "vlm_torch.llava_rad.convert (it adds one), not Vicuna's own tokenizer"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token: the converter sets Vicuna's <unk> as pad, as LLaVA did")
        self.tokenizer = tokenizer
        self.image_token_id = int(image_token_id)
        self.image_size = int(image_size)
        self.num_image_tokens = int(num_image_tokens)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.resize = resize
        self.system_prompt = system_prompt

    # ---------------------------------------------------------------- saving
    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "num_image_tokens": self.num_image_tokens,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "resize": self.resize,
            "system_prompt": self.system_prompt,
        }

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        os.makedirs(directory, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        with open(os.path.join(directory, PROCESSOR_FILE), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: Any) -> LlavaRadProcessor:
        path = os.path.join(directory, PROCESSOR_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: {directory} is not a converted LLaVA-Rad folder; write one with "
                "`python -m vlm_torch.llava_rad.convert`"
            )
        with open(path, encoding="utf-8") as f:
            settings = json.load(f)
        settings.update(overrides)
        # Hand AutoTokenizer the Llama text config: transformers does not know model_type "llava_rad" (on purpose).
        text_config = LlavaRadConfig.from_pretrained(directory).text_config
        return cls(AutoTokenizer.from_pretrained(directory, config=text_config), **settings)

    # ---------------------------------------------------------------- text
    def prompt_text(self, question: str) -> str:
        return f"{self.system_prompt} USER: {IMAGE_PLACEHOLDER}\n{question} ASSISTANT:"

    def _encode(self, text: str) -> list[int]:
        """LLaVA's tokenizer_image_token: chunks around the placeholder, BOS only at the start."""
        chunks = [self.tokenizer(chunk).input_ids for chunk in text.split(IMAGE_PLACEHOLDER)]
        bos = self.tokenizer.bos_token_id
        ids = list(chunks[0])
        for chunk in chunks[1:]:
            ids += [self.image_token_id] * self.num_image_tokens
            ids += chunk[1:] if chunk and chunk[0] == bos else chunk
        return ids

    def encode_prompt(self, question: str) -> list[int]:
        """Token ids of the prompt up to the assistant's turn (the answer starts at the next token)."""
        return self._encode(self.prompt_text(question))

    def encode_example(self, question: str, answer: str) -> tuple[list[int], list[int]]:
        """(ids, labels) of prompt + answer + ``</s>``; labels are IGNORE_INDEX except on the answer and ``</s>``."""
        prompt = self.encode_prompt(question)
        full = self._encode(f"{self.prompt_text(question)} {answer}")
        if full[: len(prompt)] != prompt or len(full) == len(prompt):
            raise ValueError(
                f"the answer {answer!r} does not tokenise as a continuation of the prompt (the tokenizer merges "
                "across the boundary); the loss mask would be wrong"
            )
        answer_ids = [*full[len(prompt) :], self.tokenizer.eos_token_id]
        return prompt + answer_ids, [IGNORE_INDEX] * len(prompt) + answer_ids

    # ---------------------------------------------------------------- images
    def pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        """(B, 3, image_size, image_size) float32, normalised."""
        return torch.stack([self._one_image(image) for image in images])

    def _one_image(self, image: Any) -> torch.Tensor:
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"expected a 2-D greyscale or HxWx3 RGB image, got an array of shape {array.shape}")
        if array.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels (0-255), got {array.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)[None]
        size = self.image_size
        if self.resize == "center_crop":
            height, width = x.shape[-2:]
            scale = size / min(height, width)
            new = (max(size, round(height * scale)), max(size, round(width * scale)))
            x = F.interpolate(x, size=new, mode="bicubic", align_corners=False, antialias=True)
            top, left = (new[0] - size) // 2, (new[1] - size) // 2
            x = x[..., top : top + size, left : left + size]
        else:
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)[0]
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        return (x - mean) / std

    # ---------------------------------------------------------------- batches
    def __call__(
        self,
        images: Sequence[Any],
        questions: Sequence[str],
        answers: Sequence[str] | None = None,
        *,
        padding_side: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """A batch for ``model(**batch)``: prompts only (left padded by default) or with ``answers`` (labels on the
        answers, right padded by default)."""
        if len(images) != len(questions) or (answers is not None and len(answers) != len(images)):
            raise ValueError(
                f"got {len(images)} images, {len(questions)} questions"
                + ("" if answers is None else f" and {len(answers)} answers")
                + ": give one of each per example"
            )
        if answers is None:
            rows = [(self.encode_prompt(q), None) for q in questions]
            padding_side = padding_side or "left"
        else:
            rows = [self.encode_example(q, a) for q, a in zip(questions, answers, strict=True)]
            padding_side = padding_side or "right"
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        length = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, row_labels) in enumerate(rows):
            span = slice(length - len(ids), length) if padding_side == "left" else slice(0, len(ids))
            input_ids[i, span] = torch.tensor(ids)
            attention_mask[i, span] = 1
            if row_labels is not None:
                labels[i, span] = torch.tensor(row_labels)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": self.pixel_values(images)}
        if answers is not None:
            batch["labels"] = labels
        return batch


__all__ = ["IMAGE_PLACEHOLDER", "PROCESSOR_FILE", "VICUNA_V1_SYSTEM", "LlavaRadProcessor"]
