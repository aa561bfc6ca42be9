"""What an elbow radiograph's file name says: class (normal / injury), view and patient.

The class follows the method's definition: *injury* is an untreated fracture and/or dislocation;
*normal* is everything else, including a contusion and a fracture that has been treated (cast,
wires, plate, screws, fixation). File names are split into lower-case word and number tokens
(`"P0012_AP_Supracondylar-Fracture.png"` -> `p 0012 ap supracondylar fracture`) and matched against
an ordered table of keyword rules: the first rule with a keyword in the name decides. A keyword of
several words (`"k wire"`, `"no fracture"`) matches those tokens in a row. A name that matches no
rule gets no label (`None`): the builder reports it and leaves it out.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Iterable, Mapping

CLASS_NAMES = ("normal", "injury")
VIEW_NAMES = ("ap", "lateral", "unknown")

# Patient id: "P12", "P0012", "pt-12", "patient_12", "Patient 12" -> "12" (leading zeros dropped).
DEFAULT_PATIENT_ID_PATTERN = r"(?i)(?<![a-z0-9])(?:patient|pt|p)[ _-]?0*(\d+)(?![0-9])"

_TOKEN = re.compile(r"[a-z]+|\d+")


def tokenize(text: str) -> tuple[str, ...]:
    """Lower-case runs of letters and of digits: `"K-wires_AP2"` -> `("k", "wires", "ap", "2")`."""
    return tuple(_TOKEN.findall(text.lower()))


def stem_of(name: str) -> str:
    """The file name without folders and extension: `"a/P3_cast.png"` -> `"P3_cast"`."""
    base = posixpath.basename(name.replace("\\", "/"))
    return base.rsplit(".", 1)[0] if "." in base else base


def _contains(tokens: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tokens[i : i + n] == phrase for i in range(len(tokens) - n + 1))


@dataclasses.dataclass(frozen=True)
class KeywordRule:
    """Names containing any of `keywords` get class `label`.

    Args:
        label: `"normal"` or `"injury"`.
        keywords: words or phrases, matched case-insensitively on whole tokens.
        description: why the rule exists, for reports.
    """

    label: str
    keywords: tuple[str, ...]
    description: str = ""

    def __post_init__(self):
        if self.label not in CLASS_NAMES:
            raise ValueError(f"Expected `label` to be one of {', '.join(CLASS_NAMES)}, but got `label={self.label!r}`.")
        keywords = (self.keywords,) if isinstance(self.keywords, str) else tuple(self.keywords)
        if not keywords:
            raise ValueError(f"The rule for {self.label!r} has no keywords.")
        for keyword in keywords:
            if not tokenize(keyword):
                raise ValueError(f"Keyword {keyword!r} of the {self.label!r} rule has no letters or digits.")
        object.__setattr__(self, "keywords", keywords)
        object.__setattr__(self, "_phrases", tuple(tokenize(k) for k in keywords))

    def matches(self, tokens: tuple[str, ...]) -> bool:
        return any(_contains(tokens, phrase) for phrase in self._phrases)


@dataclasses.dataclass(frozen=True)
class LabelTable:
    """An ordered keyword-to-class table: the first rule that matches a name decides its class.

    Args:
        rules: the rules, most specific first (treatment before fracture, for example).

    Example:
        >>> table = LabelTable.from_pairs([("normal", ["cast", "plate"]), ("injury", ["fracture"])])
        >>> label_from_filename("P3_fracture_cast.png", table)
        0
    """

    rules: tuple[KeywordRule, ...]

    def __post_init__(self):
        rules = tuple(self.rules)
        if not rules or not all(isinstance(r, KeywordRule) for r in rules):
            raise ValueError("Expected `rules` to be a non-empty sequence of KeywordRule.")
        object.__setattr__(self, "rules", rules)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, Iterable[str]]] | Mapping[str, Iterable[str]]) -> LabelTable:
        """Builds a table from `(label, keywords)` pairs in priority order (or a dict, in its order)."""
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        return cls(tuple(KeywordRule(label, tuple(keywords)) for label, keywords in items))

    def rule_for(self, name: str) -> KeywordRule | None:
        tokens = tokenize(stem_of(name))
        return next((rule for rule in self.rules if rule.matches(tokens)), None)


# Treated fractures and reduced dislocations are "normal" in the method's definition.
TREATMENT_KEYWORDS = (
    "cast", "casts", "casted", "plaster",
    "wire", "wires", "wired", "kwire", "kwires",
    "plate", "plates", "plated", "plating",
    "screw", "screws",
    "fixation", "fixator", "fixed", "orif", "crif",
    "pin", "pins", "pinned", "pinning",
    "nail", "nails", "implant", "implants",
    "postop", "post op", "postoperative", "operated", "treated", "reduced",
)  # fmt: skip
NEGATION_KEYWORDS = (
    "no fracture", "no fractures", "no fx", "no dislocation", "without fracture",
    "non fracture", "nonfracture", "non fractured", "nonfractured", "not fractured", "unfractured",
)  # fmt: skip
INJURY_KEYWORDS = (
    "fracture", "fractures", "fractured", "fx", "broken", "avulsion",
    "supracondylar", "monteggia",
    "dislocation", "dislocations", "dislocated", "luxation", "subluxation", "subluxated",
)  # fmt: skip
NORMAL_KEYWORDS = (
    "normal", "contusion", "contusions", "bruise", "bruised", "bruising", "healthy", "negative", "unremarkable",
)  # fmt: skip

DEFAULT_LABEL_TABLE = LabelTable(
    (
        KeywordRule("normal", TREATMENT_KEYWORDS, "treated fracture or reduced dislocation"),
        KeywordRule("normal", NEGATION_KEYWORDS, "explicitly no fracture or dislocation"),
        KeywordRule("injury", INJURY_KEYWORDS, "untreated fracture and/or dislocation"),
        KeywordRule("normal", NORMAL_KEYWORDS, "normal, or a contusion"),
    )
)

VIEW_KEYWORDS = {
    "ap": ("ap", "pa", "frontal", "anteroposterior", "posteroanterior"),
    "lateral": ("lat", "lateral", "lateral view"),
}
# "Lateral" is also anatomy (the lateral condyle is a common elbow fracture site): not a view.
_ANATOMICAL_LATERAL = re.compile(r"^(?:condyl|epicondyl|humeral|column|collateral|side)")


def label_from_filename(name: str, table: LabelTable = DEFAULT_LABEL_TABLE) -> int | None:
    """The class index a file name implies (0 normal, 1 injury), or None where no rule matches.

    Args:
        name: a file name or path; folders and the extension are ignored.
        table: the keyword rules, first match wins.

    Example:
        >>> label_from_filename("P0012_AP_supracondylar_fracture.png")
        1
        >>> label_from_filename("P3_fracture_cast.png")  # treated: normal
        0
        >>> label_from_filename("scan_0042.png") is None
        True
    """
    rule = table.rule_for(name)
    return None if rule is None else CLASS_NAMES.index(rule.label)


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
