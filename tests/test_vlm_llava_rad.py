"""LLaVA-Rad port: the converter reads the published layout, and the port's logits equal an independent reference.

The reference below is written from the raw published tensors with plain torch: the timm ViT block by block
(hidden_states[-2], class token dropped), the mlp2x_gelu projector, the LoRA merged by hand (W + alpha/r B A),
the image features spliced where LLaVA's ``tokenizer_image_token`` put its -200 sentinel, and transformers'
``LlamaForCausalLM`` run on ``inputs_embeds``. It shares no code with ``vlm_torch.llava_rad``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from vlm_tiny_llava import LORA_ALPHA, LORA_R, VISION, write_tiny_published

from vlm_torch.families.base import IGNORE_INDEX
from vlm_torch.llava_rad.convert import convert_llava_rad
from vlm_torch.llava_rad.convert import main as convert_main
from vlm_torch.llava_rad.modeling import LlavaRadForCausalLM
from vlm_torch.llava_rad.processing import VICUNA_V1_SYSTEM, LlavaRadProcessor
from vlm_torch.prompts import QUESTION, target_answer

SENTINEL = -200  # LLaVA's IMAGE_TOKEN_INDEX


def _images(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(20 + 7 * i, 33 - 3 * i), dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava_rad")
    published = write_tiny_published(root)
    out = convert_llava_rad(published.published, published.vicuna, None, root / "converted")
    model = LlavaRadForCausalLM.from_pretrained(out).eval()
    processor = LlavaRadProcessor.from_pretrained(out)
    return published, out, model, processor


# ------------------------------------------------------------------------------------------ the reference
def _reference_logits(published, pixel_values: torch.Tensor, question: str, *, merge: bool = True) -> torch.Tensor:
    from transformers import AutoTokenizer, LlamaForCausalLM

    # vision: timm ViT from the open_clip checkpoint, all blocks, hidden_states[-2], no CLS
    raw = torch.load(published.vision_checkpoint, weights_only=True)["state_dict"]
    t = {k[len("module.visual.trunk.") :]: v for k, v in raw.items() if k.startswith("module.visual.trunk.")}
    heads = VISION["width"] // VISION["head_width"]
    x = F.conv2d(pixel_values, t["patch_embed.proj.weight"], t["patch_embed.proj.bias"], stride=VISION["patch_size"])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([t["cls_token"].expand(x.shape[0], -1, -1), x], 1) + t["pos_embed"]
    states = [x]
    for i in range(VISION["depth"]):
        p = {name[len(f"blocks.{i}.") :]: v for name, v in t.items() if name.startswith(f"blocks.{i}.")}
        d = x.shape[-1]
        h = F.layer_norm(x, (d,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        b, n, _ = h.shape
        q, k, v = F.linear(h, p["attn.qkv.weight"], p["attn.qkv.bias"]).view(b, n, 3, heads, d // heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        attn = (torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, dim=-1) @ v).transpose(1, 2)
        x = x + p["ls1.gamma"] * F.linear(attn.reshape(b, n, d), p["attn.proj.weight"], p["attn.proj.bias"])
        h = F.layer_norm(x, (d,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, p["mlp.fc1.weight"], p["mlp.fc1.bias"]))
        x = x + p["ls2.gamma"] * F.linear(h, p["mlp.fc2.weight"], p["mlp.fc2.bias"])
        states.append(x)
    patches = states[-2][:, 1:]
    proj = torch.load(published.published / "non_lora_trainables.bin", weights_only=True)
    w = lambda name: proj[f"base_model.model.model.mm_projector.{name}"]  # noqa: E731
    features = F.linear(F.gelu(F.linear(patches, w("0.weight"), w("0.bias"))), w("2.weight"), w("2.bias"))

    # language model: Vicuna with the LoRA merged by hand
    llama = LlamaForCausalLM.from_pretrained(published.vicuna, dtype=torch.float32).eval()
    if merge:
        lora = torch.load(published.published / "adapter_model.bin", weights_only=True)
        params = dict(llama.named_parameters())
        with torch.no_grad():
            for key, a in lora.items():
                if ".lora_A." in key:
                    module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
                    b_ = lora[key.replace(".lora_A.", ".lora_B.")]
                    params[f"{module}.weight"] += (LORA_ALPHA / LORA_R) * (b_ @ a)

    # LLaVA's prompt, tokenised around the -200 sentinel, one row per image, features spliced there
    tokenizer = AutoTokenizer.from_pretrained(published.vicuna)
    prompt = f"{VICUNA_V1_SYSTEM} USER: <image>\n{question} ASSISTANT:"
    before, after = (tokenizer(chunk).input_ids for chunk in prompt.split("<image>"))
    ids = [*before, SENTINEL, *after[1:]]
    embed = llama.get_input_embeddings()
    cut = ids.index(SENTINEL)
    rows = []
    for feature in features:
        rows.append(
            torch.cat(
                [embed(torch.tensor(ids[:cut])), feature, embed(torch.tensor(ids[cut + 1 :]))],
                dim=0,
            )
        )
    with torch.no_grad():
        return llama(inputs_embeds=torch.stack(rows)).logits


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    scale = expected.abs().max().item()
    assert scale > 1.0  # random weights give logits of order one or more: a tolerance relative to them means something
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * scale)


# ------------------------------------------------------------------------------------------ port vs reference
def test_port_logits_equal_the_reference_forward(tiny):
    published, _, model, processor = tiny
    images = _images(0, 2)
    batch = processor(images, [QUESTION] * 2)
    with torch.no_grad():
        logits = model(**batch).logits
    expected = _reference_logits(published, batch["pixel_values"], QUESTION)
    assert logits.shape == expected.shape  # one token per patch: the port's sequence is the reference's
    _assert_close(logits, expected)


def test_the_lora_merge_and_the_image_change_the_logits(tiny):
    """The controls that make the parity meaningful: unmerged weights or another image would not match."""
    published, _, model, processor = tiny
    batch = processor(_images(0, 1), [QUESTION])
    with torch.no_grad():
        logits = model(**batch).logits
        other_image = model(**processor(_images(5, 1), [QUESTION])).logits
    unmerged = _reference_logits(published, batch["pixel_values"], QUESTION, merge=False)
    scale = logits.abs().max()
    assert (logits - unmerged).abs().max() > 1e-2 * scale
    assert (logits - other_image).abs().max() > 1e-3 * scale


def test_unmerged_conversion_cli_gives_a_peft_adapter_with_the_same_logits(tiny, tmp_path):
    from peft import PeftModel

    published, _, model, processor = tiny
    out = tmp_path / "u"
    argv = ["--published", str(published.published), "--vicuna", str(published.vicuna), "--out", str(out)]
    assert convert_main([*argv, "--vision-checkpoint", str(published.vision_checkpoint), "--no-merge"]) == 0
    assert json.loads((out / "conversion.json").read_text())["lora"]["merged"] is False
    base = LlavaRadForCausalLM.from_pretrained(out).eval()
    batch = processor(_images(1, 2), [QUESTION] * 2)
    with torch.no_grad():
        before = base(**batch).logits
        adapted = PeftModel.from_pretrained(base, out / "lora_adapter").eval()(**batch).logits
        merged = model(**batch).logits
    _assert_close(adapted, merged)
    assert (before - merged).abs().max() > 1e-2 * merged.abs().max()


def test_alignment_stage_folder_converts_without_lora(tiny, tmp_path):
    """pretrain.sh's output (config.json + mm_projector.bin, no LoRA) gives Vicuna + projector + tower."""
    published, _, _, processor = tiny
    folder = tmp_path / "pretrain"
    folder.mkdir()
    shutil.copy(published.published / "config.json", folder / "config.json")
    projector = torch.load(published.published / "non_lora_trainables.bin", weights_only=True)
    torch.save({k.removeprefix("base_model.model."): v for k, v in projector.items()}, folder / "mm_projector.bin")
    out = convert_llava_rad(folder, published.vicuna, published.vision_checkpoint, tmp_path / "out")
    assert json.loads((out / "conversion.json").read_text())["lora"]["merged"] is False
    model = LlavaRadForCausalLM.from_pretrained(out).eval()
    batch = processor(_images(9, 1), [QUESTION])
    with torch.no_grad():
        logits = model(**batch).logits
    _assert_close(logits, _reference_logits(published, batch["pixel_values"], QUESTION, merge=False))


