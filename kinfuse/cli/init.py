"""`kinfuse init [FILE] [--url URL ...] [--<section>.<field> VALUE ...]`: a commented TOML config
with every field and its default, written from the config dataclasses and their comments (the
same ones `kinfuse infuse --help` shows), so it never goes stale. Loaded back, it is the recipe
(`InfuseConfig()`) with the flags given."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..config import InfuseConfig
from ..configfile import config_toml
from ..errors import ConfigError, KinfuseError
from .flags import add_config_flags, config_overrides

PATH_FIELDS = {("corpus", "paths"), ("data", "qa_files"), ("data", "replay_paths"), ("eval", "probes"),
               ("eval", "retention")}


def add(sub: Any) -> None:
    p = sub.add_parser("init", help="write a commented TOML config with every field and its default",
                       usage="kinfuse init [FILE] [--url URL ...] [--path P ...] [--<section>.<field> VALUE ...]",
                       description="Writes FILE (default infuse.toml): the recipe's defaults, with the flags "
                                   "given (the same flags as `kinfuse infuse`). Then: kinfuse infuse FILE",
                       allow_abbrev=False)
    p.add_argument("file", nargs="?", default="infuse.toml", help="the TOML file to write (default: infuse.toml)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    add_config_flags(p, InfuseConfig())
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    path = Path(args.file)
    if path.exists() and not args.force:
        raise KinfuseError(f"{path} exists: pass --force to replace it, or name another file")
    config = with_flags(InfuseConfig(), config_overrides(args), path.parent)
    problems = _problems(config)
    if problems:
        raise ConfigError(problems, "infusion config")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_toml(config), encoding="utf-8")
    then = "" if config.corpus.urls or config.corpus.paths else " (add urls or paths under [corpus] first)"
    print(f"wrote {path}; edit it, then: kinfuse infuse {path}{then}")
    return 0


def with_flags(config: InfuseConfig, overrides: dict[str, Any], folder: Path) -> InfuseConfig:
    """`config` with the flags' values set; paths given on the command line are written relative
    to the file's folder, since the file's relative paths are read from there."""
    for key, value in overrides.items():
        if isinstance(value, dict):
            for field, v in value.items():
                if (key, field) in PATH_FIELDS and isinstance(v, list):
                    v = [relative(x, folder) for x in v]
                setattr(getattr(config, key), field, v)
        else:
            setattr(config, key, value)
    return config


def relative(path: str, folder: Path) -> str:
    """`path` as the file in `folder` must name it: relative when it lies below the folder."""
    rel = os.path.relpath(Path(path).absolute(), folder.absolute())
    return str(Path(path).absolute()) if rel.startswith("..") else rel


def _problems(config: InfuseConfig) -> list[str]:
    """What is wrong with the flags given: everything but an empty corpus, which the file leaves
    for its reader to fill in."""
    try:
        config.validate()
    except ConfigError as e:
        return [p for p in e.problems if not p.startswith("corpus.urls / paths")]
    return []
