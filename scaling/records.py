"""Typed records from JSON and YAML: one reader for every file the project writes as a dataclass
(run specs, status.json, result.json).

`from_dict(cls, d, where)` builds a (nested) dataclass from plain data, checking every field
against its annotation, and raises `RecordError` naming the field and what was wrong, so a damaged
or hand-edited file becomes one line, never a TypeError deep inside the code that reads it.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")


class RecordError(ValueError):
    """A record does not have the shape its dataclass declares; the message names the field."""


_HINTS: dict[Any, dict[str, Any]] = {}


def _hints(cls: Any) -> dict[str, Any]:
    """Resolving annotations is slow; `collect` reads thousands of records."""
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def from_dict(
    cls: type[T], d: Any, where: str, *, ignore_unknown: bool = False, text_numbers: bool = False
) -> T:
    """`cls` from a mapping: fields missing without a default, unknown fields (unless
    `ignore_unknown`) and values of the wrong type raise RecordError. With `text_numbers`, numbers
    written as text ("1e9", which YAML 1.1 reads as a string) are read as numbers."""
    if not isinstance(d, dict):
        raise RecordError(f"{where}: expected a mapping, got {_kind(d)}")
    hints = _hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - names
    if unknown and not ignore_unknown:
        raise RecordError(
            f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))} (known: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in d:
            if f.default is MISSING and f.default_factory is MISSING:
                raise RecordError(f"{where}: missing field {f.name!r}")
            continue
        kwargs[f.name] = _value(hints[f.name], d[f.name], f"{where}.{f.name}", text_numbers)
    return cls(**kwargs)


def _value(hint: Any, value: Any, where: str, text_numbers: bool = False) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if text_numbers and hint in (int, float) and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RecordError(f"{where}: expected a number, got {_kind(value)}") from None
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _value(option, value, where, text_numbers)
            except RecordError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else RecordError(f"{where}: unexpected {_kind(value)}")
    if is_dataclass(hint):
        return from_dict(hint, value, where, text_numbers=text_numbers)  # type: ignore[arg-type]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError(f"{where}: expected a number, got {_kind(value)}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and math.isfinite(value) and value == int(value):
                return int(value)
            raise RecordError(f"{where}: expected a whole number, got {_kind(value)}")
        return value
    if hint in (str, bool):
        if type(value) is not hint:
            raise RecordError(f"{where}: expected {hint.__name__}, got {_kind(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecordError(f"{where}: expected a list, got {_kind(value)}")
        item = args[0] if args else Any
        items = [_value(item, v, f"{where}[{i}]", text_numbers) for i, v in enumerate(value)]
        if origin is tuple and len(args) > 1 and args[1] is not Ellipsis and len(items) != len(args):
            raise RecordError(f"{where}: expected {len(args)} items, got {len(items)}")
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected a mapping, got {_kind(value)}")
        key_hint, item = args if args else (Any, Any)
        return {
            _value(key_hint, k, where): _value(item, v, f"{where}.{k}", text_numbers)
            for k, v in value.items()
        }
    raise TypeError(f"{where}: unsupported annotation {hint!r}")  # a programming error, not bad data


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
