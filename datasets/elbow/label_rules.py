"""The rules that turn an elbow radiograph's file name into a class: vocabulary, negation, timing.

The method's classes: *injury* is an untreated fracture and/or dislocation; *normal* is everything
else, a contusion and a treated (cast, splinted, reduced, fixed) or healed injury included. A file
name is read the way a clinician reads a short note:

1. **Tokens.** The name (without folders and extension) is split at `_ - . space`, at camelCase
   and at digits, and lower-cased: `"P12_RadialHead#-noFracture"` -> `p 12 radial head # no
   fracture`. `#` is a token of its own (clinical shorthand for fracture, `supracondylar#`) except
   before a number (`case#12`); `?` is a token (`?fracture`). A `post`, `pre` or `non` glued to a
   known word is split off (`postreduction`, `preop`, `nonfractured`).
2. **Terms.** Runs of tokens are matched against the vocabulary, longest phrase first
   (`negative for` before `negative`, `old healed` before `old`). Each term belongs to one category
   (see `CATEGORIES` and `DEFAULT_LABEL_RULES`).
3. **Modifiers.** A `negation` (no, without, ruled out...), `uncertain` (?, query, possible...) or
   `pending` (awaiting, before, pre...) term applies to the nearest term it can modify *after* it,
   up to 3 tokens away (`no obvious acute fracture`), and then to terms of the same kind joined to
   it directly or by and/or (`no fracture or dislocation`). Only when no term follows within
   3 tokens does it look back up to 3 tokens (`fracture ruled out`, `fracture?`, `ORIF pending`).
   A `terminator` (but, with, however...) or another modifier stops it. `pending` modifies only
   treatment terms (`awaiting ORIF fracture`: the ORIF is pending, the fracture is not).
4. **Decision**, in this order (`LabelRules.decide`):
   - an `ambiguous` term (old, healing, nonunion, occult...) or an uncertain treatment: unmatched;
   - an affirmed injury with a treatment both done and pending (`fracture_cast_awaiting_ORIF`):
     unmatched; with a treatment done or a `resolved` term (healed, united): normal; with a
     `normal` term (normal, unremarkable, NAD): unmatched (contradictory); otherwise injury;
   - no affirmed injury but an uncertain one (`?fracture`, `possible fracture`): unmatched;
   - only a pending treatment (`awaiting_ORIF`, `pre-op`): unmatched (the injury is not named);
   - a treatment done (`ORIF_plate_screws`), a resolved, negated-injury, `normal` or `minor`
     (contusion, sprain) term: normal;
   - nothing: unmatched.

Unmatched names are never guessed: the builder reports them with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from collections.abc import Iterable, Mapping

NORMAL, INJURY = 0, 1

CONCEPTS = ("injury", "treatment", "resolved", "normal", "minor", "ambiguous")
MODIFIERS = ("negation", "uncertain", "pending")
CATEGORIES = (*CONCEPTS, *MODIFIERS, "terminator", "ignore")
CATEGORY_HELP = {
    "injury": "a fracture or dislocation (class injury unless treated, healed, negated or uncertain)",
    "treatment": "a treatment that has been given (class normal), unless `pending` or negated",
    "resolved": "a healed injury (class normal)",
    "normal": "the study is normal (class normal; contradicts an untreated injury)",
    "minor": "a finding that is not a fracture or dislocation, e.g. a contusion (class normal)",
    "ambiguous": "the name cannot be labelled without a clinician: reported, e.g. old, healing, nonunion",
    "negation": "negates the term it modifies: no, without, ruled out",
    "uncertain": "makes the term it modifies uncertain (reported): ?, query, possible",
    "pending": "makes the treatment it modifies not yet given: awaiting, before, pre",
    "terminator": "ends the reach of a modifier: but, with, however",
    "ignore": "phrases read as plain words, so that no part of them counts: non displaced, normal alignment",
}
_TARGETS = {"negation": CONCEPTS, "uncertain": CONCEPTS, "pending": ("treatment",)}
_CONJUNCTIONS = frozenset(("and", "or", "nor"))
_SPLIT_PREFIXES = ("post", "pre", "non")
WINDOW = 3  # tokens a modifier reaches over

# `#` is "fracture" except as a number sign (`case#12`, `# 3`); camelCase splits before a capital.
_TOKEN = re.compile(r"#(?![\s_.-]*\d)|\?|[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def tokenize(text: str) -> tuple[str, ...]:
    """Lower-case word, number, `#` and `?` tokens: `"K-wires_AP2"` -> `("k", "wires", "ap", "2")`.

    Example:
        >>> tokenize("P0012_SupracondylarFx#?")
        ('p', '0012', 'supracondylar', 'fx', '#', '?')
    """
    return tuple(token.lower() for token in _TOKEN.findall(text))


def stem_of(name: str) -> str:
    """The file name without folders and extension: `"a/P3_cast.png"` -> `"P3_cast"`."""
    base = posixpath.basename(name.replace("\\", "/"))
    return base.rsplit(".", 1)[0] if "." in base else base


class LabelRulesError(ValueError):
    """A label rule set or rule file is malformed; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Mention:
    """A matched term (`category` None for a plain token) over tokens `[start, end)`."""

    category: str | None
    term: str
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class LabelDecision:
    """The class a name implies (`label` 0 normal, 1 injury, None unmatched) and why."""

    label: int | None
    reason: str


