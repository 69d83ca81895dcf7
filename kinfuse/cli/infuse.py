"""`kinfuse infuse [CONFIG.toml] [--url URL ... | --path P ...] [--probes F] [--<section>.<field> VALUE ...]`:
the whole recipe, from a TOML file or from the recipe's defaults and the flags alone."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from typing import Any

from ..config import InfuseConfig
from .flags import add_config_flags, load_config


def add(sub: Any) -> None:
    p = sub.add_parser("infuse", help="corpus -> chunks -> QLoRA training -> evaluation -> out dir",
                       usage="kinfuse infuse [CONFIG.toml] [--url URL ... | --path P ...] [--probes F.jsonl] "
                             "[--model STR] [--out_dir STR] [--<section>.<field> VALUE ...]",
                       description="Flags override the CONFIG file's values, or the recipe's defaults "
                                   "(shown) when there is no file: `kinfuse infuse --url URL` is a whole run.",
                       allow_abbrev=False)
    p.add_argument("config", nargs="?", help="TOML file (see examples/aws-summit-2023/infuse.toml; "
                                             "`kinfuse init` writes one with every field)")
    add_config_flags(p, InfuseConfig())
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from ..pipeline import infuse

    result = infuse(load_config(args))
    if result.train.interrupted:
        return interrupted(argv, result.train.stop_signal, result.train.checkpoint)
    return 0


def interrupted(argv: list[str], name: str | None, checkpoint: str | None) -> int:
    """Say how to continue an infusion a signal stopped; the exit status a shell gives that signal."""
    sig = signal.Signals[name] if name in signal.Signals.__members__ else signal.SIGTERM
    again = argv if any(a.startswith(("--train.resume", "--train.resume_from")) for a in argv) else [*argv, "--train.resume"]
    n = os.environ.get("LOCAL_WORLD_SIZE")  # under torchrun: rank 0 alone says it, with the torchrun command
    if os.environ.get("RANK", "0") != "0":
        return 128 + sig.value
    print(f"kinfuse: interrupted by {sig.name}; checkpoint {checkpoint}\n"
          f"to continue: {f'torchrun --nproc-per-node {n} -m kinfuse.cli' if n else 'kinfuse'} {shlex.join(again)}\n"
          "(or add `resume = true` under [train] in the config file)", file=sys.stderr)
    return 128 + sig.value
