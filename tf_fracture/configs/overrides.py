"""``--set section.field=value`` overrides of an :class:`ExperimentConfig`, parsed by the field's type.

Values are parsed by the type the field declares: ``int``, ``float`` (``1e-4``), ``bool``
(``true``/``false``/``1``/``0``/``yes``/``no``), ``str``, ``None``/``none``/``null`` for optional fields,
and tuples as comma-separated items (``model.fusion_hidden_units=512,128``; an empty value is ``()``).
An unknown key raises ``ValueError`` listing every valid key; a value that does not parse names the key
and the type it expects; a value out of range fails the config's own checks, named by its key.

Example:
    >>> from tf_fracture.configs import ExperimentConfig
    >>> apply_overrides(ExperimentConfig(), ["train.epochs=3", "model.variant=small"]).train.epochs
    3
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence

from tf_fracture.configs.experiment import SECTIONS, ExperimentConfig

__all__ = ["apply_overrides", "parse_value", "valid_keys"]

_NONE = ("none", "null")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def valid_keys() -> tuple[str, ...]:
    """Every key an override may name: ``"name"`` and ``"<section>.<field>"``."""
    return ("name", *(f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)))


def apply_overrides(config: ExperimentConfig, assignments: Sequence[str]) -> ExperimentConfig:
    """``config`` with each ``"key=value"`` of ``assignments`` applied, in order (a later one wins).

    Raises:
        ValueError: an assignment without ``=``, an unknown key (the message lists the valid keys), or a
            value that does not parse as the field's type or fails the field's check (the message names the key).
    """
    if isinstance(assignments, str):
        raise ValueError(f"Expected a list of 'key=value' overrides, but got the string {assignments!r}.")
    changes: dict[str, dict[str, object]] = {}
    name = config.name
    for assignment in assignments:
        key, sep, text = str(assignment).partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"Expected an override as 'key=value' (e.g. train.epochs=3), but got {assignment!r}.")
        if key not in valid_keys():
            raise ValueError(f"Unknown config key {key!r} in {assignment!r}. Valid keys: {', '.join(valid_keys())}.")
        if key == "name":
            name = text.strip()
            continue
        section, field_name = key.split(".", 1)
        hint = typing.get_type_hints(SECTIONS[section])[field_name]
        changes.setdefault(section, {})[field_name] = parse_value(key, text, hint)
    sections = {}
    for section, values in changes.items():
        try:
            sections[section] = dataclasses.replace(getattr(config, section), **values)
        except ValueError as error:
            raise ValueError(f"Invalid override of `{section}`: {error}") from None
    try:
        return dataclasses.replace(config, name=name, **sections)
    except ValueError as error:
        raise ValueError(f"Invalid overrides {list(assignments)}: {error}") from None


def parse_value(key: str, text: str, hint):
    """``text`` parsed as type ``hint`` (``int``, ``float``, ``bool``, ``str``, ``X | None``, ``tuple[X, ...]``).

    Raises:
        ValueError: naming ``key`` and the type it expects, e.g. "Expected `train.epochs` to be an integer".
    """
    text = text.strip()
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if text.lower() in _NONE:
            return None
        (rest,) = (a for a in args if a is not type(None))
        return _parse(key, text, rest, _describe(rest) + " or None")
    if typing.get_origin(hint) is tuple:
        item = args[0]
        expected = f"comma-separated items, each {_describe(item)}"
        return tuple(_parse(key, part.strip(), item, expected) for part in text.split(",")) if text else ()
    return _parse(key, text, hint, _describe(hint))


def _parse(key: str, text: str, hint, expected: str):
    try:
        if hint is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(text)
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if hint is str:
            return text
    except ValueError:
        raise ValueError(f"Expected `{key}` to be {expected}, but got `{key}={text!r}`.") from None
    raise TypeError(f"Cannot parse the override of {key!r}: type {hint!r} is not supported.")


def _describe(hint) -> str:
    return {bool: "a boolean (true/false/1/0)", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )
