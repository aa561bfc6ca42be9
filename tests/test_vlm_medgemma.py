"""MedGemma's family on a tiny random Gemma-3 model: chat-template batches, the answer-only loss, token_type_ids."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlm_tiny import IMAGE_TOKENS, load_tiny_medgemma, make_tiny_medgemma  # noqa: E402

from vlm_torch.families import IGNORE_INDEX  # noqa: E402
from vlm_torch.prompts import target_answer  # noqa: E402

ANSWERS = [target_answer(1), target_answer(0), target_answer(1)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_tiny_medgemma(tmp_path_factory.mktemp("medgemma"))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size, dtype=np.uint8) for size in ((40, 30), (32, 32), (25, 50))]


def test_the_tiny_folder_loads_like_medgemma_and_is_deterministic(tiny, tmp_path):
    family, model, processor = tiny
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert type(processor).__name__ == "Gemma3Processor"
    assert type(processor.image_processor).__name__ == "Gemma3ImageProcessorPil"  # no torchvision needed
    again = make_tiny_medgemma(tmp_path / "again")
    model2, _ = family.load(str(again), quantization="float32")
    for (name, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_labels_are_the_answer_and_end_of_turn_only(tiny, images):
    family, _, processor = tiny
    batch = family.training_batch(processor, images, ANSWERS)
    tokenizer = processor.tokenizer
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape
    assert not bool(mask[:, 0].eq(0).any()), "training batches are right padded"
    for row, answer in enumerate(ANSWERS):
        kept = labels[row] != IGNORE_INDEX
        # Exactly the answer's tokens and the end-of-turn token after them, contiguous, equal to the inputs.
        assert tokenizer.decode(ids[row][kept]) == answer + "<end_of_turn>"
        assert torch.equal(labels[row][kept], ids[row][kept])
        positions = kept.nonzero().flatten()
        assert torch.equal(positions, torch.arange(int(positions[0]), int(positions[-1]) + 1))
        # Everything before is the prompt (image tokens included); the padding is ignored too.
        prompt = tokenizer.decode(ids[row][: int(positions[0])])
        assert prompt.endswith("<start_of_turn>model\n") and "<image_soft_token>" in prompt
        assert bool(labels[row][mask[row] == 0].eq(IGNORE_INDEX).all())
        assert bool(labels[row][batch["token_type_ids"][row] == 1].eq(IGNORE_INDEX).all())
    assert int(mask[1].sum()) < int(mask[0].sum()), "the shorter answer's row is padded"


def _answer_loss_by_hand(logits, labels):
    # Next-token cross-entropy over the labelled positions only, averaged over them.
    logits, labels = logits[:, :-1].double(), labels[:, 1:]
    kept = labels != IGNORE_INDEX
    log_probs = torch.log_softmax(logits, dim=-1)
    return -log_probs[kept].gather(-1, labels[kept][:, None]).mean()


def test_the_loss_is_the_answers_cross_entropy_and_ignores_the_prompt(tiny, images):
    family, model, processor = tiny
    batch = family.training_batch(processor, images, ANSWERS)
    with torch.no_grad():
        output = model(**batch)
    torch.testing.assert_close(output.loss.double(), _answer_loss_by_hand(output.logits, batch["labels"]))
    with torch.no_grad():
        # Had the prompt been left in the labels, the loss would differ.
        everything = model(**{**batch, "labels": batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)})
        assert abs(float(everything.loss) - float(output.loss)) > 1e-2
        # Another answer, another loss.
        flipped = family.training_batch(processor, images, [target_answer(0), target_answer(1), target_answer(0)])
        assert abs(float(model(**flipped).loss) - float(output.loss)) > 1e-3


def test_token_type_ids_mark_exactly_the_image_tokens(tiny, images):
    family, model, processor = tiny
    image_token = model.config.image_token_id
    for batch in (family.training_batch(processor, images, ANSWERS), family.prompt_batch(processor, images)):
        marked = batch["token_type_ids"] == 1
        assert torch.equal(marked, batch["input_ids"] == image_token)
        assert marked.sum(dim=1).tolist() == [IMAGE_TOKENS] * len(images)


def test_token_type_ids_give_image_tokens_bidirectional_attention(tiny, images):
    family, model, processor = tiny
    batch = family.prompt_batch(processor, images[:1])
    without = {key: value for key, value in batch.items() if key != "token_type_ids"}
    with torch.no_grad():
        logits = model(**batch).logits
        causal = model(**without).logits
    is_image = batch["token_type_ids"][0] == 1
    first = int(is_image.nonzero()[0])
    # The tokens before the image cannot see it either way: unchanged.
    torch.testing.assert_close(logits[0, :first], causal[0, :first])
    # The first image token sees the later ones only with token_type_ids; the change carries on to the answer.
    assert float((logits[0, first] - causal[0, first]).abs().max()) > 1e-3
    assert float((logits[0, -1] - causal[0, -1]).abs().max()) > 1e-3


def test_prompt_batches_are_left_padded_up_to_the_generation_prompt(tiny, images):
    family, _, processor = tiny
    batch = family.prompt_batch(processor, images)
    assert set(batch) >= {"input_ids", "attention_mask", "pixel_values", "token_type_ids"}
    assert bool(batch["attention_mask"][:, -1].all())
    tokenizer = processor.tokenizer
    for ids in batch["input_ids"]:
        assert tokenizer.decode(ids[-3:]) == "<start_of_turn>model\n"
    assert batch["pixel_values"].shape == (3, 3, 32, 32)


def test_images_must_be_2d_uint8(tiny):
    family, _, processor = tiny
    with pytest.raises(ValueError, match="2-D uint8"):
        family.prompt_batch(processor, [np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="2-D uint8"):
        family.prompt_batch(processor, [np.zeros((8, 8), np.float32)])


def test_lora_targets_every_language_model_linear_layer_and_nothing_else(tiny):
    family, model, _ = tiny
    names = family.lora_target_modules(model)
    layers = model.config.text_config.num_hidden_layers
    projections = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    assert sorted(names) == sorted(f"model.language_model.layers.{i}.{p}" for i in range(layers) for p in projections)
    with pytest.raises(ValueError, match="no linear layer under"):
        family.lora_target_modules(model, include_projector=True)
