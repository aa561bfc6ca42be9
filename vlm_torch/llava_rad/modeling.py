"""LLaVA-Rad as a transformers model: Vicuna (Llama) + BiomedCLIP-CXR trunk + 2-layer GELU projector.

    model = LlavaRadForCausalLM.from_pretrained(converted_dir)      # a folder written by vlm_torch.llava_rad.convert
    out = model(input_ids=..., attention_mask=..., pixel_values=..., labels=...)
    model.generate(input_ids=..., attention_mask=..., pixel_values=..., max_new_tokens=16)   # left padded

The processor writes one image token per patch; the forward pass embeds the text, swaps the image-token positions
for the projected patch features (in order: image i's patches fill row i's image tokens) and runs Llama on the
result. Unlike the original code (which cut the prompt at a ``-200`` sentinel and re-padded inside the model), the
sequence length never changes inside the model, so labels, attention masks, left padding, the KV cache and
``generate`` work exactly as for a text-only Llama. Positions are counted from the attention mask, so a row gives
the same logits alone as left padded in a batch.

Parameter names follow the published checkpoint after its LoRA is merged: ``model.*`` and ``lm_head`` are Vicuna's
(``LlamaModel``), ``mm_projector.0/2`` the projector's, ``vision_tower.*`` timm's names for the trunk.

What LLaVA-Rad is, and where its parts come from (see ``vlm_torch.llava_rad.convert`` for the files):

- LLaVA-Rad (Microsoft Research, ``microsoft/llava-rad`` on Hugging Face, code github.com/microsoft/LLaVA-Rad) was
  trained on CHEST X-RAYS ONLY: frontal MIMIC-CXR radiographs and their reports (findings generation), after an
  alignment stage that trained the projector alone. It never saw the limb, hand, hip or shoulder radiographs
  our fracture datasets hold; the method fine-tunes it on them anyway, and results should be read with that in
  mind. Its weights (LoRA, projector, BiomedCLIP-CXR vision encoder) are under the Microsoft Research License:
  non-commercial research use only, no redistribution of the models, not for clinical decisions; additionally
  subject to the Llama 2 / Vicuna terms.
- Vicuna-7B v1.5 (LMSYS, ``lmsys/vicuna-7b-v1.5``, a Llama 2 fine-tune; Llama 2 Community License Agreement): the
  language model the LoRA is merged into.
- BiomedCLIP-CXR (518 px): an open_clip model whose image trunk is a timm ViT-B (the converter reads its shape,
  patch size and LayerScale from the checkpoint's tensors), shipped in the ``microsoft/llava-rad`` repository.

Reference: Zambrano Chaves et al., Nature Communications 16, 3108 (2025), doi:10.1038/s41467-025-58344-x.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, LlamaModel, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from vlm_torch.llava_rad.configuration import LlavaRadConfig
from vlm_torch.llava_rad.vision import BiomedClipVisionTower, LayerScale


class LlavaRadPreTrainedModel(PreTrainedModel):
    config_class = LlavaRadConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "Block"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.text_config.initializer_range
        if isinstance(module, BiomedClipVisionTower):
            nn.init.trunc_normal_(module.pos_embed, std=std)
            nn.init.normal_(module.cls_token, std=1e-6)
        elif isinstance(module, LayerScale):
            nn.init.ones_(module.gamma)
        elif isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class LlavaRadForCausalLM(LlavaRadPreTrainedModel, GenerationMixin):
    """LLaVA-Rad: a causal language model that reads radiographs at the image-token positions.

    Args:
        config: ``LlavaRadConfig`` (text, vision, image token id).

    Example:
        model = LlavaRadForCausalLM.from_pretrained("runs/llava-rad-converted")
        processor = LlavaRadProcessor.from_pretrained("runs/llava-rad-converted")
        batch = processor(images=[grey_uint8], text=[question])
        logits = model(**batch).logits

    Reference: Zambrano Chaves et al., "A clinically accessible small multimodal radiology model and evaluation
    metric for chest X-ray findings", Nature Communications 16, 3108 (2025); Liu et al., "Improved Baselines with
    Visual Instruction Tuning" (LLaVA-1.5), arXiv:2310.03744.
    """

    _tied_weights_keys = {}

    def __init__(self, config: LlavaRadConfig):
        super().__init__(config)
        text, vision = config.text_config, config.vision_config
        self.model = LlamaModel(text)
        self.vision_tower = BiomedClipVisionTower(vision)
        self.mm_projector = nn.Sequential(
            nn.Linear(vision.hidden_size, text.hidden_size), nn.GELU(), nn.Linear(text.hidden_size, text.hidden_size)
        )
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, patches, text hidden size): the second-to-last block's patch tokens through the projector."""
        features = self.vision_tower(pixel_values)
        return self.mm_projector(features.to(self.mm_projector[0].weight.dtype))

    def embed(self, input_ids: torch.LongTensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with the image tokens replaced by the image features (row i gets image i)."""
        image_mask = input_ids == self.config.image_token_id
        # The image token may lie outside the vocabulary (the converter's choice): embed a valid id there instead.
        embeds = self.model.embed_tokens(input_ids.masked_fill(image_mask, 0))
        n_image_tokens = int(image_mask.sum())
        if pixel_values is None:
            if n_image_tokens:
                raise ValueError(f"input_ids hold {n_image_tokens} image tokens but no pixel_values were given")
            return embeds
        features = self.get_image_features(pixel_values)
        if n_image_tokens != features.shape[0] * features.shape[1]:
            raise ValueError(
                f"input_ids hold {n_image_tokens} image tokens but {features.shape[0]} image(s) give "
                f"{features.shape[0]} x {features.shape[1]} features: build inputs with LlavaRadProcessor "
                "(one image per row, one token per patch)"
            )
        return embeds.masked_scatter(image_mask.unsqueeze(-1), features.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values)
        if position_ids is None and attention_mask is not None and attention_mask.ndim == 2:
            # Count positions over real tokens only, so left padding does not shift them (as generate() does).
            positions = attention_mask.long().cumsum(-1) - 1
            position_ids = positions.masked_fill(attention_mask == 0, 0)[:, -inputs_embeds.shape[1] :]
        outputs = self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.text_config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = ["LlavaRadForCausalLM", "LlavaRadPreTrainedModel"]
