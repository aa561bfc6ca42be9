"""What an elbow radiograph's file name says: class (normal / injury), view and patient.

The class follows the method's definition: *injury* is an untreated fracture and/or dislocation;
*normal* is everything else, a contusion and a treated or healed injury included. The rules that
read a name (vocabulary, negation, uncertainty, treatment before/after) are in `label_rules.py`;
a name they cannot label gets no label (`None`): the builder reports it and leaves it out.
"""

from __future__ import annotations

import re

from tf_fracture_datasets.elbow.label_rules import (
    DEFAULT_LABEL_RULES,
    LabelDecision,
    LabelRules,
    LabelRulesError,
    stem_of,
    tokenize,
)

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_LABEL_RULES",
    "DEFAULT_PATIENT_ID_PATTERN",
    "VIEW_NAMES",
    "LabelDecision",
    "LabelRules",
    "LabelRulesError",
    "explain_label",
    "label_from_filename",
    "parse_label",
    "parse_view",
    "patient_id_from_filename",
    "stem_of",
    "tokenize",
    "view_from_filename",
]

CLASS_NAMES = ("normal", "injury")
VIEW_NAMES = ("ap", "lateral", "unknown")

# Patient id: "P12", "P0012", "pt-12", "patient_12", "Patient 12" -> "12" (leading zeros dropped).
DEFAULT_PATIENT_ID_PATTERN = r"(?i)(?<![a-z0-9])(?:patient|pt|p)[ _-]?0*(\d+)(?![0-9])"


def _contains(tokens: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tokens[i : i + n] == phrase for i in range(len(tokens) - n + 1))


VIEW_KEYWORDS = {
    "ap": ("ap", "pa", "frontal", "anteroposterior", "posteroanterior"),
    "lateral": ("lat", "lateral", "lateral view"),
}
# "Lateral" is also anatomy (the lateral condyle is a common elbow fracture site): not a view.
_ANATOMICAL_LATERAL = re.compile(r"^(?:condyl|epicondyl|humeral|column|collateral|side)")


def label_from_filename(name: str, rules: LabelRules = DEFAULT_LABEL_RULES) -> int | None:
    """The class index a file name implies (0 normal, 1 injury), or None where it cannot be told.

    Args:
        name: a file name or path; folders and the extension are ignored.
        rules: the vocabulary (`label_rules.DEFAULT_LABEL_RULES`, or one changed by a rule file).

    Example:
        >>> label_from_filename("P0012_AP_supracondylar_fracture.png")
        1
        >>> label_from_filename("P3_fracture_before_cast.png")  # not yet treated: injury
        1
        >>> label_from_filename("dislocated_elbow_relocated.png")  # reduced: normal
        0
        >>> label_from_filename("P8_no_obvious_fracture.png")
        0
        >>> label_from_filename("query_supracondylar_fracture.png") is None  # uncertain: reported
        True
    """
    return rules.decide(name).label


def explain_label(name: str, rules: LabelRules = DEFAULT_LABEL_RULES) -> LabelDecision:
    """`label_from_filename` with the reason, e.g. to check a file list before a build.

    Example:
        >>> explain_label("fracture_cast_awaiting_ORIF.png")
        LabelDecision(label=None, reason="contradictory: treated ('cast') and awaiting treatment ('orif')")
    """
    return rules.decide(name)


def view_from_filename(name: str) -> str:
    """`"ap"`, `"lateral"` or `"unknown"` (no view word, or both)."""
    tokens = list(tokenize(stem_of(name)))
    tokens = [
        t
        for i, t in enumerate(tokens)
        if not (t == "lateral" and i + 1 < len(tokens) and _ANATOMICAL_LATERAL.match(tokens[i + 1]))
    ]
    found = {
        view for view, keywords in VIEW_KEYWORDS.items() if any(_contains(tuple(tokens), tokenize(k)) for k in keywords)
    }
    return found.pop() if len(found) == 1 else "unknown"


def patient_id_from_filename(name: str, pattern: str | re.Pattern = DEFAULT_PATIENT_ID_PATTERN) -> str | None:
    """The first group of `pattern` in the file name (without folders), or None."""
    match = re.search(pattern, stem_of(name))
    return match.group(1) if match else None


def parse_label(value: str) -> int | None:
    """A manifest's label cell: `normal`/`injury` (any case) or `0`/`1`; empty -> None."""
    value = value.strip().lower()
    if not value:
        return None
    if value in CLASS_NAMES:
        return CLASS_NAMES.index(value)
    if value in ("0", "1"):
        return int(value)
    raise ValueError(f"Expected a label of {', '.join(CLASS_NAMES)}, 0 or 1, but got {value!r}.")


def parse_view(value: str) -> str | None:
    """A manifest's view cell: `ap`, `lateral`, `unknown` or one of their keywords; empty -> None."""
    value = value.strip().lower()
    if not value:
        return None
    if value in VIEW_NAMES:
        return value
    for view, keywords in VIEW_KEYWORDS.items():
        if tokenize(value) in {tokenize(k) for k in keywords}:
            return view
    raise ValueError(f"Expected a view of {', '.join(VIEW_NAMES)}, but got {value!r}.")
