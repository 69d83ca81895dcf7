"""Command line: `kinfuse infuse`, `init`, `ask`, `chat`, `eval`, `export`, `verify`,
`sagemaker-job` and `default-model`, one module per command (each registers its parser with
`add(sub)` and runs with `handler(args, argv) -> exit status`). The infuse flags are derived
from the InfuseConfig dataclasses (kinfuse.cli.flags).
"""

from __future__ import annotations

import argparse
import signal
import sys

from ..errors import KinfuseError
from . import ask, evaluate, export, infuse, init, sagemaker
from .flags import add_config_flags, config_overrides, field_comments, load_config

__all__ = ["add_config_flags", "build_parser", "config_overrides", "field_comments", "load_config", "main"]

# Exit codes: 0 success; 1 a run that failed (training error, a write that failed, a FAILED
# verify); 2 bad input (config, paths, a run export refuses); 128 + the signal's number (130
# SIGINT, 143 SIGTERM) for an infusion stopped by a signal after checkpointing, as a shell does.
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kinfuse", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    infuse.add(sub)
    init.add(sub)
    ask.add(sub)
    evaluate.add(sub)
    export.add(sub)
    sagemaker.add(sub)
    d = sub.add_parser("default-model", help="convert the embedded default model if needed and print its path")
    d.set_defaults(handler=_default_model)
    return parser


def _default_model(args: argparse.Namespace, argv: list[str]) -> int:
    from ..models import default_model

    print(default_model())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, argv)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        if args.command == "infuse":
            print("kinfuse: interrupted (SIGINT); if the run wrote a checkpoint, run the same command again with "
                  "--train.resume to continue from it", file=sys.stderr)
        return 128 + signal.SIGINT
    except KinfuseError as e:
        from ..train import TrainingError

        print(f"kinfuse: error: {e}", file=sys.stderr)
        return EXIT_FAILED if isinstance(e, TrainingError) else EXIT_BAD_INPUT
    except OSError as e:  # a write the run needed failed (full disk, permissions): name the file
        where = f" {e.filename}" if e.filename else ""
        print(f"kinfuse: error: could not read or write{where}: {e.strerror or e}; check the folder's permissions "
              "and free space, then run again", file=sys.stderr)
        return EXIT_FAILED


