"""Command line: `kinfuse infuse CONFIG.toml`. Flags map onto InfuseConfig fields."""

from __future__ import annotations

import argparse
import sys

from .errors import KinfuseError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kinfuse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("infuse", help="corpus -> chunks -> QLoRA training -> evaluation -> out dir")
    p.add_argument("config", help="TOML file (see examples/aws-summit-2023/infuse.toml)")
    p.add_argument("--model", help="override [model]: a Hugging Face id, a local folder or 'default'")
    p.add_argument("--out-dir", help="override out_dir")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--device", help="override train.device: auto, cpu, cuda, cuda:N")
    sub.add_parser("default-model", help="convert the embedded default model if needed and print its path")
    args = parser.parse_args(argv)
    try:
        if args.command == "default-model":
            from .models import default_model

            print(default_model())
            return 0
        from .config import InfuseConfig
        from .pipeline import infuse

        config = InfuseConfig.from_toml(args.config)
        if args.model:
            config.model = args.model
        if args.out_dir:
            config.out_dir = args.out_dir
        if args.max_steps:
            config.train.max_steps = args.max_steps
        if args.device:
            config.train.device = args.device
        infuse(config)
        return 0
    except KinfuseError as e:
        print(f"kinfuse: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
