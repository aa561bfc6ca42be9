"""A model's free-text answer -> the option it names: "A", "B", "both" or "neither".

    parse_answer("B: Fracture or dislocation")   # "B"
    parse_answer("The answer is b.")             # "B"
    parse_answer("**No injury**")                # "A"
    parse_answer("A: No injury\\nB: Fracture or dislocation")   # "both" (the model echoed the options)
    parse_answer("I cannot tell")                # "neither"

An answer names an option by its letter or by its text (case, markdown and punctuation ignored). One
that names both options, or neither, is its own outcome: it is reported and scored as wrong, never
guessed. The rules are strict on purpose:

- A letter counts as a standalone token ("B", "(b)", "b)", "B:", "answer: B"), never inside a word, and
  not after "not"/"no" ("not B"). The article "a" is not the letter: "a"/"A" followed by a lowercase word
  ("a fracture", "A fracture is seen") is read as an article, unless the word is one an article never
  precedes ("A or B", "A because ...").
- An option text counts as "no injury" / "no injuries" and "fracture or dislocation" ("fracture/dislocation",
  "fractures or dislocations"), not after a negation ("no fracture or dislocation" names no option: it
  means A, but that is an inference the parser does not make).
- A part of an option text ("fracture" alone) names nothing.

Pure Python: no torch, no TensorFlow.
"""

from __future__ import annotations

import re

from vlm_torch.prompts import LABEL_OF_OPTION

OUTCOMES = ("A", "B", "both", "neither")

# Markdown and LaTeX decoration a model may wrap its answer in.
_DECORATION = re.compile(r"[*_`#>~]|\\boxed|\\text(?:bf)?")
_BOUNDARY_BEFORE = r"(?<![A-Za-z0-9'’\-])"
_BOUNDARY_AFTER = r"(?![A-Za-z0-9'’\-])"
# "not B", "no A", "not option B", "isn't B": a negated mention names nothing.
_NEGATED = re.compile(
    r"(?:\bnot|\bno|n[’']t|\bnor|\bneither|\bwithout|\brule\s+out|\bexclude[sd]?)\W*(?:option\W*)?$", re.I
)

_NOT_AFTER_ARTICLE = r"(?:or|and|nor|but|because|since|as|is|was|would|seems|fits|applies)"
_LETTER = {
    "B": re.compile(_BOUNDARY_BEFORE + r"[Bb]" + _BOUNDARY_AFTER),
    # "A" / "a" followed by whitespace and a lowercase word is the article ("a fracture", "A fracture is seen"),
    # unless the word is one an article never precedes ("A or B", "A because ...").
    "A": re.compile(_BOUNDARY_BEFORE + r"[Aa]" + _BOUNDARY_AFTER + r"(?!\s+(?!" + _NOT_AFTER_ARTICLE + r"\b)[a-z])"),
}
_TEXT = {
    "A": re.compile(r"\bno\s+injur(?:y|ies)\b", re.I),
    "B": re.compile(r"\bfractures?\s*(?:or|/|and/or)\s*dislocations?\b", re.I),
}


def named_options(text: str) -> set[str]:
    """The option letters ``text`` names, by letter or by option text (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"Expected the model's answer as a str, but got {type(text).__name__}.")
    clean = _DECORATION.sub(" ", text)
    named = set()
    for letter in ("A", "B"):
        for pattern in (_LETTER[letter], _TEXT[letter]):
            if any(not _NEGATED.search(clean[: m.start()]) for m in pattern.finditer(clean)):
                named.add(letter)
                break
    return named


def parse_answer(text: str) -> str:
    """The outcome of one answer: ``"A"``, ``"B"``, ``"both"`` or ``"neither"`` (never a guess)."""
    named = named_options(text)
    if len(named) == 2:
        return "both"
    if not named:
        return "neither"
    return named.pop()


def predicted_label(outcome: str) -> int | None:
    """The class an outcome predicts: 0 for "A", 1 for "B", None for "both" / "neither"."""
    if outcome not in OUTCOMES:
        raise ValueError(f"Expected an outcome among {OUTCOMES}, but got {outcome!r}.")
    return LABEL_OF_OPTION.get(outcome)


__all__ = ["OUTCOMES", "named_options", "parse_answer", "predicted_label"]
