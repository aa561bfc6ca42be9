"""The A/B score (log P(B) - log P(A) at the answer position) and greedy answers on a tiny random Gemma-3."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlm_tiny import load_tiny_medgemma  # noqa: E402

from vlm_torch.families import IGNORE_INDEX  # noqa: E402
from vlm_torch.prompts import target_answer  # noqa: E402
from vlm_torch.scoring import ab_scores, generate_answers, option_token_ids  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_tiny_medgemma(tmp_path_factory.mktemp("medgemma"))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(2)
    return [rng.integers(0, 256, (32, 40), dtype=np.uint8) for _ in range(3)]


def test_option_ids_are_the_first_answer_tokens_the_model_is_trained_on(tiny, images):
    family, _, processor = tiny
    tokenizer = family.tokenizer(processor)
    id_a, id_b = option_token_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens([id_a, id_b]) == ["A", "B"]
    batch = family.training_batch(processor, images[:2], [target_answer(0), target_answer(1)])
    first = [int(labels[labels != IGNORE_INDEX][0]) for labels in batch["labels"]]
    assert first == [id_a, id_b]


class _SameFirstToken:
    """A tokenizer whose every text starts with token 7 (no chat template)."""

    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [7, *range(len(text))]}

    def convert_ids_to_tokens(self, token_id):
        return "<7>"


def test_options_sharing_their_first_token_are_refused():
    with pytest.raises(ValueError, match="same token"):
        option_token_ids(_SameFirstToken())


def _scores_by_hand(model, family, processor, images, id_a, id_b):
    scores = []
    for image in images:  # one image at a time: no padding at all
        batch = family.prompt_batch(processor, [image])
        with torch.no_grad():
            logits = model(**batch).logits[0, -1].double()
        log_probs = logits - torch.logsumexp(logits, dim=0)
        scores.append(float(log_probs[id_b] - log_probs[id_a]))
    return np.array(scores)


def test_the_score_is_log_p_b_minus_log_p_a_at_the_answer_position(tiny, images):
    family, model, processor = tiny
    id_a, id_b = option_token_ids(family.tokenizer(processor))
    scores = ab_scores(model, family.prompt_batch(processor, images), id_a, id_b)
    assert scores.dtype == np.float64 and scores.shape == (3,)
    expected = _scores_by_hand(model, family, processor, images, id_a, id_b)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(scores) > 1e-3  # the images score differently: the score reads the image


def _left_pad(batch, extra, pad_id):
    """``batch`` with ``extra`` more padding positions at the left of every row."""
    out = dict(batch)
    rows = batch["input_ids"].shape[0]
    for key, value in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        padding = torch.full((rows, extra), value, dtype=batch[key].dtype)
        out[key] = torch.cat([padding, batch[key]], dim=1)
    return out


def test_the_score_does_not_change_with_left_padding(tiny, images):
    family, model, processor = tiny
    tokenizer = family.tokenizer(processor)
    id_a, id_b = option_token_ids(tokenizer)
    alone = ab_scores(model, family.prompt_batch(processor, images[:1]), id_a, id_b)
    # Beside a longer row: image 0 padded by 5 on the left, image 1's prompt led by 5 more real tokens.
    pair = family.prompt_batch(processor, images[:2])
    pair = _left_pad(pair, 5, tokenizer.pad_token_id)
    newline = tokenizer.convert_tokens_to_ids("\n")
    pair["input_ids"][1, :5] = newline
    pair["attention_mask"][1, :5] = 1
    scores = ab_scores(model, pair, id_a, id_b)
    np.testing.assert_allclose(scores[0], alone[0], rtol=1e-5, atol=1e-6)
    assert abs(scores[1] - alone[0]) > 1e-4  # the other row is another image (and a longer prompt)


def test_right_padded_batches_are_refused(tiny, images):
    family, model, processor = tiny
    batch = family.training_batch(processor, images[:2], [target_answer(1), target_answer(0)])
    with pytest.raises(ValueError, match="LEFT padded"):
        ab_scores(model, batch, 1, 2)


def _greedy_by_hand(model, batch, steps):
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    new = []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(
                input_ids=ids, attention_mask=mask, token_type_ids=types, pixel_values=batch["pixel_values"]
            ).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
        new.append(int(token))
        ids = torch.cat([ids, token], dim=1)
        mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        types = torch.cat([types, torch.zeros_like(token)], dim=1)
    return new


def test_generated_answers_are_the_greedy_new_tokens_decoded(tiny, images):
    family, model, processor = tiny
    batch = family.prompt_batch(processor, images[:1])
    answers = generate_answers(model, family, processor, batch, max_new_tokens=3)
    expected = processor.tokenizer.decode(_greedy_by_hand(model, batch, 3), skip_special_tokens=True).strip()
    assert answers == [expected]
    prompt_words = processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert "Analyse" in prompt_words and "Analyse" not in answers[0]  # only the new tokens
