"""The `kinfuse infuse` flags, derived from the InfuseConfig dataclasses (`--model`, `--out_dir`,
`--<section>.<field>`, as litgpt does with jsonargparse): one flag per field, parsed by the
field's type, its help the field's comment in kinfuse/config.py. A new config field is a new
flag without touching this file. A few list fields also have a short name (ALIASES: `--url`,
`--path`, `--probes`, `--retention`), the same flag under a second spelling.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import types
import typing
from typing import Any

from ..config import InfuseConfig
from ..configfile import field_comments
from ..fieldtypes import WORDS

# Short spellings of the flags a first run needs; each is the same flag (same type, same help).
ALIASES = {"corpus.urls": "--url", "corpus.paths": "--path", "eval.probes": "--probes", "eval.retention": "--retention"}


def load_config(args: argparse.Namespace) -> InfuseConfig:
    """The `infuse` command's config: the CONFIG file (or the recipe) with the flags given on top."""
    overrides = config_overrides(args)
    if args.config:
        return InfuseConfig.from_toml(args.config, overrides=overrides)
    return InfuseConfig.from_dict({}, overrides=overrides)


# -- flags derived from the config dataclasses ------------------------------------------------


def add_config_flags(parser: argparse.ArgumentParser, config: Any, prefix: str = "") -> None:
    """One flag per field of the `config` dataclass, nested dataclasses as `--<field>.<name>`, in a
    group each. The flags default to absent, so only those given override the file."""
    group = parser.add_argument_group(prefix.rstrip(".") or "run", inspect.getdoc(type(config)))
    hints = typing.get_type_hints(type(config))
    comments = field_comments(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            add_config_flags(parser, value, f"{prefix}{f.name}.")
            continue
        name = prefix + f.name
        kwargs = _flag_kwargs(hints[f.name], name)
        text = f"{comments.get(f.name, '')} (default: {_show(value)})".strip().replace("%", "%%")
        names = [f"--{name}"] + ([ALIASES[name]] if name in ALIASES else [])
        group.add_argument(*names, dest=name, default=argparse.SUPPRESS, help=text, **kwargs)
        if "_" in name:  # --out-dir too, the usual spelling of a flag, kept out of the help
            group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS,
                               help=argparse.SUPPRESS, **kwargs)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, shaped like the TOML file: {"train": {"seed": 1}, "model": ...}."""
    out: dict[str, Any] = {}
    for name, value in vars(args).items():
        *sections, key = name.split(".")
        if sections or any(f.name == key for f in dataclasses.fields(InfuseConfig)):
            node = out
            for section in sections:
                node = node.setdefault(section, {})
            node[key] = value
    return out


def _flag_kwargs(hint: Any, flag: str) -> dict[str, Any]:
    """argparse settings for a field of type `hint`: int, float, str, bool, list[str], str | list[str],
    or a scalar | None ("none" on the command line)."""
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint in _SCALARS:
        expects, parse = _SCALARS[hint]
        kwargs: dict[str, Any] = {"metavar": hint.__name__.upper()}
        if hint is bool:  # a bare --train.resume means true
            kwargs.update(nargs="?", const=True)
        if optional:
            expects, parse, kwargs["metavar"] = f"{expects} or none", _or_none(parse), kwargs["metavar"] + "|none"
        return {"type": _expecting(parse, expects), **kwargs}
    if hint == list[str] and not optional:  # values add up: --url A B and --url A --url B alike
        return {"type": str, "nargs": "*", "action": "extend", "metavar": "STR"}
    if hint == str | list[str] and not optional:  # one value: the string (as in TOML); several: a list
        return {"type": str, "nargs": "+", "action": _OneOrList, "metavar": "STR"}
    raise TypeError(f"--{flag}: no command-line form for a field of type {hint}; add one in kinfuse/cli/flags.py")


def _expecting(parse: Any, expects: str) -> Any:
    """`parse`, with errors that say what the flag expects (argparse adds the flag's name)."""
    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects {expects}, got {value!r}") from None

    return convert


def _or_none(parse: Any) -> Any:
    return lambda value: None if value.lower() in ("none", "null") else parse(value)


def _bool(value: str) -> bool:
    if value.lower() in ("true", "yes", "1", "on"):
        return True
    if value.lower() in ("false", "no", "0", "off"):
        return False
    raise ValueError(value)


# what each type expects is worded once, in kinfuse.fieldtypes, for flags and config files alike
_SCALARS = {kind: (WORDS[kind], parse) for kind, parse in ((int, int), (float, float), (str, str), (bool, _bool))}


class _OneOrList(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values[0] if len(values) == 1 else values)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return " ".join(map(str, value)) or "empty"
    return str(value)

