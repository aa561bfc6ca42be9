"""BiomedCLIP-CXR's image trunk in plain torch (no timm, no open_clip), with timm's parameter names.

LLaVA-Rad reads the vision tower the LLaVA-1.5 way: patch embedding, class token and position embedding, then the
transformer blocks, and the output of the second-to-last block (``mm_vision_select_layer = -2``) without its class
token (``mm_vision_select_feature = "patch"``). The trunk's final LayerNorm and its last block are never on that
path, so this module holds only the blocks that run (``config.num_hidden_layers``).

Parameter names are timm's ``VisionTransformer`` ones (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N.norm1/attn.qkv/attn.proj/ls1.gamma/norm2/mlp.fc1/mlp.fc2/ls2.gamma``), so an open_clip checkpoint's
``visual.trunk.*`` tensors load by stripping that prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlm_torch.llava_rad.configuration import LlavaRadVisionConfig


class PatchEmbed(nn.Module):
    def __init__(self, config: LlavaRadVisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values).flatten(2).transpose(1, 2)  # (B, patches, D), row-major like timm


class Attention(nn.Module):
    def __init__(self, config: LlavaRadVisionConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    def __init__(self, config: LlavaRadVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm ViT block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, config: LlavaRadVisionConfig):
        super().__init__()
        eps = config.layer_norm_eps
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.attn = Attention(config)
        self.ls1 = LayerScale(config.hidden_size) if config.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = Mlp(config)
        self.ls2 = LayerScale(config.hidden_size) if config.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class BiomedClipVisionTower(nn.Module):
    """The ViT trunk up to the block LLaVA-Rad reads; returns its patch tokens (no class token).

    Args:
        config: the trunk's shape; ``num_hidden_layers`` blocks are built and run.

    Example:
        tower = BiomedClipVisionTower(LlavaRadVisionConfig(image_size=518, patch_size=14))
        features = tower(pixel_values)   # (B, 37 * 37, 768) for 518 px images

    Reference: Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021; Zhang et al., "BiomedCLIP",
    arXiv:2303.00915; LLaVA-Rad, Nature Communications 16, 3108 (2025).
    """

    def __init__(self, config: LlavaRadVisionConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(
                f"the vision tower expects pixel_values of shape (batch, 3, {size}, {size}), got "
                f"{tuple(pixel_values.shape)}: prepare images with LlavaRadProcessor"
            )
        x = self.patch_embed(pixel_values.to(self.patch_embed.proj.weight.dtype))
        x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return x[:, 1:]


__all__ = ["BiomedClipVisionTower"]
