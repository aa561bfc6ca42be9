"""The registry of VLM families: one entry per ``--model`` value, imported only when asked for."""

from __future__ import annotations

import importlib

from vlm_torch.families.base import IGNORE_INDEX, Family

# name -> "module:class"; modules import torch and transformers, so they load on demand.
FAMILIES = {
    "medgemma": "vlm_torch.families.medgemma:MedGemmaFamily",
    "llava_rad": "vlm_torch.families.llava_rad:LlavaRadFamily",
}


def get_family(name: str) -> Family:
    try:
        target = FAMILIES[name]
    except KeyError:
        valid = ", ".join(repr(family) for family in sorted(FAMILIES))
        raise ValueError(f"Expected a VLM family among {valid}, but got `model={name!r}`.") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)()


__all__ = ["FAMILIES", "IGNORE_INDEX", "Family", "get_family"]