def test_converted_folder_records_the_conversion(tiny):
    _, out, model, processor = tiny
    receipt = json.loads((out / "conversion.json").read_text())
    assert receipt["lora"]["merged"] and receipt["lora"]["merged_modules"] == 2 * 7
    assert receipt["vision_blocks_kept"] == "2 of 3"
    assert model.config.model_type == "llava_rad"
    assert len(model.vision_tower.blocks) == VISION["depth"] - 1
    # <image> comes after Vicuna's vocabulary: the embedding and the head keep Vicuna's rows
    assert processor.image_token_id == model.config.text_config.vocab_size == model.lm_head.out_features
    assert processor.tokenizer.pad_token == "<unk>"
    assert processor.num_image_tokens == (VISION["image_size"] // VISION["patch_size"]) ** 2


# ------------------------------------------------------------------------------------------ processor
def test_image_transform_grey_to_rgb_resize_and_normalise(tiny):
    processor = tiny[3]
    grey = np.full((40, 25), 200, dtype=np.uint8)
    pixels = processor.pixel_values([grey])
    size = VISION["image_size"]
    assert pixels.shape == (1, 3, size, size) and pixels.dtype == torch.float32
    mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
    expected = ((200 / 255 - mean) / std).view(3, 1, 1).expand(3, size, size)
    torch.testing.assert_close(pixels[0], expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        processor.pixel_values([grey.astype(np.float32)])


def test_training_labels_cover_only_the_answer_and_end_of_sequence(tiny):
    _, _, model, processor = tiny
    answers = [target_answer(0), target_answer(1)]
    batch = processor(_images(2, 2), [QUESTION, QUESTION + " Be brief."], answers)
    tokenizer = processor.tokenizer
    for row, answer in enumerate(answers):
        labels = batch["labels"][row]
        kept = labels[labels != IGNORE_INDEX].tolist()
        assert tokenizer.decode(kept[:-1]).strip() == answer and kept[-1] == tokenizer.eos_token_id
        ids = batch["input_ids"][row][batch["attention_mask"][row] == 1]
        assert ids[-len(kept) :].tolist() == kept  # the labels sit on the answer's own positions
        assert (batch["input_ids"][row] == processor.image_token_id).sum() == processor.num_image_tokens
    assert batch["attention_mask"][0, -1] == 0 and batch["attention_mask"][1, -1] == 1  # right padded
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    with torch.no_grad():
        loss = model(**batch).loss
        swapped = model(**processor(_images(2, 2), [QUESTION, QUESTION + " Be brief."], answers[::-1])).loss
    assert torch.isfinite(loss) and not torch.isclose(loss, swapped)  # the loss reads the answers


def test_left_padded_prompt_gives_the_same_answer_logits(tiny):
    _, _, model, processor = tiny
    images = _images(3, 2)
    alone = processor(images[:1], [QUESTION])
    batch = processor(images, [QUESTION, QUESTION + " Think about the cortex and the joints first."])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()  # left padded
    with torch.no_grad():
        single = model(**alone).logits[0, -1]
        padded = model(**batch).logits[0, -1]
    _assert_close(padded, single)


def test_generate_with_left_padding_returns_new_tokens(tiny):
    _, _, model, processor = tiny
    batch = processor(_images(4, 2), [QUESTION, QUESTION + " Be brief."])
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
        first = model(**batch).logits[:, -1].argmax(-1)
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)
    assert out[:, batch["input_ids"].shape[1]].tolist() == first.tolist()  # greedy step 1 = the forward's argmax


# ------------------------------------------------------------------------------------------ errors
def _copy(published, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(published.published, root / "llava-rad")
    return root / "llava-rad"


def test_missing_files_and_keys_are_named(tiny, tmp_path):
    published = tiny[0]
    folder = _copy(published, tmp_path)
    (folder / "non_lora_trainables.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"projector weights not found.*non_lora_trainables\.bin"):
        convert_llava_rad(folder, published.vicuna, None, tmp_path / "o1")

    folder = _copy(published, tmp_path / "b")
    projector = torch.load(folder / "non_lora_trainables.bin", weights_only=True)
    del projector["base_model.model.model.mm_projector.2.bias"]
    torch.save(projector, folder / "non_lora_trainables.bin")
    with pytest.raises(KeyError, match=r"mm_projector\.2\.bias"):
        convert_llava_rad(folder, published.vicuna, None, tmp_path / "o2")

    folder = _copy(published, tmp_path / "c")
    lora = torch.load(folder / "adapter_model.bin", weights_only=True)
    del lora["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    torch.save(lora, folder / "adapter_model.bin")
    with pytest.raises(KeyError, match=r"layers\.1\.mlp\.down_proj.*lora_B"):
        convert_llava_rad(folder, published.vicuna, None, tmp_path / "o3")

    folder = _copy(published, tmp_path / "d")
    checkpoint = torch.load(folder / "biomedclipcxr_518_checkpoint.pt", weights_only=True)
    del checkpoint["state_dict"]["module.visual.trunk.pos_embed"]
    torch.save(checkpoint, folder / "biomedclipcxr_518_checkpoint.pt")
    with pytest.raises(KeyError, match="pos_embed"):
        convert_llava_rad(folder, published.vicuna, None, tmp_path / "o4")

    with pytest.raises(FileNotFoundError, match="processor"):
        LlavaRadProcessor.from_pretrained(published.vicuna)


# ------------------------------------------------------------------------------------------ the family
@pytest.fixture(scope="module")
def family():
    pytest.importorskip("vlm_torch.lora", reason="vlm_torch.lora and vlm_torch.precision land with the gemma part")
    pytest.importorskip("vlm_torch.precision", reason="vlm_torch.precision lands with the gemma part")
    from vlm_torch.families import get_family

    return get_family("llava_rad")


def test_family_loads_the_converted_folder_and_says_which_precision(tiny, family, capsys):
    model, processor = family.load(str(tiny[1]), quantization="float32", device="cpu")
    assert "float32" in capsys.readouterr().out
    assert isinstance(model, LlavaRadForCausalLM) and isinstance(processor, LlavaRadProcessor)
    assert model.dtype == torch.float32 and family.tokenizer(processor) is processor.tokenizer


def test_family_batches_training_right_padded_and_prompts_left_padded(tiny, family):
    processor = tiny[3]
    images = _images(6, 2)
    train = family.training_batch(processor, images, [target_answer(1), target_answer(0)])
    assert set(train) == {"input_ids", "attention_mask", "pixel_values", "labels"}
    assert train["attention_mask"][:, 0].all()  # right padding
    expected = processor(images, [QUESTION] * 2, [target_answer(1), target_answer(0)])
    assert torch.equal(train["labels"], expected["labels"]) and torch.equal(train["input_ids"], expected["input_ids"])
    prompts = family.prompt_batch(processor, images)
    # every row has the same length here (one question, a fixed number of image tokens): check the asked side
    sides = []

    def spy(*args, **kwargs):
        sides.append(kwargs.get("padding_side"))
        return processor(*args, **kwargs)

    family.prompt_batch(spy, images)
    family.training_batch(spy, images, [target_answer(1), target_answer(0)])
    assert sides == ["left", "right"]
    assert "labels" not in prompts and prompts["attention_mask"][:, -1].all()
    tokenizer = processor.tokenizer
    assert tokenizer.decode(prompts["input_ids"][0, -3:]).endswith("ASSISTANT:")
    # the answer's first token follows the prompt: option letters are distinct first tokens
    first = {
        answer: processor.encode_example(QUESTION, target_answer(answer))[0][len(processor.encode_prompt(QUESTION))]
        for answer in (0, 1)
    }
    assert tokenizer.convert_ids_to_tokens([first[0], first[1]]) == ["▁A", "▁B"]


def test_family_lora_targets_are_the_language_model_linears(tiny, family):
    model = tiny[2]
    names = family.lora_target_modules(model)
    assert len(names) == 2 * 7 and all(name.startswith("model.layers.") for name in names)
    with_projector = family.lora_target_modules(model, include_projector=True)
    assert sorted(set(with_projector) - set(names)) == ["mm_projector.0", "mm_projector.2"]
    assert not any(name.startswith(("vision_tower", "lm_head")) for name in with_projector)


def test_lora_steps_lower_the_loss_with_gradient_checkpointing(tiny, family):
    from vlm_torch.config import LoraSettings
    from vlm_torch.lora import add_lora

    model, processor = family.load(str(tiny[1]), quantization="float32", device="cpu")
    model = add_lora(model, family, LoraSettings(rank=4, alpha=8, dropout=0.0), gradient_checkpointing=True)
    model.train()
    batch = family.training_batch(processor, _images(7, 2), [target_answer(1), target_answer(0)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)


def test_family_loads_in_4_bits_where_bitsandbytes_supports_the_cpu(tiny, family):
    from vlm_torch.precision import bitsandbytes_unsupported_reason

    if bitsandbytes_unsupported_reason("cpu") is not None:  # an older bitsandbytes: 4 bits are refused, clearly
        with pytest.raises(RuntimeError, match="bf16"):
            family.load(str(tiny[1]), quantization="4bit", device="cpu")
        return
    import bitsandbytes as bnb

    model, processor = family.load(str(tiny[1]), quantization="4bit", device="cpu")
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert not isinstance(model.vision_tower.blocks[0].attn.qkv, bnb.nn.Linear4bit)  # the tower stays unquantised
    assert not isinstance(model.mm_projector[0], bnb.nn.Linear4bit)
    with torch.no_grad():
        logits = model(**family.prompt_batch(processor, _images(8, 1))).logits
    assert torch.isfinite(logits).all()
