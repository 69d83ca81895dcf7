"""SageMaker: the merged model packed for the Hugging Face LLM (TGI) container, a `deploy.py`
to start an endpoint with it, an instance type to suggest, and the upload to S3.

SageMaker wants every model file at the root of `model.tar.gz` (or of an uncompressed S3
prefix); `check_tar` is that rule, as `kinfuse verify` applies it.
"""

from __future__ import annotations

import re
import shutil
import tarfile
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from .errors import ExportError
from .tgi import write_launch_script

DEPLOY_FILE = "deploy.py"


def suggest_instance(params: int) -> tuple[str, int]:
    """(SageMaker instance type, GPUs to shard over) for a 16-bit model of `params` parameters."""
    billions = params / 1e9
    if billions <= 3:
        return "ml.g5.xlarge", 1
    if billions <= 8:
        return "ml.g5.2xlarge", 1
    if billions <= 14:
        return "ml.g5.12xlarge", 4
    return "ml.p4d.24xlarge", 8


def deploy_script(*, model_data: str | None, tarred: bool, params: int, dtype: str, limits: dict[str, int]) -> str:
    """templates/deploy.py with its settings lines written for this model."""
    instance, gpus = suggest_instance(params)
    env = {"HF_MODEL_ID": "/opt/ml/model", "SM_NUM_GPUS": str(gpus), **{k: str(v) for k, v in limits.items()}}
    what = "model.tar.gz" if tarred else "the folder holding the model files"
    settings = {
        "MODEL_DATA": f"{model_data!r}  # S3 URI of {what}",
        "TARRED": f"{tarred!r}  # True: model.tar.gz; False: an uncompressed S3 prefix",
        "INSTANCE_TYPE": f"{instance!r}  # suggested for {params / 1e9:.2f}B parameters in {dtype}",
        "ENV": "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in env.items()) + "}",
    }
    text = (resources.files(__package__) / "templates" / DEPLOY_FILE).read_text(encoding="utf-8")
    for name, value in settings.items():
        text, found = re.subn(rf"^{name} = .*$", lambda _: f"{name} = {value}", text, count=1, flags=re.M)
        if not found:
            raise RuntimeError(f"templates/{DEPLOY_FILE} has no '{name} = ' line to fill in")
    return text


def package(staging: Path, model_dir: Path, *, params: int, dtype: str, limits: dict[str, int], tar: bool,
            upload_to: str | None, echo: Callable[[str], Any]) -> dict[str, Any]:
    """Turn the merged model in `staging/model` into the SageMaker layout; returns what to record."""
    instance, gpus = suggest_instance(params)
    model_data = None
    if upload_to:
        bucket, prefix = parse_s3_uri(upload_to)
        model_data = f"s3://{bucket}/" + "/".join(x for x in (prefix, "model.tar.gz" if tar else "") if x)
        if not tar:
            model_data = model_data.rstrip("/") + "/"
    if tar:
        echo(f"packing {model_dir.name}/ into model.tar.gz")
        with tarfile.open(staging / "model.tar.gz", "w:gz", compresslevel=1) as archive:
            for path in sorted(model_dir.iterdir()):
                archive.add(path, arcname=path.name, filter=_tar_filter)
        shutil.rmtree(model_dir)
        prepare = '[ -f model/config.json ] || { mkdir -p model && tar -xzf model.tar.gz -C model; }\n'
    else:
        prepare = ""
    (staging / DEPLOY_FILE).write_text(deploy_script(model_data=model_data, tarred=tar, params=params, dtype=dtype,
                                                     limits=limits))
    write_launch_script(staging, model_dir="model", limits=limits, dtype=dtype, prepare=prepare)
    return {"tar": tar, "instance_type": instance, "sm_num_gpus": gpus, "model_data": model_data}


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def check_tar(path: Path) -> list[str]:
    """SageMaker's rules for model.tar.gz: plain files, all at the archive root, config.json among them."""
    p: list[str] = []
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        return [f"{path.name} is not a readable .tar.gz: {e}"]
    for m in members:
        if not m.isfile():
            p.append(f"{path.name}: member {m.name!r} is not a plain file (SageMaker wants every file at the root)")
        elif "/" in m.name.strip("/") or m.name.startswith(("./", "/")):
            p.append(f"{path.name}: member {m.name!r} is not at the archive root")
    if not any(m.name == "config.json" for m in members):
        p.append(f"{path.name}: no config.json at the archive root")
    return p


# -- S3 ----------------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    found = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?", uri or "")
    if not found:
        raise ExportError(f"--upload {uri!r}: give an S3 URI like s3://bucket/prefix")
    return found.group(1), (found.group(2) or "").strip("/")


def upload_files(files: list[Path], uri: str, *, root: Path, echo: Callable[[str], Any] = print) -> list[str]:
    """Upload files (keys relative to `root`) under an s3:// prefix with boto3; returns the URIs.

    The endpoint and credentials are boto3's own: AWS_ENDPOINT_URL, AWS_PROFILE, AWS_ACCESS_KEY_ID, ...
    """
    bucket, prefix = parse_s3_uri(uri)
    try:
        import boto3
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise ExportError("--upload needs boto3: pip install 'kinfuse[sagemaker]'") from None
    s3 = boto3.client("s3")
    uris = []
    for path in files:
        key = "/".join(x for x in (prefix, path.relative_to(root).as_posix()) if x)
        echo(f"uploading {path.name} ({path.stat().st_size / 2**20:.1f} MiB) to s3://{bucket}/{key}")
        try:
            s3.upload_file(str(path), bucket, key)
        except (BotoCoreError, ClientError, Boto3Error) as e:
            raise ExportError(f"upload to s3://{bucket}/{key} failed: {e}") from e
        uris.append(f"s3://{bucket}/{key}")
    return uris
