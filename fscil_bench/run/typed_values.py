"""Values converted to a declared type: text from a command line, or a value parsed from YAML.

:func:`convert` turns ``value`` into an instance of the annotation ``tp``: ``int``, ``float``,
``bool``, ``str``, ``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]``, ``dict[K, V]``,
``Literal[...]``, a dataclass (from a mapping of its fields) or a class such as ``Path``; it raises
:class:`Mismatch` when the value is not one. Text is read the usual way: ``null``/``none``/``~``
for None, ``true``/``false``/``yes``/``no``/``on``/``off`` for booleans, ``[12,16]``, ``(12,16)``
or ``12,16`` for sequences, YAML (``{epochs: 4}``) for mappings. A ``float`` is finite; an integer
given for a ``float`` stays an integer (``5``, as presets write whole numbers). :data:`NO_TYPE`
asks for the type of the value being replaced (``current``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, Literal, Union

import yaml

NULL_WORDS = frozenset({"null", "none", "~"})
TRUE_WORDS = frozenset({"true", "yes", "on"})
FALSE_WORDS = frozenset({"false", "no", "off"})
#: The declared type of a key that has none (a plain-dict preset's): typed by the value it replaces.
NO_TYPE = object()


class Mismatch(Exception):
    """A value that does not convert to the type asked for."""


def field_types(cls: type) -> dict[str, Any]:
    """The evaluated annotations of a dataclass (empty when they cannot be evaluated)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be evaluated: fall back to the values' types
        return {}


def convert(value: Any, tp: Any, current: Any = None) -> Any:
    """``value`` (text or a parsed value) as type ``tp``; raises :class:`Mismatch`."""
    if tp is NO_TYPE:
        return _coerce_like(value, current)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (Any, object):
        return _loose(value)
    if origin in (Union, types.UnionType):
        if type(None) in args and _is_null(value):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(value, arg)
            except Mismatch:
                continue
        raise Mismatch
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and not isinstance(choice, str) and _same_text(value, choice)):
                return choice
        raise Mismatch
    if tp is type(None):
        if _is_null(value):
            return None
        raise Mismatch
    if tp is bool:
        return _to_bool(value)
    if tp is int:
        return _to_int(value)
    if tp is float:
        return _to_float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise Mismatch
    if origin in (tuple, list) or tp in (tuple, list):
        return _to_sequence(value, origin or tp, args)
    if origin is dict or tp is dict:
        mapping = _to_mapping(value)
        key_type, value_type = args or (Any, Any)
        return {convert(k, key_type): convert(v, value_type) for k, v in mapping.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _to_dataclass(value, tp)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and issubclass(tp, PurePath):
            return tp(value)
        raise Mismatch
    return _loose(value)  # an annotation this reader does not know: take the value as written


def _coerce_like(value: Any, current: Any) -> Any:
    """A plain-dict value: converted to the type of the value it replaces."""
    if current is None:
        return _loose(value)
    if isinstance(current, bool):
        return _to_bool(value)
    if isinstance(current, int):
        return _to_int(value)
    if isinstance(current, float):
        return _to_float(value)
    if isinstance(current, str):
        if isinstance(value, str):
            return value
        raise Mismatch
    if isinstance(current, (tuple, list)):
        return _to_sequence(value, type(current), ())
    if isinstance(current, Mapping):
        return dict(_to_mapping(value))
    return _loose(value)


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in NULL_WORDS)


def _same_text(text: str, choice: Any) -> bool:
    try:
        return convert(text, type(choice)) == choice
    except Mismatch:
        return False


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise Mismatch


def _to_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""), 10)
        except ValueError:
            pass
    raise Mismatch


def _to_float(value: Any) -> float | int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # as presets write whole numbers (see the module docstring)
    if isinstance(value, str):
        try:
            return _to_int(value)
        except Mismatch:
            try:
                value = float(value)
            except ValueError:
                raise Mismatch from None
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise Mismatch


def _to_sequence(value: Any, kind: type, args: tuple) -> tuple | list:
    if isinstance(value, str):
        text = value.strip()
        if text[:1] == "(" and text[-1:] == ")":
            text = f"[{text[1:-1]}]"
        if not text.startswith("["):
            text = f"[{text}]"
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise Mismatch from None
    if not isinstance(value, (list, tuple)):
        raise Mismatch
    if len(args) == 2 and args[1] is Ellipsis:
        items = [convert(v, args[0]) for v in value]
    elif args and kind is tuple:
        if len(args) != len(value):
            raise Mismatch
        items = [convert(v, a) for v, a in zip(value, args)]
    else:
        items = [convert(v, args[0] if args else Any) for v in value]
    return tuple(items) if kind is tuple else list(items)


def _to_mapping(value: Any) -> Mapping:
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise Mismatch from None
    if not isinstance(value, Mapping):
        raise Mismatch
    return value


def _to_dataclass(value: Any, tp: type) -> Any:
    if isinstance(value, tp):
        return value
    mapping = _to_mapping(value)
    hints = field_types(tp)
    names = {f.name for f in dataclasses.fields(tp) if f.init}
    if not set(map(str, mapping)) <= names:
        raise Mismatch
    try:
        return tp(**{str(k): convert(v, hints.get(str(k), Any)) for k, v in mapping.items()})
    except (TypeError, ValueError):
        raise Mismatch from None


def _loose(value: Any) -> Any:
    """A value of no declared type: text is read as YAML (``8`` is an int, ``abc`` a string)."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError:
        return value


def plain(value: Any) -> Any:
    """A JSON-friendly copy: tuples as lists, dataclasses as dicts, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def type_name(tp: Any, current: Any = None) -> str:
    if tp is type(None):
        return "None"
    if tp is NO_TYPE:
        return type(current).__name__ if current is not None else "any value"
    if typing.get_origin(tp) is None and isinstance(tp, type):
        return tp.__name__
    if typing.get_origin(tp) is types.UnionType or typing.get_origin(tp) is Union:
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    return str(tp).replace("typing.", "")
