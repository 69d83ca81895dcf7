"""Command line: `kinfuse infuse CONFIG.toml` (flags map onto InfuseConfig fields),
`kinfuse export RUN --format tgi-adapter|merged|sagemaker --out DIR` and `kinfuse verify DIR`."""

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
    v = sub.add_parser("verify", help="load an export with plain transformers and compare it with the trained model")
    v.add_argument("dir", help="an export folder")
    v.add_argument("--against", metavar="RUN_OR_ADAPTER", help="the run to compare with (default: the one exported)")
    v.add_argument("--base", help="the base model, when the one the run names has moved")
    v.add_argument("--files-only", action="store_true", help="check only TGI's file rules; load no model")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            from .export import export

            export(args.source, format=args.format, out=args.out, overwrite=args.overwrite, dtype=args.dtype,
                   merge_into=args.merge_into, tar=args.tar, upload=args.upload, base=args.base,
                   max_shard_size=args.max_shard_size, echo=lambda m: print(m, file=sys.stderr))
            return 0
        if args.command == "verify":
            import json

            from .export import verify

            report = verify(args.dir, args.against, base=args.base, check=False, compare=not args.files_only,
                            echo=lambda m: print(m, file=sys.stderr))
            print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
            return 0 if report.ok else 1
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
