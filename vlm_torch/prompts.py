"""The method's question and answer options, shared by training, generation, scoring and parsing."""

from __future__ import annotations

# Option letter -> option text. The class of option B (fracture or dislocation) is the positive class (label 1).
OPTIONS: dict[str, str] = {"A": "No injury", "B": "Fracture or dislocation"}
LABEL_OF_OPTION: dict[str, int] = {"A": 0, "B": 1}

QUESTION = f"Analyse this radiograph and classify it. Answer with one option.\nA: {OPTIONS['A']}\nB: {OPTIONS['B']}"


def target_answer(label: int) -> str:
    """The completion a model learns for ``label`` (0 or 1): the whole option, "B: Fracture or dislocation"."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (no injury) or 1 (fracture or dislocation), got {label!r}")
    letter = "B" if label == 1 else "A"
    return f"{letter}: {OPTIONS[letter]}"
