"""A dataclass field's value checked against its annotation: the one statement of its type.

kinfuse.config's dataclasses annotate each field (int, float, str, bool, list[str],
str | list[str], or one of those | None). The CLI parses a flag by that annotation; values from
a TOML file, a dict or Python code are checked against it here, before any range rule compares
them, with a message that names the field, the value and how to write it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from typing import Any


def type_problems(config: Any) -> tuple[list[str], dict[str, Any]]:
    """The problems of `config`'s own fields against their annotations, and a stand-in (the
    field's default) for each wrong one. Nested dataclasses (sections) are left to their owner."""
    p, wrong = [], {}
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), field_types(type(config))[f.name]
        if dataclasses.is_dataclass(hint):
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        problem = type_problem(f.name, hint, value, default)
        if problem:
            p.append(problem)
            wrong[f.name] = default
    return p, wrong


WORDS = {int: "an integer", float: "a number", str: "text", bool: "true or false"}


def type_problem(name: str, hint: Any, value: Any, default: Any = None) -> str | None:
    """What is wrong with `value` as a `hint` (int, float, str, bool, list[str], str | list[str],
    or one of those | None), with the fix (the field's `default` as an example); None when it fits."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    optional = type(None) in args
    kinds = [a for a in args if a is not type(None)]
    if value is None and optional:
        return None
    if any(fits(k, value) for k in kinds):
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name}={value!r}: must be a finite number, not inf or nan (TOML reads 1e400 as inf)"
        return None
    bad = f"{name}={value!r}: must be "
    if list[str] in kinds:
        if isinstance(value, str):
            return bad + f"a list, even of one: write {name} = {json.dumps([value])}"
        alone = "text or " if str in kinds else ""
        return bad + f"{alone}a list of text, e.g. {name} = [\"...\"]"
    (kind,) = kinds
    need = WORDS.get(kind, getattr(kind, "__name__", str(kind))) + (" (or leave it out)" if optional else "")
    example = f"; e.g. {name} = {json.dumps(default)}" if default is not None else ""
    if isinstance(value, str) and kind in (int, float):
        if _parses(kind, value):
            return bad + f"{need}, written without quotes: {name} = {value}"
        return bad + f"{need}, written without quotes{example}"
    if isinstance(value, bool):
        return bad + f"{need}, not true/false"
    if isinstance(value, float) and kind is int and value.is_integer():
        return bad + f"{need}: write {name} = {int(value)}"
    return bad + need + example


def fits(kind: Any, value: Any) -> bool:
    # a pathlib.Path passes as text: Python callers give paths that way (TOML and flags give str)
    if kind is str:
        return isinstance(value, (str, os.PathLike))
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == list[str]:
        return isinstance(value, list) and all(fits(str, v) for v in value)
    return isinstance(value, kind)


def _parses(kind: type, text: str) -> bool:
    try:
        return math.isfinite(kind(text))
    except ValueError:
        return False


_TYPES: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """The annotations of `cls`'s fields, as types (the module uses postponed annotations)."""
    if cls not in _TYPES:
        _TYPES[cls] = typing.get_type_hints(cls)
    return _TYPES[cls]
