"""A VLM's greedy answers and A/B scores on one exported split, batch by batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlm_torch import answers as answer_parsing
from vlm_torch import data as vlm_data


@dataclass
class SplitOutput:
    """One split's predictions, in the manifest's order (unreadable images left out and listed)."""

    ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    answers: list[str] | None = None
    parsed: list[str] | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def p_b(self) -> np.ndarray:
        return probability_of_b(np.asarray(self.scores, dtype=np.float64))


def probability_of_b(scores: np.ndarray) -> np.ndarray:
    """P(B | A or B) = sigmoid(log P(B) - log P(A)), computed without overflow; >= 0.5 exactly when P(B) >= P(A)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -scores))


def predict_split(
    family,
    model,
    processor,
    records: Sequence[vlm_data.Record],
    *,
    batch_size: int,
    preprocess: bool,
    image_size: int | None,
    generate: bool = True,
    max_new_tokens: int = 16,
    progress: bool = True,
) -> SplitOutput:
    """A/B scores (and greedy answers with ``generate``) for ``records``, batch by batch."""
    import torch

    from vlm_torch import scoring

    id_a, id_b = scoring.option_token_ids(family.tokenizer(processor))
    out = SplitOutput(answers=[] if generate else None, parsed=[] if generate else None)
    batches = vlm_data.iter_batches(
        records, batch_size, preprocess=preprocess, image_size=image_size, skipped=out.skipped
    )
    bar = _progress(len(records), progress)
    with torch.inference_mode():
        for chosen, images in batches:
            batch = _to_model(family.prompt_batch(processor, images), model)
            out.scores.extend(float(s) for s in np.asarray(scoring.ab_scores(model, batch, id_a, id_b)).reshape(-1))
            if generate:
                texts = scoring.generate_answers(model, family, processor, batch, max_new_tokens=max_new_tokens)
                out.answers.extend(texts)
                out.parsed.extend(answer_parsing.parse_answer(t) for t in texts)
            out.ids.extend(r.id for r in chosen)
            out.labels.extend(r.label for r in chosen)
            out.groups.extend(r.extra.get("group", r.id) for r in chosen)
            bar.update(len(chosen))
    bar.close()
    if len(out.scores) != len(out.ids):
        raise RuntimeError(f"ab_scores gave {len(out.scores)} scores for {len(out.ids)} images")
    return out


def _to_model(batch: dict[str, Any], model) -> dict[str, Any]:
    """Floating tensors (pixel values) in the dtype of the model's input embeddings (bf16 for a bf16 model)."""
    import torch

    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    dtype = getattr(getattr(embeddings, "weight", None), "dtype", None)
    if dtype is None:
        return batch
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in batch.items()}


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="image", dynamic_ncols=True)
