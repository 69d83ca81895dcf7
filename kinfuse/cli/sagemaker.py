"""`kinfuse sagemaker-job CONFIG --role ARN --instance-type ml.g5.2xlarge [--dry-run] [--wait]`:
the infusion as a SageMaker training job (kinfuse.sagemaker_job stages it and builds the request,
kinfuse.sagemaker_aws uploads and submits it). With --dry-run it prints the request and the
uploads as JSON and makes no AWS call."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import KinfuseError


def add(sub: Any) -> None:
    from ..sagemaker_job import MAX_RUN_S, VOLUME_GB

    p = sub.add_parser("sagemaker-job", help="run the infusion as a SageMaker training job (Hugging Face container)",
                       description="Uploads the config's local inputs and a sourcedir with the kinfuse wheel to "
                                   "s3://BUCKET/PREFIX/JOB/, then creates the training job; its model.tar.gz is "
                                   "the `kinfuse export --format sagemaker` layout. Needs boto3 "
                                   "(pip install 'kinfuse[sagemaker]') unless --dry-run.")
    p.add_argument("config", help="the infusion TOML (as `kinfuse infuse` reads it)")
    p.add_argument("--role", required=True, help="IAM role ARN the job runs as (arn:aws:iam::ACCOUNT:role/NAME)")
    p.add_argument("--instance-type", required=True, help="a GPU training instance, e.g. ml.g5.2xlarge")
    p.add_argument("--instance-count", type=int, default=1, help="instances (default 1); with several, training "
                                                                   "runs under torchrun over all their GPUs")
    p.add_argument("--bucket", help="S3 bucket for inputs and output (default: the SDK's sagemaker-REGION-ACCOUNT)")
    p.add_argument("--prefix", default="kinfuse", help="key prefix in the bucket (default: kinfuse)")
    p.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / the profile's)")
    p.add_argument("--job-name", help="training job name (default: kinfuse-CONFIG-TIMESTAMP)")
    p.add_argument("--image-uri", help="training image (default: the Hugging Face PyTorch training image "
                                       "for the region, see kinfuse/sagemaker_job.py)")
    p.add_argument("--wheel", help="a kinfuse wheel to install in the job (default: built from this checkout)")
    p.add_argument("--volume-size", type=int, default=VOLUME_GB, help=f"GB of storage (default {VOLUME_GB})")
    p.add_argument("--max-run", type=int, default=MAX_RUN_S, help=f"seconds before the job is stopped "
                                                                   f"(default {MAX_RUN_S})")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the job (repeat), e.g. HF_TOKEN=... for a gated model; "
                        "visible in the job's description")
    p.add_argument("--dry-run", action="store_true", help="print the request and uploads as JSON; no AWS call")
    p.add_argument("--stage-dir", help="keep the staged infuse.toml, sourcedir.tar.gz and request.json here")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its model.tar.gz S3 URI")
    p.add_argument("--poll", type=float, default=30.0, help=argparse.SUPPRESS)  # seconds between status checks
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from .. import sagemaker_aws as aws
    from . import EXIT_FAILED  # the package's exit codes (imported here: the package imports this module)
    from ..sagemaker_job import model_artifact, parse_env, plan_job

    if args.dry_run and args.wait:
        raise KinfuseError("--dry-run and --wait: a dry run starts no job to wait for; drop one of them")
    region = args.region or aws.configured_region()
    if not region:
        raise KinfuseError("no AWS region: pass --region (e.g. us-east-1) or set AWS_REGION")
    if not args.dry_run:  # before the wheel is built: say at once what is missing
        aws.check_credentials(region)
    bucket: Any = args.bucket
    if not bucket:
        if args.dry_run:  # the account id needs an AWS call
            bucket = f"sagemaker-{region}-000000000000"
            print(f"kinfuse: --dry-run without --bucket: {bucket} stands for the default bucket "
                  "sagemaker-REGION-ACCOUNT", file=sys.stderr)
        else:  # resolved (and created if missing) by plan_job once the arguments and config are checked
            bucket = lambda: aws.default_bucket(region)  # noqa: E731
    work = Path(args.stage_dir) if args.stage_dir else Path(tempfile.mkdtemp(prefix="kinfuse-sagemaker-"))
    try:
        plan = plan_job(args.config, role=args.role, instance_type=args.instance_type, region=region, bucket=bucket,
                        work=work, prefix=args.prefix, name=args.job_name,
                        image=args.image_uri, wheel=args.wheel, volume_gb=args.volume_size, max_run=args.max_run,
                        env=parse_env(args.env), instance_count=args.instance_count)
        spec = json.dumps(plan.spec(), indent=2)
        if args.stage_dir:
            (work / "request.json").write_text(spec + "\n", encoding="utf-8")
        if args.dry_run:
            print(spec)
            return 0
        aws.submit(plan, echo=lambda m: print(m, file=sys.stderr))
    finally:
        if not args.stage_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(plan.name)
    if not args.wait:
        print(f"kinfuse: follow it with: aws sagemaker describe-training-job --region {region} "
              f"--training-job-name {plan.name}; its model will be {model_artifact(plan)}", file=sys.stderr)
        return 0
    try:
        job = aws.wait(plan.name, region, poll=args.poll, echo=lambda m: print(m, file=sys.stderr))
    except KeyboardInterrupt:
        print(f"kinfuse: stopped waiting; the job keeps running (aws sagemaker stop-training-job --region {region} "
              f"--training-job-name {plan.name} stops it)", file=sys.stderr)
        return 130
    if job["TrainingJobStatus"] != "Completed":
        print(f"kinfuse: error: the training job {plan.name} {job['TrainingJobStatus'].lower()}: "
              f"{job.get('FailureReason', 'no reason given')}", file=sys.stderr)
        return EXIT_FAILED
    print(job["ModelArtifacts"]["S3ModelArtifacts"])
    return 0
