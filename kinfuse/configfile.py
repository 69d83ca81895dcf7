"""The infusion config as a commented TOML file: every field with its comment, read from the
config dataclasses' source (`field_comments`), so the file, `kinfuse init` and the flags' help
(kinfuse.cli) never go stale. `kinfuse init` writes it; `kinfuse sagemaker-job` writes the
config it stages with it."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import tokenize
from io import StringIO
from typing import Any

from .config import InfuseConfig

WIDTH = 100


def config_toml(config: InfuseConfig | None = None) -> str:
    """`config` (default: the recipe) as a TOML file: every field with its comment; a field whose
    value is unset (None) is written commented out, since TOML has no null."""
    config = config or InfuseConfig()
    lines = [f"# kinfuse infuse config: {inspect.getdoc(InfuseConfig).splitlines()[0]}",
             "# Every field is shown with its default; delete the ones you do not change.",
             "# Relative paths are read from this file's folder. Run: kinfuse infuse THIS_FILE", ""]
    sections = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            sections.append((f.name, value))
        else:
            lines += field_lines(type(config), f.name, value)
    for name, section in sections:
        lines += ["", *comment(inspect.getdoc(type(section)) or ""), f"[{name}]"]
        for f in dataclasses.fields(section):
            lines += field_lines(type(section), f.name, getattr(section, f.name))
    return "\n".join(lines) + "\n"


def field_lines(cls: type, name: str, value: Any) -> list[str]:
    text = field_comments(cls).get(name, "")
    if value is None:
        return [*comment(text), f"# {name} =   (unset)"]
    return [*comment(text), f"{name} = {toml_value(value)}"]


def comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, WIDTH - 2)] if text else []


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's string escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


@functools.cache  # the source is read and parsed once per class (kinfuse init asks per field)
def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in the source of `cls`: the one on its line, then the comment lines just
    above it (which may describe a few fields). The comments stay the one place a field is described."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source shipped: flags without help text
        return {}
    lines = source.splitlines()
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(StringIO(source).readline) if tok.type == tokenize.COMMENT}
    out = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above, n = [], node.lineno - 1
            while n in comments and lines[n - 1].lstrip().startswith("#"):
                above.insert(0, comments[n])
                n -= 1
            own = [comments[node.end_lineno]] if node.end_lineno in comments else []
            out[node.target.id] = ". ".join(filter(None, [" ".join(own), " ".join(above)]))
    return out
