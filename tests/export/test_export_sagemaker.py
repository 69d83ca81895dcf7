"""SageMaker (kinfuse.export.sagemaker): the package as model.tar.gz and as a folder, its file
rules, the generated deploy.py driving a stand-in SageMaker SDK, and the upload to a local moto S3."""

from __future__ import annotations

import json
import runpy
import sys
import tarfile
import types

import pytest

import kinfuse
from kinfuse.cli import main as cli
from kinfuse.export.errors import ExportError, VerifyError
from kinfuse.export.sagemaker import check_tar, suggest_instance


def test_sagemaker_tar_and_folder(run, tmp_path, quiet):
    out = kinfuse.export(run, format="sagemaker", out=tmp_path / "sm", max_shard_size="100KB", **quiet)
    assert sorted(p.name for p in out.iterdir()) == ["deploy.py", "kinfuse_export.json", "model.tar.gz", "tgi-launch.sh"]
    with tarfile.open(out / "model.tar.gz") as archive:
        members = archive.getmembers()
    names = [m.name for m in members]
    assert all(m.isfile() and "/" not in m.name for m in members), names  # every file at the archive root
    assert "config.json" in names and "model.safetensors.index.json" in names
    assert sum(n.endswith(".safetensors") for n in names) >= 2  # sharded at 100 KB
    assert check_tar(out / "model.tar.gz") == []
    assert "tar -xzf model.tar.gz" in (out / "tgi-launch.sh").read_text()

    report = kinfuse.verify(out, compare=False, **quiet)  # extracts the archive, checks the files in it
    assert report.ok and report.kind == "sagemaker", report.summary()

    flat = kinfuse.export(run, format="sagemaker", out=tmp_path / "sm-flat", tar=False, **quiet)
    assert (flat / "model" / "config.json").is_file() and not (flat / "model.tar.gz").exists()
    assert cli(["verify", str(flat), "--files-only"]) == 0

    # the file rules catch what TGI or SageMaker would trip on
    (flat / "model" / "training_args.bin").write_bytes(b"x")
    (flat / "model" / "adapter_model.safetensors").write_bytes(b"x")
    config = json.loads((flat / "model" / "config.json").read_text())
    (flat / "model" / "config.json").write_text(json.dumps({**config, "quantization_config": {"load_in_4bit": True}}))
    with pytest.raises(VerifyError) as failed:
        kinfuse.verify(flat, compare=False, **quiet)
    problems = " | ".join(failed.value.report.problems)
    assert "training_args.bin" in problems and "'adapter'" in problems and "quantization_config" in problems
    with tarfile.open(tmp_path / "nested.tar.gz", "w:gz") as archive:
        archive.add(flat / "model", arcname="model")
    assert any("not at the archive root" in p for p in check_tar(tmp_path / "nested.tar.gz"))


def test_deploy_script_drives_the_sagemaker_sdk(run, tmp_path, monkeypatch, quiet):
    out = kinfuse.export(run, format="sagemaker", out=tmp_path / "sm", tar=False, **quiet)
    calls = {}

    class HuggingFaceModel:
        def __init__(self, **kwargs):
            calls["model"] = kwargs

        def deploy(self, **kwargs):
            calls["deploy"] = kwargs
            return types.SimpleNamespace(endpoint_name="ep", predict=lambda payload: None)

    sagemaker = types.ModuleType("sagemaker")
    sagemaker.get_execution_role = lambda: "arn:aws:iam::1:role/default"
    hf = types.ModuleType("sagemaker.huggingface")
    hf.HuggingFaceModel = HuggingFaceModel
    hf.get_huggingface_llm_image_uri = lambda backend, **kw: f"image-for-{backend}"
    sagemaker.huggingface = hf
    monkeypatch.setitem(sys.modules, "sagemaker", sagemaker)
    monkeypatch.setitem(sys.modules, "sagemaker.huggingface", hf)
    script = runpy.run_path(str(out / "deploy.py"), run_name="deploy")
    script["main"](["--model-data", "s3://bucket/run/", "--no-test"])
    model = calls["model"]
    assert model["image_uri"] == "image-for-huggingface" and model["role"] == "arn:aws:iam::1:role/default"
    assert model["model_data"]["S3DataSource"] == {"S3Uri": "s3://bucket/run/", "S3DataType": "S3Prefix",
                                                   "CompressionType": "None"}
    env = model["env"]
    assert env["HF_MODEL_ID"] == "/opt/ml/model" and env["SM_NUM_GPUS"] == "1"
    assert int(env["MAX_INPUT_LENGTH"]) < int(env["MAX_TOTAL_TOKENS"]) <= 512  # the tiny model's context
    assert int(env["MAX_BATCH_PREFILL_TOKENS"]) >= int(env["MAX_INPUT_LENGTH"])
    assert calls["deploy"]["instance_type"] == "ml.g5.xlarge"
    assert [suggest_instance(int(b * 1e9)) for b in (0.1, 3, 7, 13, 70)] == [
        ("ml.g5.xlarge", 1), ("ml.g5.xlarge", 1), ("ml.g5.2xlarge", 1), ("ml.g5.12xlarge", 4), ("ml.p4d.24xlarge", 8)]


def test_upload_to_s3(run, tmp_path, monkeypatch, quiet):
    import boto3  # the dev extra installs boto3 and moto[server]
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="models")
        out = kinfuse.export(run, format="sagemaker", out=tmp_path / "sm", upload="s3://models/kinfuse/run1", **quiet)
        body = s3.get_object(Bucket="models", Key="kinfuse/run1/model.tar.gz")["Body"].read()
        assert body == (out / "model.tar.gz").read_bytes()
        assert "MODEL_DATA = 's3://models/kinfuse/run1/model.tar.gz'" in (out / "deploy.py").read_text()

        flat = kinfuse.export(run, format="sagemaker", out=tmp_path / "flat", tar=False, upload="s3://models/flat",
                              **quiet)
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="models", Prefix="flat/")["Contents"]}
        assert keys == {f"flat/{p.name}" for p in (flat / "model").iterdir()} and "flat/config.json" in keys
        with pytest.raises(ExportError, match="upload to s3://no-such-bucket"):
            kinfuse.export(run, format="tgi-adapter", out=tmp_path / "t", upload="s3://no-such-bucket/x", **quiet)
        assert (tmp_path / "t" / "adapter_model.safetensors").is_file()  # the local export stays
    finally:
        server.stop()
