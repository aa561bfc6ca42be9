"""The port's configuration: a Llama text config, the BiomedCLIP vision tower's shape, and the image token.

The published ``config.json`` says ``model_type: "llava"``, a name transformers now owns for its own LLaVA
classes, so the port registers nothing and saves itself as ``model_type: "llava_rad"``; the converter translates
the published keys (``mm_hidden_size``, ``mm_vision_select_layer``, ``mm_projector_type``, ...) into this one.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# open_clip's defaults (the OpenAI CLIP statistics), which BiomedCLIP keeps unless its config says otherwise.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class LlavaRadVisionConfig(PreTrainedConfig):
    """The timm ViT trunk of an open_clip model, cut after the block whose output LLaVA-Rad reads.

    Args:
        image_size: the square input side in pixels (518 for BiomedCLIP-CXR-518).
        patch_size: the patch side (14 for the DINOv2-style ViT-B/14 trunk at 518 px).
        hidden_size: the token width (768 for ViT-B).
        num_hidden_layers: the blocks that RUN: the trunk's depth + ``select_layer`` + 1 (11 of 12 for layer -2);
            the last block's output is never read, so its weights are not kept.
        num_attention_heads: heads per block.
        intermediate_size: the MLP width.
        layer_norm_eps: timm's ViT LayerNorm epsilon.
        layer_scale: whether each block scales its residual branches (``ls1.gamma``/``ls2.gamma``, DINOv2 trunks).
        image_mean, image_std: per-channel normalisation of RGB pixels in [0, 1].
        source_depth: the trunk's full depth in the published checkpoint (recorded, not used).
        select_layer: the published ``mm_vision_select_layer`` (recorded; ``num_hidden_layers`` already applies it).
    """

    model_type = "llava_rad_vision"
    base_config_key = "vision_config"

    image_size: int = 518
    patch_size: int = 14
    hidden_size: int = 768
    num_hidden_layers: int = 11
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-6
    layer_scale: bool = True
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    source_depth: int | None = None
    select_layer: int = -2

    def __post_init__(self, **kwargs):
        self.image_mean = list(self.image_mean if self.image_mean is not None else OPENAI_CLIP_MEAN)
        self.image_std = list(self.image_std if self.image_std is not None else OPENAI_CLIP_STD)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"vision_config.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"vision_config.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        super().__post_init__(**kwargs)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class LlavaRadConfig(PreTrainedConfig):
    """LLaVA-Rad on current transformers: ``text_config`` (Llama/Vicuna), ``vision_config`` (BiomedCLIP trunk),
    a 2-layer GELU projector (``mlp2x_gelu``) and the id of the image placeholder token.

    ``image_token_id`` is the tokenizer id the processor writes once per image patch; the model swaps those
    positions for the projected patch features before the first Llama layer. It may lie outside the Llama
    vocabulary (the converter puts it at ``vocab_size``, right after Vicuna's 32,000 tokens) so that the
    embedding and the output head stay exactly Vicuna's and no logit is added for it.
    """

    model_type = "llava_rad"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "vision_config": LlavaRadVisionConfig,
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32000
    projector_hidden_act: str = "gelu"
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.projector_hidden_act != "gelu":
            raise ValueError(
                f"projector_hidden_act must be 'gelu' (LLaVA-Rad's mlp2x_gelu), got {self.projector_hidden_act!r}"
            )


__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "LlavaRadConfig", "LlavaRadVisionConfig"]
