"""What a VLM evaluation loads: a training run folder, or a base model (with an optional LoRA adapter)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from vlm_torch.config import VLMConfig, get_preset
from vlm_torch.families import FAMILIES, get_family

RUN_CONFIG = "config.json"


ADAPTER = "adapter"


@dataclass(frozen=True)
class ModelSource:
    """What to load: a family's base model, optionally with a LoRA adapter, and how the images are prepared."""

    model: str  # the family (registry key)
    model_path: str
    adapter: str | None = None
    quantization: str = "auto"
    image_size: int | None = None
    preprocess: bool = False
    run_dir: str | None = None
    data_dir: str | None = None  # the run's training data (the default --data)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def is_run_dir(path: str | os.PathLike) -> bool:
    """A ``python -m vlm_torch.train`` run folder: ``config.json`` naming the base model (``model_path``)."""
    config = os.path.join(path, RUN_CONFIG)
    if not os.path.isfile(config):
        return False
    with open(config, encoding="utf-8") as f:
        try:
            return "model_path" in json.load(f)
        except json.JSONDecodeError:
            return False


def resolve_source(
    target: str,
    *,
    model: str | None = None,
    model_path: str | None = None,
    adapter: str | None = None,
    quantization: str | None = None,
    preprocess: bool | None = None,
) -> ModelSource:
    """The model to evaluate: a training run (its config, base model and ``adapter/``) or a base model.

    ``target`` is a run folder, or a model folder / hub id (then ``model`` names the family). Flags given
    explicitly win over the run's config.
    """
    if is_run_dir(target):
        with open(os.path.join(target, RUN_CONFIG), encoding="utf-8") as f:
            saved = json.load(f)
        config = VLMConfig.from_dict(saved["config"]) if "config" in saved else None
        family = model or (config.model if config else None)
        if family is None:
            raise ValueError(f"{os.path.join(target, RUN_CONFIG)} names no model family: pass --model.")
        run_adapter = os.path.join(target, ADAPTER)
        if adapter is None:
            if not os.path.isfile(os.path.join(run_adapter, "adapter_config.json")):
                raise FileNotFoundError(
                    f"{target!r} has no {ADAPTER}/adapter_config.json: the training did not finish. Finish it "
                    "(rerun the same train command: it resumes), or pass --adapter."
                )
            adapter = run_adapter
        used = saved.get("quantization", {})
        return ModelSource(
            model=family,
            model_path=model_path or saved["model_path"],
            adapter=adapter,
            quantization=quantization or (used.get("used") if isinstance(used, dict) else None) or "auto",
            image_size=config.image_size if config else None,
            preprocess=config.preprocess if (config and preprocess is None) else bool(preprocess),
            run_dir=str(target),
            data_dir=saved.get("data"),
        )
    if model is None:
        raise ValueError(
            f"{target!r} is not a training run (no {RUN_CONFIG} with a model_path): name its family with "
            f"--model ({', '.join(sorted(FAMILIES))}), or pass a run folder."
        )
    preset = get_preset(model)
    return ModelSource(
        model=model,
        model_path=model_path or target,
        adapter=adapter,
        quantization=quantization or preset.quantization,
        image_size=preset.image_size,
        preprocess=bool(preprocess),
    )


def load_model(source: ModelSource):
    """(family, model, processor) in eval mode; the adapter (PEFT) over the base model when there is one."""
    family = get_family(source.model)
    model, processor = family.load(source.model_path, quantization=source.quantization, image_size=source.image_size)
    if source.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.adapter)
    model.eval()
    return family, model, processor
