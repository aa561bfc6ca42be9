"""Convert the published LLaVA-Rad checkpoint into a folder ``LlavaRadForCausalLM.from_pretrained`` reads.

    python -m vlm_torch.llava_rad.convert --published PATH/llava-rad --vicuna PATH/vicuna-7b-v1.5 --out PATH/out
    # --vision-checkpoint / --vision-config default to the files named in the published config.json

LLaVA-Rad was trained on chest X-rays only (MIMIC-CXR findings generation); see ``vlm_torch.llava_rad.modeling``.

What is published where (all local folders; nothing is downloaded here):

- ``microsoft/llava-rad`` (Hugging Face; Microsoft Research License: non-commercial research use, no
  redistribution of the models, no clinical use):
  ``config.json`` (``model_type "llava"``: Vicuna's Llama settings plus ``mm_vision_tower``,
  ``mm_projector_type "mlp2x_gelu"``, ``mm_hidden_size``, ``mm_vision_select_layer -2``,
  ``mm_vision_select_feature "patch"``), ``adapter_config.json`` + ``adapter_model.bin`` (a PEFT LoRA over
  Vicuna's q/k/v/o/gate/up/down projections, keys ``base_model.model.model.layers.N...lora_A/B.weight``),
  ``non_lora_trainables.bin`` (the projector, ``base_model.model.model.mm_projector.{0,2}.{weight,bias}``),
  ``biomedclipcxr_518_checkpoint.pt`` (an open_clip training checkpoint of BiomedCLIP-CXR; its image trunk is
  ``module.visual.trunk.*`` in timm's ViT names) and ``biomedclipcxr_518.json`` (its open_clip model config).
- ``lmsys/vicuna-7b-v1.5`` (Hugging Face; Llama 2 Community License): the base language model and tokenizer.

The conversion merges the LoRA into the Llama weights (``W + (lora_alpha / r) B A``; ``alpha / sqrt(r)`` under
rsLoRA), so the port is a plain model on which our own LoRA fine-tuning runs; attaches the projector and the image
trunk up to the block LLaVA-Rad reads (``mm_vision_select_layer``); adds ``<image>`` to the tokenizer right after
Vicuna's vocabulary (the embedding and the head keep Vicuna's 32,000 rows); sets ``<unk>`` as the pad token, as
LLaVA's training did; and writes ``conversion.json`` saying what was merged. ``merge_lora=False`` keeps Vicuna's
weights and writes the published LoRA as a PEFT adapter the port loads (``lora_adapter/``). An alignment-stage
folder (LLaVA-Rad's ``scripts/pretrain.sh`` output: ``config.json`` + ``mm_projector.bin``, keys
``model.mm_projector.*``, no LoRA) converts the same way, with nothing to merge.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

PROJECTOR_TYPE = "mlp2x_gelu"
TRUNK_PREFIX = "visual.trunk."
ADAPTER_DIR = "lora_adapter"
# timm's ViTs (and DINOv2's) use 64-wide attention heads; an open_clip vision_cfg may say otherwise (head_width).
DEFAULT_HEAD_WIDTH = 64
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
_UNSUPPORTED_TRUNK = ("reg_token", "norm_pre.weight", "attn.q_norm.weight", "fc_norm.weight")


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _load_tensors(path: Path) -> dict[str, Any]:
    """A torch pickle (weights only, never arbitrary objects) or a safetensors file."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError subclasses and RuntimeError here
        raise ValueError(
            f"{path} could not be read as a weights-only torch file ({error}); re-save its tensors with "
            "torch.save(state_dict) or as safetensors"
        ) from error


def _first_existing(directory: Path, names: Sequence[str], what: str) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{what} not found in {directory}: expected one of {list(names)}")


