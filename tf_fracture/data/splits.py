"""Deterministic, patient-grouped, class-stratified splits.

Radiograph sets hold several images (or studies) per patient; a split that puts one patient's
images on both sides of the train/test line leaks the patient's anatomy, implants and scanner into
the test score. `grouped_stratified_split` keeps every group (patient) whole and keeps each split's
class balance close to the overall balance. It depends only on its arguments: not on the order of
the input, not on Python's hash randomisation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence

from tf_fracture.validation import check_number

# Fractions are user input (config values, CLI flags): allow for their float rounding.
_FRACTION_TOLERANCE = 1e-6


def _stable_hash(seed: int, group_id: str) -> str:
    return hashlib.sha256(f"{seed}\x00{group_id}".encode()).hexdigest()


def _check_fractions(fractions: Mapping[str, float]) -> None:
    if not fractions:
        raise ValueError("Expected `fractions` to name at least one split, e.g. {'train': 0.8, 'test': 0.2}.")
    for name, value in fractions.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"Expected split names to be non-empty strings, but got {name!r}.")
        check_number(f"fractions[{name!r}]", value, 0.0)
    total = sum(fractions.values())
    if abs(total - 1.0) > _FRACTION_TOLERANCE:
        raise ValueError(f"Expected `fractions` to sum to 1, but they sum to {total:.6g}: {dict(fractions)}.")


def grouped_stratified_split(
    keys: Sequence[str],
    labels: Sequence[Hashable],
    groups: Sequence[str | None],
    fractions: Mapping[str, float],
    seed: int = 0,
) -> dict[str, str]:
    """Assigns every key to a split, keeping groups whole and class balance even.

    Groups (patients) are placed one at a time, largest first, ties in a seeded pseudo-random
    order (SHA-256 of the seed and the group id). Each group goes to the split where it lowers the
    chi-square distance `sum((assigned - target)**2 / target)` between the split's per-class counts
    and size and their targets (`fraction * total`) the most: the split that needs its classes
    most, and never a small split it would overfill. Large groups are placed while there is room,
    single images at the end even out what is left, so split sizes and class rates come out close
    to the targets (on 1,000 images in patients of 1-4: sizes within a few images, positive rates
    within about a point).

    Args:
        keys: unique example ids (for example file paths).
        labels: one class label per key (any hashable: int or str).
        groups: one group id per key (for example a patient id). `None` or `""` make the key a
            group of its own.
        fractions: split name -> fraction of the examples, e.g. `{"train": 0.8, "validation": 0.1,
            "test": 0.1}`. Must sum to 1; a split with fraction 0 stays empty.
        seed: changes which groups go where, with the same guarantees.

    Returns:
        A dict from every key to its split name.

    Raises:
        ValueError: lengths differ, keys repeat, or fractions are negative or do not sum to 1.

    Example:
        >>> split = grouped_stratified_split(
        ...     keys=["a.png", "b.png", "c.png", "d.png"],
        ...     labels=[1, 0, 1, 0],
        ...     groups=["p1", "p1", None, "p2"],
        ...     fractions={"train": 0.5, "test": 0.5},
        ... )
        >>> split["a.png"] == split["b.png"]
        True
    """
    _check_fractions(fractions)
    if not len(keys) == len(labels) == len(groups):
        raise ValueError(
            f"Expected `keys`, `labels` and `groups` of the same length, but got {len(keys)}, {len(labels)} "
            f"and {len(groups)}."
        )
    seen: set[str] = set()
    repeated: list[str] = []
    for key in keys:
        if key in seen:
            repeated.append(key)
        seen.add(key)
    if repeated:
        shown = ", ".join(repr(k) for k in sorted(set(map(str, repeated)))[:5])
        raise ValueError(f"Expected unique `keys`, but {len(set(repeated))} repeat: {shown}.")
    if not keys:
        return {}

    # Group ids as strings with a prefix, so that a singleton key can never collide with a named group.
    members: dict[str, list[int]] = {}
    for index, (key, group) in enumerate(zip(keys, groups, strict=True)):
        group_id = f"key:{key}" if group is None or group == "" else f"group:{group}"
        members.setdefault(group_id, []).append(index)

    classes = sorted(set(labels), key=repr)
    class_index = {label: i for i, label in enumerate(classes)}
    class_totals = [0] * len(classes)
    for label in labels:
        class_totals[class_index[label]] += 1

    # Ties between splits go to the larger fraction, then the name: independent of the dict's order.
    split_names = sorted((name for name, f in fractions.items() if f > 0), key=lambda n: (-fractions[n], n))
    # One column per class, and a last one for the split's size: with many small classes (body part x
    # label, say) the per-class terms alone would let a small split end up empty or overfull.
    totals = [*class_totals, len(keys)]
    targets = {name: [fractions[name] * total for total in totals] for name in split_names}
    assigned = {name: [0] * len(totals) for name in split_names}

    order = sorted(members, key=lambda g: (-len(members[g]), _stable_hash(seed, g), g))
    result: dict[str, str] = {}
    for group_id in order:
        counts = [0] * len(totals)
        for index in members[group_id]:
            counts[class_index[labels[index]]] += 1
        counts[-1] = len(members[group_id])

        def score(name: str, counts=counts) -> float:
            # Decrease of the chi-square distance if the group goes to `name`:
            # sum_c ((a + n - t)^2 - (a - t)^2) / t = sum_c n (n - 2 (t - a)) / t, negated.
            target, filled = targets[name], assigned[name]
            return sum(n * (2 * (target[c] - filled[c]) - n) / target[c] for c, n in enumerate(counts) if n)

        best = max(split_names, key=lambda name: (score(name), -split_names.index(name)))
        for c, n in enumerate(counts):
            assigned[best][c] += n
        for index in members[group_id]:
            result[keys[index]] = best
    return result


def split_report(split: Mapping[str, str], labels: Mapping[str, Hashable]) -> dict[str, dict[Hashable, int]]:
    """Counts per split and class, e.g. `{"train": {0: 80, 1: 20}, ...}`, for logs and READMEs."""
    report: dict[str, dict[Hashable, int]] = {}
    for key, name in split.items():
        per_class = report.setdefault(name, {})
        per_class[labels[key]] = per_class.get(labels[key], 0) + 1
    return report
