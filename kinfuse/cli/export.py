"""`kinfuse export RUN --format tgi-adapter|merged|sagemaker --out DIR` and `kinfuse verify DIR`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_FAILED = 1


def add(sub: Any) -> None:
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
    e.set_defaults(handler=run_export)
    v = sub.add_parser("verify", help="load an export with plain transformers and compare it with the trained model")
    v.add_argument("dir", help="an export folder")
    v.add_argument("--against", metavar="RUN_OR_ADAPTER", help="the run to compare with (default: the one exported)")
    v.add_argument("--base", help="the base model, when the one the run names has moved")
    v.add_argument("--files-only", action="store_true", help="check only TGI's file rules; load no model")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument("--allow-incomplete", action="store_true",
                   help="compare with a run whose training was interrupted or failed")
    v.set_defaults(handler=run_verify)


def run_export(args: argparse.Namespace, argv: list[str]) -> int:
    from ..export import export

    export(args.source, format=args.format, out=args.out, overwrite=args.overwrite, dtype=args.dtype,
           merge_into=args.merge_into, tar=args.tar, upload=args.upload, base=args.base,
           max_shard_size=args.max_shard_size, allow_incomplete=args.allow_incomplete,
           echo=lambda m: print(m, file=sys.stderr))
    return 0


def run_verify(args: argparse.Namespace, argv: list[str]) -> int:
    from ..export import verify

    report = verify(args.dir, args.against, base=args.base, check=False, compare=not args.files_only,
                    allow_incomplete=args.allow_incomplete, echo=lambda m: print(m, file=sys.stderr))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else EXIT_FAILED