# ------------------------------------------------------------------------------------------------ LoRA
def lora_factors(adapter_dir: Path) -> tuple[dict[str, tuple[float, torch.Tensor, torch.Tensor]], dict[str, Any]]:
    """{Llama weight name: (scale, A, B)} from a PEFT adapter folder, and a summary; the weight's update is
    ``scale * B @ A`` (formed one module at a time when merging: all of them at once would not fit in memory)."""
    config = json.loads(_require(adapter_dir / "adapter_config.json", "the LoRA adapter config").read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{adapter_dir}/adapter_config.json: peft_type {config.get('peft_type')!r} is not LORA")
    for flag in ("use_dora", "fan_in_fan_out"):
        if config.get(flag):
            raise ValueError(f"{adapter_dir}/adapter_config.json: {flag}=true is not supported by this converter")
    if config.get("alpha_pattern"):
        raise ValueError(f"{adapter_dir}/adapter_config.json: a non-empty alpha_pattern is not supported")
    for key in ("r", "lora_alpha"):
        if key not in config:
            raise KeyError(f"{adapter_dir}/adapter_config.json has no {key!r}")
    alpha = float(config["lora_alpha"])
    weights = _load_tensors(
        _first_existing(adapter_dir, ("adapter_model.safetensors", "adapter_model.bin"), "the LoRA weights")
    )
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise KeyError(f"unexpected key {key!r} in the LoRA weights: expected '...<module>.lora_A/B.weight'")
        pairs.setdefault(match["module"], {})[match["ab"]] = tensor
    factors = {}
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise KeyError(f"LoRA module {module!r} has lora_{'B' if 'A' in pair else 'A'} missing")
        rank = pair["A"].shape[0]  # the per-module rank (a rank_pattern may differ from config["r"])
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        factors[f"{module}.weight"] = (scale, pair["A"], pair["B"])
    summary = {
        "r": config["r"],
        "lora_alpha": alpha,
        "use_rslora": bool(config.get("use_rslora", False)),
        "target_modules": config.get("target_modules"),
        "merged_modules": len(factors),
    }
    return factors, summary


# ------------------------------------------------------------------------------------------------ vision
def trunk_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The image trunk's tensors (timm names) from an open_clip checkpoint, DDP's ``module.`` prefix removed."""
    raw = _load_tensors(checkpoint)
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint} holds no state dict")
    trunk = {}
    for key, tensor in state.items():
        key = key.removeprefix("module.")
        if key.startswith(TRUNK_PREFIX):
            trunk[key[len(TRUNK_PREFIX) :]] = tensor
    if not trunk:
        raise KeyError(f"{checkpoint} has no '{TRUNK_PREFIX}*' (or 'module.{TRUNK_PREFIX}*') keys: not open_clip's")
    return trunk


def vision_config_from(trunk: dict[str, torch.Tensor], open_clip_config: dict, select_layer: int) -> dict:
    """LlavaRadVisionConfig kwargs read off the trunk's tensors (and the open_clip config where tensors are silent)."""
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"):
        if key not in trunk:
            raise KeyError(f"the vision checkpoint has no '{TRUNK_PREFIX}{key}'")
    unsupported = [k for k in trunk if any(k == u or k.endswith("." + u) for u in _UNSUPPORTED_TRUNK)]
    if unsupported:
        raise ValueError(f"the vision trunk uses parts this port does not implement: {sorted(unsupported)[:4]}")
    width = trunk["cls_token"].shape[-1]
    patch = trunk["patch_embed.proj.weight"].shape[-1]
    positions = trunk["pos_embed"].shape[1] - 1
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise ValueError(f"pos_embed has {positions + 1} rows: expected a class token + a square grid of patches")
    depth = 1 + max(int(k.split(".")[1]) for k in trunk if k.startswith("blocks."))
    vision_cfg = open_clip_config.get("vision_cfg", {})
    if vision_cfg.get("image_size") not in (None, grid * patch):
        raise ValueError(
            f"the open_clip config says image_size {vision_cfg['image_size']} but the trunk's position "
            f"embedding is for {grid * patch} px ({grid} x {grid} patches of {patch})"
        )
    if not -depth <= select_layer < depth + 1:
        raise ValueError(f"mm_vision_select_layer {select_layer} is outside the trunk's {depth} blocks")
    # hidden_states = [embeddings, block 0, ..., block depth-1]: index select_layer needs this many blocks to run.
    blocks_run = select_layer % (depth + 1)
    preprocess = open_clip_config.get("preprocess_cfg", {})
    return {
        "image_size": grid * patch,
        "patch_size": patch,
        "hidden_size": width,
        "num_hidden_layers": blocks_run,
        "num_attention_heads": width // int(vision_cfg.get("head_width", DEFAULT_HEAD_WIDTH)),
        "intermediate_size": trunk["blocks.0.mlp.fc1.weight"].shape[0],
        "layer_scale": "blocks.0.ls1.gamma" in trunk,
        "image_mean": preprocess.get("mean", vision_cfg.get("image_mean")),
        "image_std": preprocess.get("std", vision_cfg.get("image_std")),
        "source_depth": depth,
        "select_layer": select_layer,
    }


# ------------------------------------------------------------------------------------------------ convert
def _published_config(published_dir: Path) -> dict:
    config = json.loads(_require(published_dir / "config.json", "the published config.json").read_text())
    checks = {
        "mm_projector_type": PROJECTOR_TYPE,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
    }
    for key, expected in checks.items():
        if config.get(key, expected) != expected:
            raise ValueError(
                f"{published_dir}/config.json: {key}={config[key]!r}; this port implements {key}={expected!r}"
            )
    for key in ("mm_hidden_size", "hidden_size"):
        if key not in config:
            raise KeyError(f"{published_dir}/config.json has no {key!r}: is this a LLaVA(-Rad) checkpoint?")
    return config


def _projector(published_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """({mm_projector.* tensors}, {other Llama tensors the training also updated}) from ``non_lora_trainables.bin``
    (the LoRA fine-tuned checkpoint) or ``mm_projector.bin`` (an alignment-stage folder: the projector alone)."""
    names = ("non_lora_trainables.bin", "mm_projector.bin")
    path = _first_existing(published_dir, names, "the projector weights")
    raw = _load_tensors(path)
    projector, other = {}, {}
    for key, tensor in raw.items():
        name = key.removeprefix("base_model.model.")  # PEFT's wrapper; what is left is LlavaLlamaForCausalLM's name
        if name.startswith("model.mm_projector."):
            projector[name.removeprefix("model.")] = tensor
        else:
            other[name] = tensor
    expected = {f"mm_projector.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    missing = expected - set(projector)
    if missing or set(projector) - expected:
        raise KeyError(
            f"{path.name}: expected the mlp2x_gelu projector {sorted(expected)}, "
            f"missing {sorted(missing)}, unexpected {sorted(set(projector) - expected)}"
        )
    return projector, other


def convert_llava_rad(
    published_dir: str | os.PathLike,
    vicuna_dir: str | os.PathLike,
    vision_checkpoint: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    merge_lora: bool = True,
    *,
    vision_config: str | os.PathLike | None = None,
    dtype: str = "auto",
) -> Path:
    """Write a ``LlavaRadForCausalLM`` + ``LlavaRadProcessor`` folder from the published layout; returns ``out_dir``.

    Args:
        published_dir: the ``microsoft/llava-rad`` folder (config.json, adapter_*, non_lora_trainables.bin).
        vicuna_dir: the ``lmsys/vicuna-7b-v1.5`` folder (weights + tokenizer).
        vision_checkpoint: the BiomedCLIP-CXR open_clip checkpoint; None: the file the published config names.
        out_dir: where to write (created).
        merge_lora: merge the LoRA into the weights (True) or keep it as a PEFT adapter in ``lora_adapter/``.
        vision_config: the open_clip model config JSON; None: ``biomedclipcxr_518.json`` next to the checkpoint or
            in ``published_dir`` if there is one (it only confirms the image size and gives mean/std).
        dtype: the saved weights' dtype: auto (Vicuna's), float32, bfloat16 or float16.
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    from vlm_torch.llava_rad.configuration import LlavaRadConfig
    from vlm_torch.llava_rad.modeling import LlavaRadForCausalLM
    from vlm_torch.llava_rad.processing import IMAGE_PLACEHOLDER, LlavaRadProcessor

    published_dir, vicuna_dir, out_dir = Path(published_dir), Path(vicuna_dir), Path(out_dir)
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    published = _published_config(published_dir)
    if vision_checkpoint is None:
        named = published.get("mm_vision_tower_checkpoint")
        if not named:
            raise ValueError("the published config.json names no mm_vision_tower_checkpoint: pass vision_checkpoint")
        vision_checkpoint = published_dir / Path(named).name
    vision_checkpoint = _require(Path(vision_checkpoint), "the BiomedCLIP-CXR vision checkpoint")
    if vision_config is None:
        named = Path(published.get("mm_vision_tower_config") or "biomedclipcxr_518.json").name
        candidates = [vision_checkpoint.parent / named, published_dir / named, published_dir / "biomedclipcxr_518.json"]
        vision_config = next((p for p in candidates if p.is_file()), None)
    open_clip_config = json.loads(Path(vision_config).read_text()) if vision_config is not None else {}
    if not (vicuna_dir / "config.json").is_file():
        raise FileNotFoundError(f"the Vicuna base model not found: {vicuna_dir}/config.json")

    llama = LlamaForCausalLM.from_pretrained(vicuna_dir, dtype=torch.float32 if dtype == "float32" else "auto")
    target_dtype = llama.dtype if dtype == "auto" else getattr(torch, dtype)
    text_config = llama.config
    for key in ("hidden_size", "num_hidden_layers", "vocab_size"):
        if key in published and published[key] != getattr(text_config, key):
            raise ValueError(
                f"the Vicuna model at {vicuna_dir} has {key}={getattr(text_config, key)} but the published "
                f"config.json says {published[key]}: wrong base model"
            )

    # 1. the language model: Vicuna + merged LoRA (+ any other tensors the fine-tuning saved)
    projector, other = _projector(published_dir)
    params = dict(llama.named_parameters())
    summary: dict[str, Any] = {"merged": False}
    alignment_stage = not (published_dir / "non_lora_trainables.bin").is_file()
    if alignment_stage:
        # pretrain.sh's output: Vicuna + the projector, no LoRA (the projector was the only thing trained)
        summary["note"] = "alignment-stage checkpoint (mm_projector.bin): no LoRA to merge"
    elif merge_lora:
        factors, summary = lora_factors(published_dir)
        summary["merged"] = True
        with torch.no_grad():
            for name, (scale, a, b) in factors.items():
                if name not in params:
                    raise KeyError(f"the LoRA adapts {name!r}, which the Vicuna model does not have")
                delta = scale * (b.float() @ a.float())
                if params[name].shape != delta.shape:
                    raise ValueError(
                        f"LoRA delta for {name} has shape {tuple(delta.shape)}, the weight {tuple(params[name].shape)}"
                    )
                params[name].copy_((params[name].float() + delta).to(params[name].dtype))
    with torch.no_grad():
        for name, tensor in other.items():
            if name not in params:
                raise KeyError(f"non_lora_trainables.bin holds {name!r}, which is neither the projector nor in Vicuna")
            params[name].copy_(tensor.to(params[name].dtype))

    # 2. the tokenizer: <image> after the vocabulary, <unk> as pad (LLaVA v1's choice)
    tokenizer = AutoTokenizer.from_pretrained(vicuna_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_PLACEHOLDER]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)

    # 3. the port: Vicuna's modules as they are, the trunk and the projector loaded strictly
    trunk = trunk_state_dict(vision_checkpoint)
    vision_kwargs = vision_config_from(trunk, open_clip_config, int(published.get("mm_vision_select_layer", -2)))
    if vision_kwargs["hidden_size"] != published["mm_hidden_size"]:
        raise ValueError(
            f"the vision trunk is {vision_kwargs['hidden_size']} wide but the published mm_hidden_size is "
            f"{published['mm_hidden_size']}: wrong vision checkpoint"
        )
    config = LlavaRadConfig(text_config=text_config, vision_config=vision_kwargs, image_token_id=image_token_id)
    with torch.device("meta"):
        port = LlavaRadForCausalLM(config)
    port.model, port.lm_head = llama.model, llama.lm_head
    port.vision_tower.to_empty(device="cpu")
    port.mm_projector.to_empty(device="cpu")
    wanted = {k: v for k, v in trunk.items() if k in port.vision_tower.state_dict()}
    port.vision_tower.load_state_dict(wanted, strict=True)
    port.mm_projector.load_state_dict({k.removeprefix("mm_projector."): v for k, v in projector.items()}, strict=True)
    port.to(target_dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    port.save_pretrained(out_dir)
    LlavaRadProcessor(
        tokenizer,
        image_size=config.vision_config.image_size,
        num_image_tokens=config.vision_config.num_patches,
        image_mean=config.vision_config.image_mean,
        image_std=config.vision_config.image_std,
    ).save_pretrained(out_dir)
    if not merge_lora and not alignment_stage:
        _copy_adapter(published_dir, out_dir / ADAPTER_DIR)
    receipt = {
        "published_dir": str(published_dir),
        "vicuna_dir": str(vicuna_dir),
        "vision_checkpoint": str(vision_checkpoint),
        "vision_config": None if vision_config is None else str(vision_config),
        "lora": summary,
        "non_lora_trainables": sorted(projector) + sorted(other),
        "vision_blocks_kept": f"{vision_kwargs['num_hidden_layers']} of {vision_kwargs['source_depth']}",
        "image_token_id": image_token_id,
        "dtype": str(target_dtype).removeprefix("torch."),
    }
    (out_dir / "conversion.json").write_text(json.dumps(receipt, indent=2))
    return out_dir


def _copy_adapter(published_dir: Path, adapter_dir: Path) -> None:
    """The published LoRA as a PEFT adapter of the port (its module names are the port's ``model.layers...``)."""
    from safetensors.torch import save_file

    config = json.loads(_require(published_dir / "adapter_config.json", "the LoRA adapter config").read_text())
    weights = _load_tensors(
        _first_existing(published_dir, ("adapter_model.safetensors", "adapter_model.bin"), "the LoRA weights")
    )
    adapter_dir.mkdir(parents=True, exist_ok=True)
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(adapter_dir / "adapter_model.safetensors"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlm_torch.llava_rad.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--published", required=True, help="the microsoft/llava-rad folder (or an alignment-stage output folder)"
    )
    parser.add_argument("--vicuna", required=True, help="the lmsys/vicuna-7b-v1.5 folder")
    parser.add_argument("--vision-checkpoint", help="BiomedCLIP-CXR open_clip checkpoint (default: the published one)")
    parser.add_argument("--vision-config", help="its open_clip model config JSON (default: found next to it)")
    parser.add_argument("--out", required=True, help="the folder to write")
    parser.add_argument("--no-merge", action="store_true", help="keep the LoRA unmerged, as lora_adapter/")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    args = parser.parse_args(argv)
    out = convert_llava_rad(
        args.published,
        args.vicuna,
        args.vision_checkpoint,
        args.out,
        merge_lora=not args.no_merge,
        vision_config=args.vision_config,
        dtype=args.dtype,
    )
    print(f"wrote {out} ({json.loads((out / 'conversion.json').read_text())['lora']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
