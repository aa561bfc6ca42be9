"""A VLM's answers as text and as a score: greedy generation, and log P(B) - log P(A) at the answer position.

    id_a, id_b = option_token_ids(family.tokenizer(processor))
    batch = family.prompt_batch(processor, images)             # left padded: row ends where the answer starts
    scores = ab_scores(model, batch, id_a, id_b)               # float64, one forward pass; AUROC from these
    answers = generate_answers(model, family, processor, batch)

The method parsed greedy answers only, so it had no score to rank images by and could not report AUROC.
The first token of "A: No injury" and of "B: Fracture or dislocation" differ, so the difference of their
log-probabilities at the first answer position is a continuous fracture score.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from vlm_torch.prompts import target_answer


def _generation_prefix(tokenizer: Any) -> str | None:
    """The chat template's text that ends where the model's answer starts, or None without a template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=False
        )
    except Exception:  # a template that wants another message layout: fall back to the bare answer
        return None


def option_token_ids(tokenizer: Any) -> tuple[int, int]:
    """(id of A, id of B): the first token of each option's completion ("A: No injury", "B: Fracture or
    dislocation") as the model produces it after the generation prompt. Raises ``ValueError`` when they are
    the same token (the score would be 0 for every image)."""
    prefix = _generation_prefix(tokenizer)
    ids = []
    for label in (0, 1):
        answer = target_answer(label)
        if prefix is None:
            ids.append(tokenizer(answer, add_special_tokens=False)["input_ids"][0])
            continue
        head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        full = tokenizer(prefix + answer, add_special_tokens=False)["input_ids"]
        if full[: len(head)] != head:
            raise ValueError(f"the answer {answer!r} changes how the generation prompt {prefix!r} tokenises")
        ids.append(full[len(head)])
    id_a, id_b = ids
    if id_a == id_b:
        token = tokenizer.convert_ids_to_tokens(id_a)
        raise ValueError(
            f"options A and B start with the same token {token!r} (id {id_a}): log P(B) - log P(A) at the first "
            "answer position cannot tell them apart"
        )
    return int(id_a), int(id_b)


def _accepts(model: Any, argument: str) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return argument in inspect.signature(base.forward).parameters


def _check_left_padded(batch: dict[str, Any]) -> None:
    mask = batch.get("attention_mask")
    if mask is not None and not bool(mask[:, -1].all()):
        raise ValueError(
            "the prompt batch must be LEFT padded (every row's last position a real token): use family.prompt_batch"
        )


def _on_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


@torch.no_grad()
def ab_scores(model: Any, batch: dict[str, Any], id_a: int, id_b: int) -> np.ndarray:
    """log P(B) - log P(A) of the first answer token, one value per row of a left-padded prompt batch,
    in float64: one forward pass. Position ids count real tokens only, so a row scores the same alone
    or beside a longer one."""
    _check_left_padded(batch)
    inputs = _on_device({key: value for key, value in batch.items() if key != "labels"}, model.device)
    mask = inputs.get("attention_mask")
    if mask is not None and "position_ids" not in inputs and _accepts(model, "position_ids"):
        inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(**inputs, use_cache=False).logits[:, -1, :]
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return (log_probs[:, id_b] - log_probs[:, id_a]).cpu().numpy()


@torch.no_grad()
def generate_answers(
    model: Any, family: Any, processor: Any, batch: dict[str, Any], max_new_tokens: int = 16
) -> list[str]:
    """Greedy answers to a left-padded prompt batch: only the new tokens, decoded without special tokens."""
    _check_left_padded(batch)
    tokenizer = family.tokenizer(processor)
    inputs = _on_device({key: value for key, value in batch.items() if key != "labels"}, model.device)
    output = model.generate(
        **inputs,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