@dataclasses.dataclass(frozen=True)
class LabelRules:
    """The vocabulary, by category, that `decide` reads file names with (see the module docstring).

    Every field is a tuple of terms: words or phrases, tokenised like file names (so `"K-wire"` and
    `"k wire"` are the same term, and `"kwire"` another). A term has one category only; list each
    inflection you want matched (`"cast"`, `"casts"`). `DEFAULT_LABEL_RULES` is the default set,
    `with_changes`/`from_file` extend it.

    Example:
        >>> rules = DEFAULT_LABEL_RULES.with_changes(add={"injury": ["frx"]}, remove={"treatment": ["sling"]})
        >>> rules.decide("P3_olecranon_frx.png").label
        1
        >>> rules.decide("radial_head_fracture_sling.png").label
        1
    """

    injury: tuple[str, ...] = ()
    treatment: tuple[str, ...] = ()
    resolved: tuple[str, ...] = ()
    normal: tuple[str, ...] = ()
    minor: tuple[str, ...] = ()
    ambiguous: tuple[str, ...] = ()
    negation: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    terminator: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        index: dict[tuple[str, ...], tuple[str, str]] = {}
        for category in CATEGORIES:
            value = getattr(self, category)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise LabelRulesError(f"`{category}` must be a list of terms, but got {value!r}.")
            terms = []
            for term in value:
                if not isinstance(term, str):
                    raise LabelRulesError(f"`{category}` terms must be strings, but got {term!r}.")
                phrase = tokenize(term)
                if not phrase:
                    raise LabelRulesError(f"The {category} term {term!r} has no letters, digits, '#' or '?'.")
                if phrase in index:
                    other, other_term = index[phrase]
                    if other != category:
                        raise LabelRulesError(
                            f"{term!r} is in both `{other}` (as {other_term!r}) and `{category}`; "
                            f"a term can have one meaning: remove it from one of them."
                        )
                    continue  # the same term twice (or `K-wire` and `k wire`): keep the first
                index[phrase] = (category, term)
                terms.append(term)
            object.__setattr__(self, category, tuple(terms))
        if not self.injury:
            raise LabelRulesError("The rules have no `injury` terms: no name could be labelled injury.")
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_longest", max(len(phrase) for phrase in index))
        object.__setattr__(self, "_splittable", {p[0] for p, (c, _) in index.items() if len(p) == 1 and c in CONCEPTS})

    # Reading names ---------------------------------------------------------------------------

    def tokens(self, name: str) -> tuple[str, ...]:
        """The tokens of a file name (without folders and extension), `post`/`pre`/`non` split off."""
        out = []
        for token in tokenize(stem_of(name)):
            for prefix in _SPLIT_PREFIXES:
                rest = token[len(prefix) :]
                if token.startswith(prefix) and rest in self._splittable and (token,) not in self._index:
                    out += [prefix, rest]
                    break
            else:
                out.append(token)
        return tuple(out)

    def mentions(self, name: str) -> list[Mention]:
        """Every token of the name, as the longest matching term or as a plain token."""
        tokens, out, i = self.tokens(name), [], 0
        while i < len(tokens):
            for n in range(min(self._longest, len(tokens) - i), 0, -1):
                hit = self._index.get(tokens[i : i + n])
                # "No 12", "not 3": a number sign, not a negation.
                if hit and not (hit[0] == "negation" and i + n < len(tokens) and tokens[i + n].isdigit()):
                    out.append(Mention(hit[0], hit[1], i, i + n))
                    i += n
                    break
            else:
                out.append(Mention(None, tokens[i], i, i + 1))
                i += 1
        return out

    def decide(self, name: str) -> LabelDecision:
        """The class of a file name (see the module docstring), with the reason.

        Example:
            >>> DEFAULT_LABEL_RULES.decide("awaiting_ORIF_olecranon_fracture.png")
            LabelDecision(label=1, reason="untreated injury: 'fracture' (treatment pending: 'orif')")
        """
        items = self.mentions(name)
        status: dict[int, set[str]] = {}
        for k, item in enumerate(items):
            if item.category in MODIFIERS:
                for j in _scope(items, k, _TARGETS[item.category]):
                    status.setdefault(j, set()).add(item.category)

        found: dict[str, list[str]] = {}
        for j, item in enumerate(items):
            if item.category in CONCEPTS:
                marks = status.get(j, set())
                state = next((m for m in ("uncertain", "negation", "pending") if m in marks), "affirmed")
                found.setdefault(f"{item.category}:{state}", []).append(item.term)
        return _decide(found)

    # Building rule sets ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, list[str]]:
        """`{category: [terms]}`, e.g. to write the defaults out as a starting rule file."""
        return {category: list(getattr(self, category)) for category in CATEGORIES}

    def with_changes(
        self,
        add: Mapping[str, Iterable[str]] | None = None,
        remove: Mapping[str, Iterable[str]] | None = None,
        replace: Mapping[str, Iterable[str]] | None = None,
    ) -> LabelRules:
        """A copy with whole categories replaced, then terms removed, then terms added.

        Raises:
            LabelRulesError: an unknown category, a term to remove that is not there, or a term
                left in two categories.
        """
        terms = self.to_dict()
        for category, values in (replace or {}).items():
            terms[_category(category, "replace")] = list(values)
        for category, values in (remove or {}).items():
            category = _category(category, "remove")
            for value in values:
                drop = [t for t in terms[category] if tokenize(t) == tokenize(value)]
                if not drop:
                    raise LabelRulesError(
                        f"Cannot remove {value!r} from `{category}`: it is not one of its terms "
                        f"({', '.join(map(repr, terms[category][:8]))}, ...)."
                    )
                terms[category] = [t for t in terms[category] if t not in drop]
        for category, values in (add or {}).items():
            terms[_category(category, "add")] += list(values)
        return LabelRules(**{category: tuple(values) for category, values in terms.items()})

    @classmethod
    def from_dict(cls, data: object, base: LabelRules | None = None, source: str = "label rules") -> LabelRules:
        """Rules from a rule file's content: `{"add"|"remove"|"replace": {category: [terms]}}`.

        Args:
            data: the parsed file, e.g. `{"add": {"injury": ["frx"]}, "remove": {"treatment": ["sling"]}}`.
                A `"comment"` key is allowed and ignored.
            base: the rules the file changes (default `DEFAULT_LABEL_RULES`).
            source: the file's name, for error messages.
        """
        base = DEFAULT_LABEL_RULES if base is None else base
        actions = ("replace", "remove", "add")
        if not isinstance(data, Mapping):
            raise LabelRulesError(f"{source}: expected a JSON object with the keys add, remove, replace, got {data!r}.")
        unknown = sorted(set(data) - {*actions, "comment"})
        if unknown:
            raise LabelRulesError(f"{source}: unknown key(s) {unknown}; expected add, remove, replace (and comment).")
        if not any(action in data for action in actions):
            raise LabelRulesError(f"{source}: has none of the keys add, remove, replace: it changes nothing.")
        changes = {}
        for action in actions:
            section = data.get(action, {})
            if not isinstance(section, Mapping):
                raise LabelRulesError(
                    f'{source}: `{action}` must map categories to lists of terms, e.g. {{"injury": ["frx"]}}, '
                    f"but got {section!r}."
                )
            for category, values in section.items():
                if isinstance(values, str) or not isinstance(values, list):
                    raise LabelRulesError(f"{source}: `{action}.{category}` must be a list of terms, got {values!r}.")
            changes[action] = section
        try:
            return base.with_changes(**changes)
        except LabelRulesError as error:
            raise LabelRulesError(f"{source}: {error}") from None

    @classmethod
    def from_json(cls, text: str, base: LabelRules | None = None, source: str = "label rules") -> LabelRules:
        """Rules from a rule file's JSON text (see `from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise LabelRulesError(
                f"{source} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
            ) from None
        return cls.from_dict(data, base=base, source=source)

    @classmethod
    def from_file(cls, path: str, base: LabelRules | None = None) -> LabelRules:
        """Rules from a JSON rule file (see `from_dict` and the elbow README)."""
        try:
            with open(path, encoding="utf-8-sig") as f:
                text = f.read()
        except OSError as error:
            raise LabelRulesError(f"Cannot read the label rules file {path}: {error.strerror}.") from None
        return cls.from_json(text, base=base, source=str(path))


def _category(name: str, action: str) -> str:
    if name not in CATEGORIES:
        raise LabelRulesError(
            f"`{action}` names the unknown category {name!r}; the categories are {', '.join(CATEGORIES)}."
        )
    return name


def _scan(items: list[Mention], k: int, step: int, targets: Iterable[str]) -> list[int]:
    """The items the modifier `items[k]` reaches in direction `step`: the first target, then its chain."""
    j, gap = k + step, 0
    while 0 <= j < len(items):
        item = items[j]
        if item.category == "terminator" or item.category in MODIFIERS:
            return []
        if item.category in targets:
            reached, kind = [j], item.category
            j += step
            while 0 <= j < len(items) and (
                items[j].category == kind or (items[j].category is None and items[j].term in _CONJUNCTIONS)
            ):
                if items[j].category == kind:
                    reached.append(j)
                j += step
            return reached
        gap += item.end - item.start
        if gap > WINDOW:
            return []
        j += step
    return []


def _scope(items: list[Mention], k: int, targets: Iterable[str]) -> list[int]:
    forward = _scan(items, k, +1, targets)
    if forward:
        return forward
    # Look back only when nothing it could be about follows ("ORIF for olecranon fracture": not pending).
    ahead = [item for item in items[k + 1 :] if item.category in CONCEPTS and item.start - items[k].end < WINDOW + 1]
    return [] if ahead else _scan(items, k, -1, targets)


def _quote(terms: list[str]) -> str:
    return ", ".join(f"'{t}'" for t in dict.fromkeys(terms))


def _decide(found: dict[str, list[str]]) -> LabelDecision:
    def get(key):
        return found.get(key, [])

    injury, done, pending = get("injury:affirmed"), get("treatment:affirmed"), get("treatment:pending")
    if get("ambiguous:affirmed"):
        return LabelDecision(None, f"ambiguous: {_quote(get('ambiguous:affirmed'))} (label it in the manifest)")
    if get("treatment:uncertain"):
        return LabelDecision(None, f"uncertain treatment: {_quote(get('treatment:uncertain'))}")
    if injury:
        if done and pending:
            return LabelDecision(
                None, f"contradictory: treated ({_quote(done)}) and awaiting treatment ({_quote(pending)})"
            )
        if done:
            return LabelDecision(NORMAL, f"treated injury: {_quote(injury)} ({_quote(done)})")
        if get("resolved:affirmed"):
            return LabelDecision(NORMAL, f"healed injury: {_quote(injury)} ({_quote(get('resolved:affirmed'))})")
        if get("normal:affirmed"):
            return LabelDecision(
                None, f"contradictory: normal ({_quote(get('normal:affirmed'))}) and injury ({_quote(injury)})"
            )
        detail = f" (treatment pending: {_quote(pending)})" if pending else ""
        return LabelDecision(INJURY, f"untreated injury: {_quote(injury)}{detail}")
    if get("injury:uncertain"):
        return LabelDecision(None, f"uncertain injury: {_quote(get('injury:uncertain'))}")
    if pending:
        return LabelDecision(None, f"awaiting treatment ({_quote(pending)}) but no injury named")
    if done:
        return LabelDecision(NORMAL, f"treated: {_quote(done)}")
    for key, why in (
        ("resolved:affirmed", "healed"),
        ("injury:negation", "injury negated"),
        ("normal:affirmed", "normal"),
        ("minor:affirmed", "no fracture or dislocation"),
    ):
        if get(key):
            return LabelDecision(NORMAL, f"{why}: {_quote(get(key))}")
    return LabelDecision(None, "no rule matches")


# The default vocabulary: what a clinician writes in a radiograph's name, British and American.
DEFAULT_LABEL_RULES = LabelRules(
    injury=(
        "fracture", "fractures", "fractured", "fracturing", "fx", "fxs", "frac", "fract", "#",
        "broken", "break", "breaks", "avulsion", "avulsed",
        "supracondylar", "monteggia", "terrible triad", "gartland", "salter harris",
        "dislocation", "dislocations", "dislocated", "dislocn", "disloc",
        "luxation", "luxated", "subluxation", "subluxations", "subluxed", "subluxated", "sublux",
    ),
    treatment=(
        # immobilisation
        "cast", "casts", "casted", "plaster", "plastered", "pop", "backslab", "backslabs", "back slab", "slab",
        "splint", "splints", "splinted", "splintage", "sling", "collar and cuff", "cuff and collar", "collar cuff",
        "brace", "braced", "immobilised", "immobilized", "immobilisation", "immobilization",
        # reduction
        "reduction", "reduced", "relocation", "relocated", "mua", "manipulation", "manipulated",
        # fixation and surgery
        "orif", "crif", "fix", "fixation", "fixed", "fixated", "fixator", "external fixator", "ex fix", "exfix",
        "wire", "wires", "wired", "wiring", "k wire", "k wires", "kwire", "kwires", "kirschner", "tbw", "tension band",
        "plate", "plates", "plated", "plating", "screw", "screws", "screwed",
        "pin", "pins", "pinned", "pinning", "nail", "nails", "nailed", "nailing",
        "implant", "implants", "metalwork", "hardware", "arthroplasty", "replacement",
        "op", "operative", "operated", "operation", "surgery", "surgical", "treated",
    ),
    resolved=("healed", "united", "consolidated", "remodelled", "remodeled", "old healed"),
    normal=(
        "normal", "unremarkable", "healthy", "nad", "no abnormality", "no abnormality detected", "no abnormalities",
        "no injury", "no bony injury", "no bone injury", "no acute injury", "no acute bony injury", "unfractured",
    ),
    minor=(
        "contusion", "contusions", "bruise", "bruises", "bruised", "bruising",
        "sprain", "sprains", "sprained", "soft tissue injury",
    ),
    ambiguous=(
        "old", "healing", "nonunion", "non union", "malunion", "mal union", "malunited", "delayed union",
        "ununited", "not healed", "not united", "occult",
    ),
    negation=(
        "no", "not", "without", "non", "negative", "neg", "negative for", "neg for", "free of", "absence of",
        "absent", "ruled out", "excluded", "not seen", "not identified", "not visible", "not demonstrated", "none",
    ),
    uncertain=(
        "?", "query", "queried", "qry", "possible", "possibly", "suspected", "suspect", "suspicious", "suspicion",
        "questionable", "probable", "probably", "likely", "maybe", "equivocal", "rule out", "r o",
        "exclude", "to exclude", "cannot exclude", "can not exclude", "can t exclude", "cant exclude",
        "cannot be excluded", "can not be excluded", "not excluded",
    ),
    pending=(
        "awaiting", "await", "awaits", "awaited", "before", "pre", "prior to", "for", "pending", "planned",
        "needs", "needing", "requires", "requiring", "listed for", "booked for",
    ),
    terminator=("but", "however", "although", "though", "except", "with"),
    ignore=(
        "non displaced", "not displaced", "no displacement", "normal alignment", "normal position",
        "no change", "not changed", "no interval change",
    ),
)  # fmt: skip
