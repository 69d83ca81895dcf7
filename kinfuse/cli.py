"""Command line: `kinfuse infuse [CONFIG.toml] [--train.lora_r 8 ...]`,
`kinfuse export RUN --format tgi-adapter|merged|sagemaker --out DIR` and `kinfuse verify DIR`.

The infuse flags are derived from the InfuseConfig dataclasses (`--model`, `--out_dir`,
`--<section>.<field>`, as litgpt does with jsonargparse): one flag per field, parsed by the
field's type, its help the field's comment in kinfuse/config.py. A new config field is a new
flag without touching this file.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import shlex
import signal
import sys
import textwrap
import tokenize
import types
import typing
from io import StringIO
from typing import Any

from .config import InfuseConfig
from .errors import KinfuseError
from .fieldtypes import WORDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kinfuse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("infuse", help="corpus -> chunks -> QLoRA training -> evaluation -> out dir",
                       usage="kinfuse infuse [CONFIG.toml] [--model STR] [--out_dir STR] "
                             "[--<section>.<field> VALUE ...]",
                       description="Flags override the CONFIG file's values, or the recipe's defaults "
                                   "(shown) when there is no file.", allow_abbrev=False)
    p.add_argument("config", nargs="?", help="TOML file (see examples/aws-summit-2023/infuse.toml)")
    add_config_flags(p, InfuseConfig())
    sub.add_parser("default-model", help="convert the embedded default model if needed and print its path")
    e = sub.add_parser("export", help="a run's adapter as a TGI adapter, a merged 16-bit model or a SageMaker package")
    e.add_argument("source", metavar="RUN_OR_ADAPTER", help="a run dir (run.json + adapter/) or an adapter dir")
    e.add_argument("--format", required=True, choices=["tgi-adapter", "merged", "sagemaker"])
    e.add_argument("--out", required=True, help="the folder to create")
    e.add_argument("--overwrite", action="store_true", help="replace --out if it exists (only once the new one is done)")
    e.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"], help="merged weights' type")
    e.add_argument("--merge-into", choices=["dequantized", "original"],
                   help="merge into the dequantized NF4 weights the adapter was trained against (default for NF4 "
                        "runs) or the original 16-bit weights")
    e.add_argument("--tar", action=argparse.BooleanOptionalAction, default=True,
                   help="sagemaker: pack model.tar.gz (default) or, with --no-tar, an uncompressed S3-prefix folder")
    e.add_argument("--upload", metavar="S3_URI", help="upload to s3://bucket/prefix with boto3 (AWS_ENDPOINT_URL etc.)")
    e.add_argument("--base", help="the base model, when the one the run names has moved")
    e.add_argument("--max-shard-size", default="2GB", help="largest merged weight file (default 2GB)")
    e.add_argument("--allow-incomplete", action="store_true",
                   help="export a run whose training was interrupted or failed (its adapter is partial)")
    v = sub.add_parser("verify", help="load an export with plain transformers and compare it with the trained model")
    v.add_argument("dir", help="an export folder")
    v.add_argument("--against", metavar="RUN_OR_ADAPTER", help="the run to compare with (default: the one exported)")
    v.add_argument("--base", help="the base model, when the one the run names has moved")
    v.add_argument("--files-only", action="store_true", help="check only TGI's file rules; load no model")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument("--allow-incomplete", action="store_true",
                   help="compare with a run whose training was interrupted or failed")
    return parser


# Exit codes: 0 success; 1 a run that failed (training error, a write that failed, a FAILED
# verify); 2 bad input (config, paths, a run export refuses); 128 + the signal's number (130
# SIGINT, 143 SIGTERM) for an infusion stopped by a signal after checkpointing, as a shell does.
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "export":
            from .export import export

            export(args.source, format=args.format, out=args.out, overwrite=args.overwrite, dtype=args.dtype,
                   merge_into=args.merge_into, tar=args.tar, upload=args.upload, base=args.base,
                   max_shard_size=args.max_shard_size, allow_incomplete=args.allow_incomplete,
                   echo=lambda m: print(m, file=sys.stderr))
            return 0
        if args.command == "verify":
            import json

            from .export import verify

            report = verify(args.dir, args.against, base=args.base, check=False, compare=not args.files_only,
                            allow_incomplete=args.allow_incomplete, echo=lambda m: print(m, file=sys.stderr))
            print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
            return 0 if report.ok else EXIT_FAILED
        if args.command == "default-model":
            from .models import default_model

            print(default_model())
            return 0
        from .pipeline import infuse

        result = infuse(load_config(args))
        if result.train.interrupted:
            return _interrupted(argv, result.train.stop_signal, result.train.checkpoint)
        return 0
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        print("kinfuse: interrupted (SIGINT); if the run wrote a checkpoint, run the same command again with "
              "--train.resume to continue from it", file=sys.stderr)
        return 128 + signal.SIGINT
    except KinfuseError as e:
        from .train import TrainingError

        print(f"kinfuse: error: {e}", file=sys.stderr)
        return EXIT_FAILED if isinstance(e, TrainingError) else EXIT_BAD_INPUT
    except OSError as e:  # a write the run needed failed (full disk, permissions): name the file
        where = f" {e.filename}" if e.filename else ""
        print(f"kinfuse: error: could not read or write{where}: {e.strerror or e}; check the folder's permissions "
              "and free space, then run again", file=sys.stderr)
        return EXIT_FAILED


def _interrupted(argv: list[str], name: str | None, checkpoint: str | None) -> int:
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
        group.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, help=text, **kwargs)
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
    if hint == list[str] and not optional:
        return {"type": str, "nargs": "*", "metavar": "STR"}
    if hint == str | list[str] and not optional:  # one value: the string (as in TOML); several: a list
        return {"type": str, "nargs": "+", "action": _OneOrList, "metavar": "STR"}
    raise TypeError(f"--{flag}: no command-line form for a field of type {hint}; add one in kinfuse/cli.py")


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


if __name__ == "__main__":
    sys.exit(main())
