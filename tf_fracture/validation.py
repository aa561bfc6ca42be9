"""Argument checks shared by every config and layer, raising `ValueError` in one style.

Each check returns the value it accepted, so that a constructor can write
``self.size = check_int("size", size, minimum=1)``. Messages follow keras-hub's form,
"Expected `name` to be ..., but got `name=...`.", so that the user sees which argument
was wrong, what it should be and what they passed. Booleans are never accepted as
numbers (``True`` is an ``int`` in Python, but never what the user meant).

Plain Python and NumPy only: the TF-free parts of the package (data core, metrics) use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

__all__ = ["check_choice", "check_int", "check_number", "check_rate"]


def _is_int(value) -> bool:
    # numbers.Integral covers int and np.integer; bool is an Integral too, and is refused.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int | None = 1, maximum: int | None = None, allow_none: bool = False):
    """``value`` as a Python ``int`` in ``[minimum, maximum]`` (either bound may be None).

    Args:
        name: the argument's name, as the user wrote it.
        value: the value to check; a NumPy integer is accepted and returned as ``int``.
        minimum: smallest allowed value (1 by default: a positive integer); None for no bound.
        maximum: largest allowed value; None for no bound.
        allow_none: also accept ``None`` (returned unchanged).

    Example:
        >>> check_int("batch_size", 32)
        32
        >>> check_int("seed", -1, minimum=0)
        Traceback (most recent call last):
        ...
        ValueError: Expected `seed` to be an integer >= 0, but got `seed=-1`.
    """
    if value is None and allow_none:
        return None
    if not _is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        expected = _int_phrase(minimum, maximum, allow_none)
        raise ValueError(f"Expected `{name}` to be {expected}, but got `{name}={value!r}`.")
    return int(value)


def _int_phrase(minimum, maximum, allow_none) -> str:
    if minimum == 1 and maximum is None:
        phrase = "a positive integer"
    elif minimum is not None and maximum is not None:
        phrase = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        phrase = f"an integer >= {minimum}"
    elif maximum is not None:
        phrase = f"an integer <= {maximum}"
    else:
        phrase = "an integer"
    return phrase + (" or None" if allow_none else "")


def check_number(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
):
    """``value`` as a finite Python ``float`` between ``low`` and ``high`` (None: unbounded).

    Example:
        >>> check_number("epsilon", 1e-5, 0.0, low_inclusive=False)
        1e-05
        >>> check_number("init_value", float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: Expected `init_value` to be a finite number, but got `init_value=nan`.
    """
    ok = _is_real(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        raise ValueError(
            f"Expected `{name}` to be {_number_phrase(low, high, low_inclusive, high_inclusive)}, "
            f"but got `{name}={value!r}`."
        )
    return float(value)


def _number_phrase(low, high, low_inclusive, high_inclusive) -> str:
    if low is not None and high is not None:
        return f"a number in {'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}"
    if low is not None:
        return f"a finite number {'>=' if low_inclusive else '>'} {low:g}"
    if high is not None:
        return f"a finite number {'<=' if high_inclusive else '<'} {high:g}"
    return "a finite number"


def check_rate(name: str, value, low: float = 0.0, high: float = 1.0, *, high_inclusive: bool = False):
    """A rate or probability: a number in ``[low, high)`` (``[0, 1)`` by default, as a dropout rate).

    Pass ``high_inclusive=True`` for a probability that may be 1.

    Example:
        >>> check_rate("dropout", 0.2)
        0.2
        >>> check_rate("dropout", 1.0)
        Traceback (most recent call last):
        ...
        ValueError: Expected `dropout` to be a number in [0, 1), but got `dropout=1.0`.
    """
    return check_number(name, value, low, high, high_inclusive=high_inclusive)


def check_choice(name: str, value, choices: Iterable):
    """``value`` if it is one of ``choices``; otherwise the error lists them all.

    Example:
        >>> check_choice("stem", "grey", ("grey", "rgb"))
        'grey'
        >>> check_choice("stem", "gray", ("grey", "rgb"))
        Traceback (most recent call last):
        ...
        ValueError: Expected `stem` to be one of 'grey', 'rgb', but got `stem='gray'`.
    """
    choices = tuple(choices)
    # `in` alone would accept 1 for True (and True for 1): a bool only matches a bool.
    if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Expected `{name}` to be one of {listed}, but got `{name}={value!r}`.")
    return value
