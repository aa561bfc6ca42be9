"""Tiny randomly initialised Gemma-3 vision-language model + processor, saved like a real MedGemma folder.

A test helper (not a test module): ``make_tiny_medgemma(path)`` writes a folder that
``AutoModelForImageTextToText.from_pretrained`` / ``AutoProcessor.from_pretrained`` (and so
``get_family("medgemma").load(path)``) read exactly as they read ``google/medgemma-4b-it``:

- the model: Gemma 3 with 2 text layers (hidden 32) and a 1-layer SigLIP vision tower on 32 px images
  with 8 px patches (16 patches, pooled to 4 image tokens);
- the tokenizer: Gemma's BPE tokenizer class (byte fallback) with Gemma 3's special tokens and a vocabulary
  trained locally (no download) on the question, the options and the chat roles, so that their words, single
  letters and punctuation are tokens as in the real tokenizer;
- the processor: ``Gemma3Processor`` (4 image tokens per image) with Gemma 3's chat template.

Deterministic (seeded) and fast (well under 2 s).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    GemmaTokenizer,
)

from vlm_torch.prompts import OPTIONS, QUESTION

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = 4  # (32 / 8)^2 = 16 patches, average-pooled 2 x 2 -> 4 soft tokens per image

# Gemma 3's special tokens, in the order they get ids here after pad/eos/bos/unk/mask (0-4).
SPECIAL_TOKENS = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>")

# Gemma 3's chat template (as in google/gemma-3-4b-it and google/medgemma-4b-it): the assistant's turn is
# called "model", an image item becomes <start_of_image>, which the processor expands to the soft tokens.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- else -%}"
    "{{ raise_exception('Invalid content type') }}"
    "{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Gemma's special tokens and the bytes, then a BPE trained on the question, the options and the chat roles
    (words start with Gemma's "▁"; punctuation and newlines stand alone), so that those words are whole tokens."""
    vocab: dict[str, int] = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    for byte in range(256):  # byte fallback: any text encodes, nothing maps to <unk>
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern="▁", behavior="merged_with_next"),
            pre_tokenizers.Split(pattern="\n", behavior="isolated"),
            pre_tokenizers.Punctuation(),
        ]
    )
    alphabet = ["▁", "\n", *string.ascii_letters, *string.digits, *string.punctuation]
    trainer = trainers.BpeTrainer(vocab_size=10_000, min_frequency=1, show_progress=False, initial_alphabet=alphabet)
    corpus = [QUESTION, *OPTIONS.values(), "user\nmodel\n\n\nThe answer is A B a b"]
    bpe.train_from_iterator(corpus, trainer)  # deterministic: the same vocabulary and merges every time
    trained = json.loads(bpe.to_str())["model"]
    for token in sorted(trained["vocab"], key=trained["vocab"].get):
        vocab.setdefault(token, len(vocab))
    return vocab, [tuple(merge) for merge in trained["merges"]]


def make_tiny_tokenizer() -> GemmaTokenizer:
    vocab, merges = _vocab_and_merges()
    return GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
        chat_template=GEMMA3_CHAT_TEMPLATE,
        add_bos_token=False,  # the chat template writes <bos> itself, as Gemma 3's processor expects
    )


def make_tiny_medgemma(path, *, seed: int = 0) -> Path:
    """Write a tiny Gemma-3 image-text-to-text model + processor to ``path`` (created); returns the path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    image_processor = Gemma3ImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pan_and_scan=False,
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=IMAGE_TOKENS,
    )
    config = Gemma3Config(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 8,  # shorter than a prompt: the sliding-window layers see a window, as in the real model
            "layer_types": ["sliding_attention", "full_attention"],
            "max_position_embeddings": 512,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": [tokenizer.eos_token_id, ids["<end_of_turn>"]],
            "bos_token_id": tokenizer.bos_token_id,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "vision_use_head": False,
        },
        mm_tokens_per_image=IMAGE_TOKENS,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, ids["<end_of_turn>"]],
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    # Gemma 3 initialises the projector's weight and the norms at zero / one; randomise every parameter so
    # that nothing is an identity or a zero by chance (a test that passes at such weights proves little).
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, ids["<end_of_turn>"]]
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def load_tiny_medgemma(directory) -> tuple:
    """(family, model, processor): the tiny MedGemma written into ``directory`` and loaded in float32 through the
    family, as ``python -m vlm_torch.train`` loads a real one."""
    from vlm_torch.families import get_family

    family = get_family("medgemma")
    model, processor = family.load(str(make_tiny_medgemma(directory)), quantization="float32")
    return family, model, processor
