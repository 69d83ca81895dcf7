"""The AWS side of `kinfuse sagemaker-job`: upload a JobPlan's files to S3, CreateTrainingJob,
and wait for the job, with boto3 (the optional `kinfuse[sagemaker]` extra, imported here only).

The endpoint, region and credentials are boto3's own (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...,
AWS_ENDPOINT_URL). An AWS failure becomes one KinfuseError line that says what to fix.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from .errors import KinfuseError
from .sagemaker_job import JobPlan

DONE = ("Completed", "Failed", "Stopped")
CREDENTIAL_CODES = {"InvalidClientTokenId", "UnrecognizedClientException", "ExpiredToken", "ExpiredTokenException",
                    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "RequestExpired"}
DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
FIX_CREDENTIALS = ("set AWS_PROFILE (then `aws sso login` if it uses SSO), or AWS_ACCESS_KEY_ID and "
                   "AWS_SECRET_ACCESS_KEY, or run `aws configure`")


def boto3():
    try:
        import boto3 as module
    except ImportError:
        raise KinfuseError("submitting a SageMaker job needs boto3: pip install 'kinfuse[sagemaker]' "
                           "(or pass --dry-run to see the request without AWS)") from None
    return module


def aws_error(e: Exception, doing: str) -> KinfuseError:
    """A boto3/botocore exception as one line: what failed and what to do."""
    from botocore import exceptions as bx

    if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        why = f"no usable AWS credentials ({e}): {FIX_CREDENTIALS}"
    elif isinstance(e, bx.ProfileNotFound):
        why = f"{e}: check AWS_PROFILE and ~/.aws/config"
    elif isinstance(e, (bx.TokenRetrievalError, bx.SSOTokenLoadError, bx.UnauthorizedSSOTokenError)):
        why = f"the AWS login has expired ({e}): run `aws sso login` (or refresh the credentials)"
    elif isinstance(e, bx.EndpointConnectionError):
        why = f"cannot reach AWS ({e}): check the network, --region and AWS_ENDPOINT_URL"
    elif isinstance(e, bx.ClientError):
        error = e.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message") or str(e)
        if code in CREDENTIAL_CODES:
            why = f"AWS rejected the credentials ({code}: {message}): {FIX_CREDENTIALS}"
        elif code in DENIED_CODES:
            why = (f"not allowed ({code}: {message}): the caller needs s3:PutObject on the bucket, "
                   "sagemaker:CreateTrainingJob and iam:PassRole on --role")
        elif code == "NoSuchBucket":
            why = f"no such bucket ({message}): create it, or pass another --bucket"
        else:
            why = f"{code}: {message}"
    elif isinstance(e, bx.BotoCoreError):
        why = str(e)
    else:
        raise e
    return KinfuseError(" ".join(f"{doing}: {why}".split()))


def _calls(doing: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(*args, **kwargs)
    except Boto3Error as e:  # S3UploadFailedError, raised while handling botocore's ClientError
        inner = e.__cause__ or e.__context__
        if isinstance(inner, (BotoCoreError, ClientError)):
            raise aws_error(inner, doing) from e
        raise KinfuseError(" ".join(f"{doing}: {e}".split())) from e
    except (BotoCoreError, ClientError) as e:
        raise aws_error(e, doing) from e


def session(region: str) -> Any:
    return boto3().session.Session(region_name=region)


def check_credentials(region: str) -> None:
    """Before anything is built or uploaded: boto3 finds credentials (no AWS call is made)."""
    from botocore.exceptions import BotoCoreError

    try:
        found = session(region).get_credentials()
    except BotoCoreError as e:  # a profile that does not exist, an SSO cache that cannot be read
        raise aws_error(e, "reading the AWS credentials") from e
    if found is None:
        raise KinfuseError(f"no AWS credentials found: {FIX_CREDENTIALS}")


def configured_region() -> str | None:
    """The region boto3 would use (AWS_REGION, AWS_DEFAULT_REGION, the profile's), if any."""
    found = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if found:
        return found
    try:
        import boto3 as module
    except ImportError:
        return None
    try:
        return module.session.Session().region_name
    except Exception:  # a broken profile: the caller says to pass --region
        return None


def default_bucket(region: str) -> str:
    """sagemaker-<region>-<account>, created when missing: the SDK's default bucket."""
    sess = session(region)
    account = _calls("finding the AWS account (sts get-caller-identity)",
                     sess.client("sts").get_caller_identity)["Account"]
    bucket, s3 = f"sagemaker-{region}-{account}", sess.client("s3")
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise aws_error(e, f"checking the bucket {bucket}") from e
        where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        _calls(f"creating the default bucket {bucket}", s3.create_bucket, Bucket=bucket, **where)
    return bucket


def submit(plan: JobPlan, echo: Callable[[str], Any] = print) -> str:
    """Upload the plan's files, then create the training job; its ARN."""
    sess = session(plan.region)
    s3, sagemaker = sess.client("s3"), sess.client("sagemaker")
    total = sum(u.path.stat().st_size for u in plan.uploads)
    echo(f"uploading {len(plan.uploads)} file(s), {total / 2**20:.1f} MiB, to s3://{plan.bucket}/")
    for u in plan.uploads:
        _calls(f"uploading {u.path.name} to {plan.uri(u.key)}", s3.upload_file, str(u.path), plan.bucket, u.key)
    created = _calls(f"creating the training job {plan.name}", sagemaker.create_training_job, **plan.request)
    echo(f"created the training job {plan.name} ({created['TrainingJobArn']})")
    return created["TrainingJobArn"]


def wait(name: str, region: str, *, poll: float = 30.0, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Poll describe_training_job until the job ends; its last description."""
    sagemaker, seen = session(region).client("sagemaker"), None
    while True:
        job = _calls(f"describing the training job {name}", sagemaker.describe_training_job, TrainingJobName=name)
        status = (job["TrainingJobStatus"], job.get("SecondaryStatus"))
        if status != seen:
            echo(f"{name}: {status[0]}" + (f" ({status[1]})" if status[1] else ""))
            seen = status
        if status[0] in DONE:
            return job
        time.sleep(poll)
