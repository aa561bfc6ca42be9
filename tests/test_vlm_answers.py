"""vlm_torch.answers: free-text answers -> "A", "B", "both" or "neither", never guessed."""

import pytest

from vlm_torch.answers import OUTCOMES, parse_answer, predicted_label
from vlm_torch.prompts import QUESTION, target_answer


@pytest.mark.parametrize(
    "text",
    [
        "B",
        "b",
        " B. ",
        "(b)",
        "b)",
        "[B]",
        "B: Fracture or dislocation",
        "The answer is B.",
        "The answer is b",
        "Answer: B",
        "Option B",
        "Fracture or dislocation",
        "fracture or dislocation.",
        "**B**",
        "**B: Fracture or dislocation**",
        "## Answer\n\n`B`",
        "$\\boxed{B}$",
        "I would choose B because the cortex is disrupted.",
        "The image shows a fracture or dislocation of the distal radius.",
        "It is not A, it is B.",
        "Fractures/dislocations",
    ],
)
def test_answers_naming_b(text):
    assert parse_answer(text) == "B"


@pytest.mark.parametrize(
    "text",
    [
        "A",
        "a",
        "a.",
        "(a)",
        "A: No injury",
        "The answer is A.",
        "The answer is a",
        "answer: a",
        "No injury",
        "no injury.",
        "*No injury*",
        "__No injury__",
        "A. No injury",
        "Option A: no injury seen.",
        "There is no injury; A.",
        "Not B: A",
    ],
)
def test_answers_naming_a(text):
    assert parse_answer(text) == "A"


@pytest.mark.parametrize(
    "text",
    [
        "A: No injury\nB: Fracture or dislocation",  # the options echoed
        "A or B",
        "Either a) or b)",
        "No injury, or maybe a fracture or dislocation",
    ],
)
def test_answers_naming_both(text):
    assert parse_answer(text) == "both"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "I cannot tell.",
        "Fracture",  # a part of option B's text names nothing
        "A fracture is seen.",  # the article, not the letter
        "There is a fracture.",
        "No fracture or dislocation",  # negated: means A, but that is inference, not a named option
        "Not B",
        "Baseline abnormal",  # letters inside words
        "C",
        "A's",
    ],
)
def test_answers_naming_neither(text):
    assert parse_answer(text) == "neither"


def test_the_target_answers_and_the_question_itself():
    assert parse_answer(target_answer(0)) == "A"
    assert parse_answer(target_answer(1)) == "B"
    assert parse_answer(QUESTION) == "both"  # a model that repeats the question answered nothing


def test_predicted_label():
    assert [predicted_label(o) for o in OUTCOMES] == [0, 1, None, None]
    with pytest.raises(ValueError, match="Expected an outcome"):
        predicted_label("C")


def test_a_non_string_answer_is_an_error():
    with pytest.raises(TypeError, match="as a str"):
        parse_answer(None)


def test_the_letter_a_before_a_conjunction_is_the_option():
    assert parse_answer("The answer is A because the cortex is intact.") == "A"
    assert parse_answer("a or b") == "both"
    assert parse_answer("a broken bone") == "neither"
