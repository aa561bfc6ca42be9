"""A tiny LLaVA-Rad checkpoint in the PUBLISHED layout and key names (test helper, not a test module).

``write_tiny_published(root)`` writes, all randomly initialised (seeded) and small:

- ``vicuna/``: a 2-layer Llama (``LlamaForCausalLM.save_pretrained``) + a Llama tokenizer (Metaspace BPE with
  byte fallback, like Vicuna's) whose vocabulary holds the words of the prompt, question and options;
- ``llava-rad/``: ``config.json`` (``model_type "llava"``, Vicuna's settings + the ``mm_*`` keys),
  ``adapter_config.json`` + ``adapter_model.bin`` (PEFT LoRA keys ``base_model.model.model.layers.N...``),
  ``non_lora_trainables.bin`` (``base_model.model.model.mm_projector.{0,2}.*``), ``biomedclipcxr_518.json``
  (an open_clip model config) and ``biomedclipcxr_518_checkpoint.pt`` (an open_clip training checkpoint:
  ``state_dict`` with ``module.visual.trunk.*`` in timm names, plus head and text tensors the port ignores).

The trunk is a 3-block ViT with LayerScale (DINOv2-style) at 28 px with 14 px patches (4 patch tokens), so layer -2
runs 2 blocks. Every tensor is random, LayerNorm weights and LayerScale included, and LoRA's B is non-zero.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from vlm_torch.llava_rad.processing import VICUNA_V1_SYSTEM
from vlm_torch.prompts import OPTIONS, QUESTION

TEXT = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
VISION = dict(image_size=28, patch_size=14, width=16, depth=3, head_width=8, mlp=32)
LORA_R, LORA_ALPHA = 4, 8
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TinyPublished:
    published: Path
    vicuna: Path
    vision_checkpoint: Path
    vision_config: Path


def _tokenizer():
    from transformers import LlamaTokenizer

    corpus = " ".join([VICUNA_V1_SYSTEM, "USER: ASSISTANT:", QUESTION, *OPTIONS.values(), "The answer is A B"])
    words = sorted(set(re.findall(r"[A-Za-z]+", corpus)))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    merges = []
    for ch in sorted(set(corpus.replace(" ", "")) | {"▁"}):
        vocab.setdefault(ch, len(vocab))
    for word in words:  # left-to-right merges building "▁word"
        piece = "▁"
        for ch in word:
            merges.append((piece, ch))
            piece += ch
            vocab.setdefault(piece, len(vocab))
    merges = list(dict.fromkeys(merges))
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)


def write_tiny_published(root: str | Path, seed: int = 0) -> TinyPublished:
    from transformers import LlamaConfig, LlamaForCausalLM

    root = Path(root)
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2, offset=0.0):
        return torch.randn(*shape, generator=g) * scale + offset

    # ---- Vicuna: base model + tokenizer
    tokenizer = _tokenizer()
    vicuna = root / "vicuna"
    text_config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, **TEXT)
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(text_config)
    with torch.no_grad():
        for name, param in llama.named_parameters():
            param.copy_(rand(*param.shape, offset=1.0) if name.endswith("norm.weight") else rand(*param.shape))
    llama.save_pretrained(vicuna)
    tokenizer.save_pretrained(vicuna)

    # ---- the published LLaVA-Rad folder
    published = root / "llava-rad"
    published.mkdir(parents=True, exist_ok=True)
    hidden, width = TEXT["hidden_size"], VISION["width"]
    config = text_config.to_dict()
    config.update(
        model_type="llava",
        architectures=["LlavaLlamaForCausalLM"],
        mm_vision_tower="biomedclip_cxr_518",
        mm_vision_tower_config="llava/model/multimodal_encoder/open_clip_encoder/model_configs/biomedclipcxr_518.json",
        mm_vision_tower_checkpoint="biomedclipcxr_518_checkpoint.pt",
        mm_hidden_size=width,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        use_mm_proj=True,
        image_aspect_ratio="square",
        tune_mm_mlp_adapter=False,
    )
    (published / "config.json").write_text(json.dumps(config, indent=2))
    adapter_config = {
        "base_model_name_or_path": "lmsys/vicuna-7b-v1.5",
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": LORA_R,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": 0.05,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "target_modules": list(LORA_TARGETS),
    }
    (published / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    lora = {}
    for name, module in llama.named_modules():
        if name.split(".")[-1] in LORA_TARGETS:
            prefix = f"base_model.model.{name}"
            lora[f"{prefix}.lora_A.weight"] = rand(LORA_R, module.in_features)
            lora[f"{prefix}.lora_B.weight"] = rand(module.out_features, LORA_R)
    torch.save(lora, published / "adapter_model.bin")
    projector = {
        "base_model.model.model.mm_projector.0.weight": rand(hidden, width),
        "base_model.model.model.mm_projector.0.bias": rand(hidden),
        "base_model.model.model.mm_projector.2.weight": rand(hidden, hidden),
        "base_model.model.model.mm_projector.2.bias": rand(hidden),
    }
    torch.save(projector, published / "non_lora_trainables.bin")

    # ---- the BiomedCLIP-CXR open_clip checkpoint and config
    size, patch, depth, mlp = VISION["image_size"], VISION["patch_size"], VISION["depth"], VISION["mlp"]
    grid = size // patch
    trunk = {
        "cls_token": rand(1, 1, width),
        "pos_embed": rand(1, grid * grid + 1, width),
        "patch_embed.proj.weight": rand(width, 3, patch, patch, scale=0.05),
        "patch_embed.proj.bias": rand(width),
        "norm.weight": rand(width, offset=1.0),
        "norm.bias": rand(width),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        trunk.update(
            {
                b + "norm1.weight": rand(width, offset=1.0),
                b + "norm1.bias": rand(width),
                b + "attn.qkv.weight": rand(3 * width, width),
                b + "attn.qkv.bias": rand(3 * width),
                b + "attn.proj.weight": rand(width, width),
                b + "attn.proj.bias": rand(width),
                b + "ls1.gamma": rand(width, offset=0.5),
                b + "norm2.weight": rand(width, offset=1.0),
                b + "norm2.bias": rand(width),
                b + "mlp.fc1.weight": rand(mlp, width),
                b + "mlp.fc1.bias": rand(mlp),
                b + "mlp.fc2.weight": rand(width, mlp),
                b + "mlp.fc2.bias": rand(width),
                b + "ls2.gamma": rand(width, offset=0.5),
            }
        )
    state = {f"module.visual.trunk.{k}": v for k, v in trunk.items()}
    state["module.visual.head.proj.weight"] = rand(8, width)
    state["module.text.transformer.pooler.dense.weight"] = rand(8, 8)
    state["module.logit_scale"] = torch.tensor(4.6)
    checkpoint = published / "biomedclipcxr_518_checkpoint.pt"
    torch.save({"epoch": 3, "name": "biomedclip_cxr_518", "state_dict": state}, checkpoint)
    open_clip_config = {
        "embed_dim": 8,
        "vision_cfg": {
            "timm_model_name": "vit_base_patch14_dinov2",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": size,
            "head_width": VISION["head_width"],
        },
        "text_cfg": {"hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract", "context_length": 256},
    }
    vision_config = published / "biomedclipcxr_518.json"
    vision_config.write_text(json.dumps(open_clip_config, indent=2))
    return TinyPublished(published, vicuna, checkpoint, vision_config)
