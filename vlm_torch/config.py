"""The VLM track's configuration: frozen dataclasses, with the method's hyper-parameters as presets.

    from vlm_torch.config import get_preset
    config = get_preset("medgemma")          # 896 px, LoRA r16/a32, lr 8e-5, 5 epochs, ...
    config = config.replace(train={"epochs": 1})

Both models: AdamW, batch 32 as 4 steps of 8 (gradient accumulation), linear decay, weight decay 1e-3,
max grad norm 0.03, LoRA on all linear layers of the language model, base weights in 4 bits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tf_fracture.validation import check_choice, check_int, check_number, check_rate

QUANTIZATIONS = ("auto", "4bit", "bf16", "float32")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    include_projector: bool = False  # also adapt the vision-to-language projector's linear layers

    def __post_init__(self):
        check_int("lora.rank", self.rank)
        check_number("lora.alpha", self.alpha, 0.0, low_inclusive=False)
        check_rate("lora.dropout", self.dropout)


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 5
    learning_rate: float = 8e-5
    batch_size: int = 8  # per step; the effective batch is batch_size * grad_accumulation
    grad_accumulation: int = 4
    weight_decay: float = 1e-3
    max_grad_norm: float = 0.03
    warmup_steps: int = 0
    gradient_checkpointing: bool = True
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size", "grad_accumulation"):
            check_int(f"train.{name}", getattr(self, name))
        for name in ("learning_rate", "max_grad_norm"):
            check_number(f"train.{name}", getattr(self, name), 0.0, low_inclusive=False)
        check_number("train.weight_decay", self.weight_decay, 0.0)
        check_int("train.warmup_steps", self.warmup_steps, minimum=0)
        check_int("train.seed", self.seed, minimum=0)


@dataclass(frozen=True)
class VLMConfig:
    model: str  # a family in vlm_torch.families: "medgemma" or "llava_rad"
    image_size: int
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    quantization: str = "auto"  # auto: 4-bit NF4 where bitsandbytes supports the device, else bf16
    preprocess: bool = False  # CLAHE + unsharp masking (the CNN side's parameters) before the processor

    def __post_init__(self):
        check_int("image_size", self.image_size)
        check_choice("quantization", self.quantization, QUANTIZATIONS)

    def replace(self, **changes: Any) -> VLMConfig:
        """A copy with fields changed; ``lora`` and ``train`` take a dict of their own fields."""
        for section in ("lora", "train"):
            if isinstance(changes.get(section), dict):
                changes[section] = dataclasses.replace(getattr(self, section), **changes[section])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VLMConfig:
        data = dict(data)
        lora = LoraSettings(**data.pop("lora", {}))
        train = TrainSettings(**data.pop("train", {}))
        return cls(lora=lora, train=train, **data)


PRESETS: MappingProxyType[str, VLMConfig] = MappingProxyType(
    {
        # MedGemma 4B (Gemma 3): 896 px, LoRA r16 / alpha 32, 5 epochs at 8e-5.
        "medgemma": VLMConfig(
            model="medgemma",
            image_size=896,
            lora=LoraSettings(rank=16, alpha=32),
            train=TrainSettings(epochs=5, learning_rate=8e-5),
        ),
        # LLaVA-Rad (Vicuna-7B + BiomedCLIP-CXR 518 px), from its alignment-stage checkpoint:
        # LoRA r32 / alpha 64, 4 epochs at 1e-4, otherwise as MedGemma.
        "llava_rad": VLMConfig(
            model="llava_rad",
            image_size=518,
            lora=LoraSettings(rank=32, alpha=64),
            train=TrainSettings(epochs=4, learning_rate=1e-4),
        ),
    }
)


def get_preset(model: str) -> VLMConfig:
    try:
        return PRESETS[model]
    except KeyError:
        valid = ", ".join(repr(name) for name in sorted(PRESETS))
        raise ValueError(f"Expected `model` to be one of {valid}, but got `model={model!r}`.") from None
