"""Which class is the positive one: recognised from the class names, or named by the user.

A folder of images labelled by their parent folder has no numbering of its own, and sorting the
folder names is no answer (FracAtlas's `Fractured` sorts before `Non_fractured`). The usual names
are recognised, case-insensitively, with their negations: `Fractured`, `fracture`, `positive`,
`abnormal`, `injury`, `injured` are positive; `Non_fractured`, `not-fractured`, `NonFractured`,
`no_fracture`, `normal`, `negative`, `no_injury`, `uninjured`, `healthy` are negative. A name is
split into words (at `_`, `-`, spaces, digits and camelCase), so `study1_positive` is positive and
`Non_fractured` (which contains "fractured") is negative.

Example:
    >>> positive_index(["Fractured", "Non_fractured"])
    0
    >>> binary_label_names(["Fractured", "Non_fractured"])
    ('Non_fractured', 'Fractured')
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["binary_label_names", "class_kind", "match_class", "positive_index"]

POSITIVE_WORDS = frozenset(
    {"fracture", "fractured", "fractures", "positive", "abnormal", "abnormality", "injury", "injured", "injuries"}
)
NEGATIVE_WORDS = frozenset({"normal", "negative", "healthy", "uninjured", "unfractured", "nonfractured"})
NEGATORS = frozenset({"non", "not", "no", "without"})
_NEGATING_PREFIXES = ("non", "not", "no", "un")


def _words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)  # NonFractured -> Non Fractured
    return re.findall(r"[a-z]+", spaced.lower())


def class_kind(name: str) -> str | None:
    """`"positive"`, `"negative"`, or None when the name says neither (or both).

    Example:
        >>> [class_kind(n) for n in ("Fractured", "Non_fractured", "study1_positive", "cats")]
        ['positive', 'negative', 'positive', None]
    """
    words = _words(name)
    positive = negative = False
    for n, word in enumerate(words):
        negated = n > 0 and words[n - 1] in NEGATORS
        if word in NEGATIVE_WORDS:
            negative = True
        elif word in POSITIVE_WORDS:
            positive |= not negated
            negative |= negated
        elif any(word.startswith(p) and word[len(p) :] in POSITIVE_WORDS for p in _NEGATING_PREFIXES):
            negative = True  # nonfractured, notfractured, nofracture, uninjured
    if positive == negative:
        return None
    return "positive" if positive else "negative"


def match_class(names: Sequence[str], wanted: str) -> int:
    """The index of `wanted` among `names`: exact, else the one name equal to it ignoring case.

    Raises:
        ValueError: no name (or more than one, ignoring case) matches; the message lists them.
    """
    names = list(names)
    if wanted in names:
        return names.index(wanted)
    folded = [n for n, name in enumerate(names) if name.casefold() == wanted.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise ValueError(f"Expected the positive class to be one of {names}, but got {wanted!r}.")


def positive_index(names: Sequence[str], positive: str | None = None) -> int | None:
    """The index of the positive class among `names`, or None when it cannot be told.

    Args:
        names: the class names.
        positive: the positive class's name, as the user gave it (see `match_class`); None to
            recognise it: with exactly two classes, the one whose name is positive while the other's
            is not (`class_kind`).

    Raises:
        ValueError: `positive` names none of the classes.
    """
    if positive is not None:
        return match_class(names, positive)
    if len(names) != 2:
        return None
    kinds = [class_kind(name) for name in names]
    if kinds.count("positive") == 1:
        return kinds.index("positive")
    return None


def binary_label_names(names: Sequence[str], positive: str | None = None) -> tuple[str, str]:
    """Two class names ordered `(negative, positive)`, so that the positive class is label 1.

    Args:
        names: the two class names, in any order (e.g. folder names).
        positive: the positive class's name; None to recognise it (see `positive_index`).

    Raises:
        ValueError: there are not two names, `positive` names neither, or neither name is recognised
            as the positive class; the message lists the names and says to name the positive one.
    """
    names = list(names)
    if len(names) != 2:
        raise ValueError(f"Expected two classes (a positive and a negative), but got {len(names)}: {names}.")
    index = positive_index(names, positive)
    if index is None:
        raise ValueError(
            f"Cannot tell which of the classes {names} is the positive one: pass --positive NAME "
            f"(e.g. --positive {names[0]}). Recognised positive names: "
            f"{', '.join(sorted(POSITIVE_WORDS))}; negative: {', '.join(sorted(NEGATIVE_WORDS))} and negations."
        )
    return names[1 - index], names[index]
