"""`kinfuse sagemaker-job` against moto's S3 and SageMaker on 127.0.0.1 (AWS_ENDPOINT_URL): the
objects uploaded (the rewritten config, the corpus files, sourcedir.tar.gz), the training job as
moto records it, --wait printing the model's S3 URI, the SDK's default bucket; and AWS failures
(no credentials, a missing bucket, no boto3) as one readable line."""

import io
import json
import sys
import tarfile
import tomllib

import pytest

from kinfuse.cli import main
from kinfuse.sagemaker_job import IMAGE_TAG, kinfuse_wheel

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return str(kinfuse_wheel(tmp_path_factory.mktemp("wheel")))


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path):
    """boto3 pointed at the moto server, with test credentials and no profile of this machine."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    return boto3.session.Session(region_name="us-east-1")


def _project(root):
    (root / "docs").mkdir()
    (root / "docs/zephyr.md").write_text("The Zephyr router has four antennas.\n")
    (root / "docs/nested").mkdir()
    (root / "docs/nested/mesh.txt").write_text("It supports a mesh of up to nine nodes.\n")
    (root / "qa.jsonl").write_text(json.dumps({"question": "Antennas?", "answer": "Four."}) + "\n")
    (root / "probes.jsonl").write_text(json.dumps({"question": "How many antennas?", "answers": ["four"]}) + "\n")
    (root / "retention.jsonl").write_text(json.dumps({"question": "Capital of France?", "answers": ["Paris"]}) + "\n")
    config = root / "infuse.toml"
    config.write_text('model = "HuggingFaceTB/SmolLM2-360M-Instruct"\n'
                      '[corpus]\nurls = ["https://example.com/zephyr"]\npaths = ["docs"]\n'
                      '[data]\nqa_files = ["qa.jsonl"]\n'
                      '[eval]\nprobes = ["probes.jsonl"]\nretention = ["retention.jsonl"]\n')
    return config


def _args(config, wheel, *extra):
    return ["sagemaker-job", str(config), "--role", ROLE, "--instance-type", "ml.g5.12xlarge", "--region",
            "us-east-1", "--wheel", wheel, *extra]


def test_submission_uploads_the_job_and_creates_it(aws, wheel, tmp_path, capsys):
    s3, sagemaker = aws.client("s3"), aws.client("sagemaker")
    s3.create_bucket(Bucket="infusions")
    config = _project(tmp_path)
    code = main(_args(config, wheel, "--bucket", "infusions", "--prefix", "runs", "--job-name", "zephyr-7",
                      "--volume-size", "100", "--max-run", "7200", "--env", "HF_TOKEN=hf_x", "--wait",
                      "--poll", "0.01"))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines() == ["zephyr-7", "s3://infusions/runs/zephyr-7/output/model.tar.gz"]
    assert "zephyr-7: Completed" in err

    base = "runs/zephyr-7"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="infusions", Prefix=base)["Contents"]}
    assert keys == {f"{base}/{k}" for k in ("input/config/infuse.toml", "input/docs/docs/zephyr.md",
                                            "input/docs/docs/nested/mesh.txt", "input/qa/qa.jsonl",
                                            "input/probes/probes.jsonl", "input/retention/retention.jsonl",
                                            "source/sourcedir.tar.gz")}
    body = s3.get_object(Bucket="infusions", Key=f"{base}/input/docs/docs/nested/mesh.txt")["Body"].read()
    assert body == (tmp_path / "docs/nested/mesh.txt").read_bytes()
    staged = tomllib.loads(s3.get_object(Bucket="infusions", Key=f"{base}/input/config/infuse.toml")["Body"]
                           .read().decode())
    assert staged["corpus"]["paths"] == ["../docs/docs"]
    assert staged["corpus"]["urls"] == ["https://example.com/zephyr"]
    assert staged["data"]["qa_files"] == ["../qa/qa.jsonl"]
    assert (staged["eval"]["probes"], staged["eval"]["retention"]) == (["../probes/probes.jsonl"],
                                                                       ["../retention/retention.jsonl"])
    source = s3.get_object(Bucket="infusions", Key=f"{base}/source/sourcedir.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(source)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    wheel_name = wheel.rsplit("/", 1)[-1]
    assert set(files) == {"train.py", "requirements.txt", wheel_name}
    assert files["requirements.txt"].decode() == f"./{wheel_name}\n"
    assert files[wheel_name] == open(wheel, "rb").read()
    assert b"from kinfuse.sagemaker_entry import main" in files["train.py"]

    job = sagemaker.describe_training_job(TrainingJobName="zephyr-7")
    assert job["RoleArn"] == ROLE and job["TrainingJobStatus"] == "Completed"
    assert job["AlgorithmSpecification"]["TrainingImage"] == (
        f"763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:{IMAGE_TAG}")
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert job["ResourceConfig"] == {"InstanceType": "ml.g5.12xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100}
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 7200
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels == {c: f"s3://infusions/{base}/input/{c}/" for c in ("config", "docs", "qa", "probes",
                                                                          "retention")}
    assert {k: json.loads(v) for k, v in job["HyperParameters"].items()} == {
        "sagemaker_program": "train.py", "sagemaker_submit_directory": f"s3://infusions/{base}/source/sourcedir.tar.gz",
        "sagemaker_container_log_level": 20, "sagemaker_job_name": "zephyr-7", "sagemaker_region": "us-east-1"}
    assert job["OutputDataConfig"]["S3OutputPath"] == "s3://infusions/runs"
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == "s3://infusions/runs/zephyr-7/output/model.tar.gz"


def test_without_a_bucket_the_sdks_default_bucket_is_created(aws, wheel, tmp_path, capsys):
    config = _project(tmp_path)
    assert main(_args(config, wheel, "--job-name", "zephyr-8")) == 0, capsys.readouterr().err
    bucket = "sagemaker-us-east-1-123456789012"  # moto's account
    assert aws.client("s3").head_object(Bucket=bucket, Key="kinfuse/zephyr-8/input/config/infuse.toml")
    job = aws.client("sagemaker").describe_training_job(TrainingJobName="zephyr-8")
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{bucket}/kinfuse"


def test_bad_arguments_or_config_create_no_default_bucket(aws, wheel, tmp_path, capsys):
    # The default bucket is created when missing: only once everything else has been checked.
    config = _project(tmp_path)
    s3 = aws.client("s3")
    before = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert main(_args(config, wheel, "--job-name", "zephyr-10", "--role", "arn:aws:iam::123:role/typo")) == 2
    assert "--role" in capsys.readouterr().err
    (tmp_path / "qa.jsonl").unlink()
    assert main(_args(config, wheel, "--job-name", "zephyr-10")) == 2
    assert "qa.jsonl" in capsys.readouterr().err
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == before


def test_aws_failures_are_one_readable_line(aws, wheel, tmp_path, monkeypatch, capsys):
    config = _project(tmp_path)
    assert main(_args(config, wheel, "--bucket", "no-such-bucket", "--job-name", "zephyr-9")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the "uploading N file(s)" line
    assert err == ("kinfuse: error: uploading infuse.toml to s3://no-such-bucket/kinfuse/zephyr-9/input/config/"
                   "infuse.toml: no such bucket (The specified bucket does not exist): create it, or pass another "
                   "--bucket")
    with pytest.raises(Exception, match="zephyr-9"):
        aws.client("sagemaker").describe_training_job(TrainingJobName="zephyr-9")  # nothing was created

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert main(_args(config, wheel, "--bucket", "any-bucket")) == 2
    assert capsys.readouterr().err == ("kinfuse: error: no AWS credentials found: set AWS_PROFILE (then `aws sso "
                                       "login` if it uses SSO), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                                       "run `aws configure`\n")
    monkeypatch.setenv("AWS_PROFILE", "nobody")
    assert main(_args(config, wheel, "--bucket", "any-bucket")) == 2
    assert capsys.readouterr().err == ("kinfuse: error: reading the AWS credentials: The config profile (nobody) "
                                       "could not be found: check AWS_PROFILE and ~/.aws/config\n")
    monkeypatch.delenv("AWS_PROFILE")
    from botocore.exceptions import ClientError, NoCredentialsError

    from kinfuse.sagemaker_aws import aws_error  # credentials that vanish during the upload: the same advice
    assert str(aws_error(NoCredentialsError(), "uploading x")).startswith(
        "uploading x: no usable AWS credentials (Unable to locate credentials): set AWS_PROFILE")
    expired = ClientError({"Error": {"Code": "ExpiredToken", "Message": "The security token included in the "
                                     "request is expired"}}, "CreateTrainingJob")
    assert str(aws_error(expired, "creating the training job j")) == (
        "creating the training job j: AWS rejected the credentials (ExpiredToken: The security token included in "
        "the request is expired): set AWS_PROFILE (then `aws sso login` if it uses SSO), or AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, or run `aws configure`")

    monkeypatch.setitem(sys.modules, "boto3", None)
    assert main(_args(config, wheel, "--bucket", "any-bucket")) == 2
    err = capsys.readouterr().err
    assert "needs boto3: pip install 'kinfuse[sagemaker]'" in err
