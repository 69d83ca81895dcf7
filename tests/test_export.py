"""Export and verify (issue 6) on the tiny model: each format, verify passing and failing, TGI's
rules, the SageMaker package and its upload to a local moto S3 server, and bad input."""

from __future__ import annotations

import errno
import importlib
import json
import runpy
import shutil
import sys
import tarfile
import types
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import kinfuse
from kinfuse import Chunker, ModelError, QLoRATrainer, TrainConfig
from kinfuse.cli import main as cli

ex = importlib.import_module("kinfuse.export")  # the module (kinfuse.export is the function)
QUIET = dict(echo=lambda message: None)


def save_run(path: Path, model_name: str, train_cfg: TrainConfig, result: dict | None = None) -> Path:
    """metrics.json as kinfuse.pipeline writes it (the parts export reads)."""
    metrics = {"model": model_name, "train": result or {"device": "cpu"}, "config": {"train": asdict(train_cfg)}}
    (path / "metrics.json").write_text(json.dumps(metrics, default=str))
    return path


@pytest.fixture(scope="module")
def run(tiny_model, tiny_tokenizer, sample_text, tmp_path_factory):
    """A QLoRA run on the NF4 tiny model: a few steps at a high learning rate, so the adapter
    moves the logits far more than 16-bit rounding does."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(max_steps=2, quantize="nf4", progress=False, lora_dropout=0.0, learning_rate=3e-2,
                      lr_schedule="constant", gradient_checkpointing=False)
    trainer = QLoRATrainer(tiny_model, cfg, tokenizer=tiny_tokenizer)
    result = trainer.train(Chunker(tiny_tokenizer, block_size=64)([{"text": t} for t in sample_text.splitlines()]))
    trainer.save_adapter(out / "adapter")
    (out / "train_log.jsonl").write_text("")
    return save_run(out, trainer.model_name, cfg, {k: v for k, v in result.to_dict().items() if k != "history"})


def hand_run(path: Path, base: str, tokenizer, *, quantize: str = "none", seed: int = 0, **lora) -> Path:
    """A run dir built by hand: a peft LoRA with random (non-zero) B, saved like kinfuse saves it."""
    from peft import LoraConfig, get_peft_model

    from kinfuse.models import load_model

    model = load_model(base, quantize=quantize, compute_dtype=torch.float32, device=torch.device("cpu"))
    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, **lora))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                p.normal_(0.0, 0.3)
    peft.save_pretrained(path / "adapter")
    tokenizer.save_pretrained(path / "adapter")
    return save_run(path, base, TrainConfig(quantize=quantize))


def inprocess_diff(export_dir: Path, run_dir: Path, quantize: str, tokenizer) -> tuple[float, float]:
    """(max |Δlogit|, tolerance) of a merged export loaded with transformers against the reference verify uses."""
    from transformers import AutoModelForCausalLM

    src = ex.load_source(run_dir)
    ids = [tokenizer(t).input_ids for t in ex.PROMPTS]
    reference, _ = ex._reference_logits(src, src.base_path(), quantize, ids)
    model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    worst = (0.0, 1.0)
    with torch.no_grad():
        for row, ref in zip(ids, reference):
            diff = (model(input_ids=torch.tensor([row])).logits[0] - ref).abs().max().item()
            tol = ex.tolerance(ref.abs().max().item(), "bfloat16", "float32")
            worst = max(worst, (diff, tol), key=lambda d: d[0] / d[1])
    return worst


# -- formats and verify ---------------------------------------------------------------------


def test_merged_verifies_and_matches_the_nf4_weights_trained(run, tiny_model, tmp_path):
    out = kinfuse.export(run, format="merged", out=tmp_path / "merged", **QUIET)
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors.index.json" in names and "generation_config.json" in names and "tgi-launch.sh" in names
    assert "tokenizer.json" in names and any(n.startswith("model-00001-of-") for n in names)
    assert not [n for n in names if n.endswith(".safetensors") and any(w in n for w in ("adapter", "args", "training"))]
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"]  # where TGI reads it
    meta = json.loads((out / "kinfuse_export.json").read_text())
    assert meta["merge_into"] == "dequantized" and meta["nf4_roundtrip_weights"] == 14
    launch = (out / "tgi-launch.sh").read_text()
    assert "docker run --gpus all" in launch and "-p 8080:80" in launch and "--model-id /data" in launch

    # The weights merged into are bit for bit those the trainer's NF4 layers computed with.
    import bitsandbytes as bnb
    from safetensors import safe_open

    from kinfuse.models import load_model

    dtype = getattr(torch, ex.load_source(run).quant_dtype)  # the run's: bf16 on a CPU with native bf16
    model = load_model(tiny_model, quantize="nf4", compute_dtype=dtype, device=torch.device("cpu"))
    with safe_open(str(Path(tiny_model) / "model.safetensors"), "pt") as f:
        for name, module in model.named_modules():
            if isinstance(module, bnb.nn.Linear4bit):
                trained = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
                assert torch.equal(ex.nf4_roundtrip(f.get_tensor(f"{name}.weight"), dtype), trained), name

    report = kinfuse.verify(out, **QUIET)  # plain transformers in a subprocess vs base NF4 + adapter
    assert report.ok and report.kind == "merged" and report.prompts == 4, report.summary()
    assert report.max_abs_diff <= report.tolerance
    assert report.adapter_effect > 5 * report.tolerance  # the check can tell the adapter from no adapter
    print(f"\nmerged bf16 (NF4 run): {report.summary()}")


def test_quantization_dtype_is_the_one_training_recorded(run, tmp_path):
    from kinfuse.train import pick_dtype as _pick_dtype

    # the run's metrics.json carries what training computed in ("auto" resolved on this machine)
    want = str(_pick_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
    assert json.loads((run / "metrics.json").read_text())["train"]["compute_dtype"] == want
    assert ex.load_source(run).quant_dtype == want
    # a run from before kinfuse recorded it: "auto" on a CPU meant fp32 then
    shutil.copytree(run / "adapter", tmp_path / "old" / "adapter")
    old = save_run(tmp_path / "old", "m", TrainConfig(), {"device": "cpu"})
    assert ex.load_source(old).quant_dtype == "float32"
    # a trainer checkpoint records it in meta.json
    step = tmp_path / "checkpoints" / "step-1"
    shutil.copytree(run / "adapter", step / "adapter")
    (step / "meta.json").write_text(json.dumps({"model": "m", "compute_dtype": "bfloat16", "lora": {"quantize": "nf4"}}))
    assert ex.load_source(step / "adapter").quant_dtype == "bfloat16"


def test_verify_fails_a_broken_export(run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    out = kinfuse.export(run, format="merged", out=tmp_path / "broken", **QUIET)
    shard = next(out.glob("model-*.safetensors"))
    tensors = load_file(shard)
    tensors["model.layers.1.self_attn.o_proj.weight"].zero_()
    save_file(tensors, shard, metadata={"format": "pt"})
    assert cli(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "does not reproduce the trained model" in printed


def test_tgi_adapter_verifies(run, tmp_path, capsys):
    assert cli(["export", str(run / "adapter"), "--format", "tgi-adapter", "--out", str(tmp_path / "tgi")]) == 0
    out = tmp_path / "tgi"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tgi-launch.sh"} <= {
        p.name for p in out.iterdir()}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and "alora_invocation_tokens" not in config  # readable by older peft
    launch = (out / "tgi-launch.sh").read_text()
    assert "--lora-adapters tgi=/data" in launch and "--model-id /base" in launch
    report = kinfuse.verify(out, **QUIET)
    assert report.ok and report.kind == "adapter" and report.max_abs_diff <= report.tolerance, report.summary()
    print(f"\ntgi-adapter: {report.summary()}")


def test_sagemaker_tar_and_folder(run, tmp_path):
    out = kinfuse.export(run, format="sagemaker", out=tmp_path / "sm", max_shard_size="100KB", **QUIET)
    assert sorted(p.name for p in out.iterdir()) == ["deploy.py", "kinfuse_export.json", "model.tar.gz", "tgi-launch.sh"]
    with tarfile.open(out / "model.tar.gz") as archive:
        members = archive.getmembers()
    names = [m.name for m in members]
    assert all(m.isfile() and "/" not in m.name for m in members), names  # every file at the archive root
    assert "config.json" in names and "model.safetensors.index.json" in names
    assert sum(n.endswith(".safetensors") for n in names) >= 2  # sharded at 100 KB
    assert ex.check_tar(out / "model.tar.gz") == []
    assert "tar -xzf model.tar.gz" in (out / "tgi-launch.sh").read_text()

    report = kinfuse.verify(out, compare=False, **QUIET)  # extracts the archive, checks the files in it
    assert report.ok and report.kind == "sagemaker", report.summary()

    flat = kinfuse.export(run, format="sagemaker", out=tmp_path / "sm-flat", tar=False, **QUIET)
    assert (flat / "model" / "config.json").is_file() and not (flat / "model.tar.gz").exists()
    assert cli(["verify", str(flat), "--files-only"]) == 0

    # the file rules catch what TGI or SageMaker would trip on
    (flat / "model" / "training_args.bin").write_bytes(b"x")
    (flat / "model" / "adapter_model.safetensors").write_bytes(b"x")
    config = json.loads((flat / "model" / "config.json").read_text())
    (flat / "model" / "config.json").write_text(json.dumps({**config, "quantization_config": {"load_in_4bit": True}}))
    with pytest.raises(ex.VerifyError) as failed:
        kinfuse.verify(flat, compare=False, **QUIET)
    problems = " | ".join(failed.value.report.problems)
    assert "training_args.bin" in problems and "'adapter'" in problems and "quantization_config" in problems
    with tarfile.open(tmp_path / "nested.tar.gz", "w:gz") as archive:
        archive.add(flat / "model", arcname="model")
    assert any("not at the archive root" in p for p in ex.check_tar(tmp_path / "nested.tar.gz"))


def test_deploy_script_drives_the_sagemaker_sdk(run, tmp_path, monkeypatch):
    out = kinfuse.export(run, format="sagemaker", out=tmp_path / "sm", tar=False, **QUIET)
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
    assert [ex.suggest_instance(int(b * 1e9)) for b in (0.1, 3, 7, 13, 70)] == [
        ("ml.g5.xlarge", 1), ("ml.g5.xlarge", 1), ("ml.g5.2xlarge", 1), ("ml.g5.12xlarge", 4), ("ml.p4d.24xlarge", 8)]


def test_upload_to_s3(run, tmp_path, monkeypatch):
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
        out = kinfuse.export(run, format="sagemaker", out=tmp_path / "sm", upload="s3://models/kinfuse/run1", **QUIET)
        body = s3.get_object(Bucket="models", Key="kinfuse/run1/model.tar.gz")["Body"].read()
        assert body == (out / "model.tar.gz").read_bytes()
        assert "MODEL_DATA = 's3://models/kinfuse/run1/model.tar.gz'" in (out / "deploy.py").read_text()

        flat = kinfuse.export(run, format="sagemaker", out=tmp_path / "flat", tar=False, upload="s3://models/flat",
                              **QUIET)
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="models", Prefix="flat/")["Contents"]}
        assert keys == {f"flat/{p.name}" for p in (flat / "model").iterdir()} and "flat/config.json" in keys
        with pytest.raises(ex.ExportError, match="upload to s3://no-such-bucket"):
            kinfuse.export(run, format="tgi-adapter", out=tmp_path / "t", upload="s3://no-such-bucket/x", **QUIET)
        assert (tmp_path / "t" / "adapter_model.safetensors").is_file()  # the local export stays
    finally:
        server.stop()


# -- adapters outside plain LoRA: DoRA, tied embeddings ----------------------------------------------


def test_dora_is_refused_for_tgi_and_merges_exactly(tiny_model, tiny_tokenizer, tmp_path):
    dora = hand_run(tmp_path / "dora", tiny_model, tiny_tokenizer, quantize="nf4", use_dora=True,
                    target_modules=["q_proj", "v_proj", "down_proj"])
    with pytest.raises(ex.ExportError, match=r"(?s)DoRA.*--format merged"):
        kinfuse.export(dora, format="tgi-adapter", out=tmp_path / "tgi", **QUIET)
    assert not (tmp_path / "tgi").exists()
    out = kinfuse.export(dora, format="merged", out=tmp_path / "merged", **QUIET)
    diff, tol = inprocess_diff(out, dora, "nf4", tiny_tokenizer)
    assert diff <= tol, (diff, tol)


def test_tgi_rules():
    lora = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "bias": "none"}
    keys = [f"base_model.model.model.layers.{i}.self_attn.{m}.lora_{ab}.weight"
            for i in range(2) for m in ("q_proj", "v_proj") for ab in "AB"]
    assert ex.tgi_adapter_problems(lora, keys, 2) == []
    assert "rank_pattern" in ex.tgi_adapter_problems({**lora, "rank_pattern": {"q_proj": 4}}, keys)[0]
    assert "modules_to_save" in ex.tgi_adapter_problems({**lora, "modules_to_save": ["lm_head"]}, keys)[0]
    other = keys + ["base_model.model.model.layers.0.self_attn.qkv.lora_A.weight",
                    "base_model.model.model.layers.0.self_attn.qkv.lora_B.weight"]
    assert any("['qkv']" in p for p in ex.tgi_adapter_problems(lora, other, 2))
    assert any("only some layers" in p for p in ex.tgi_adapter_problems(lora, keys[:4] + keys[6:], 2))
    embed = ["base_model.model.model.embed_tokens.weight"]
    assert any("full tensor" in p for p in ex.tgi_adapter_problems(lora, keys + embed, 2))


def test_tied_embeddings_stay_tied_or_are_untied(tiny_model, tiny_tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    # the tiny model with its output layer tied to the embeddings, as SmolLM2 has it
    tied = tmp_path / "tied"
    tied.mkdir()
    for f in Path(tiny_model).iterdir():
        (tied / f.name).write_bytes(f.read_bytes())
    config = json.loads((tied / "config.json").read_text())
    (tied / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    weights = load_file(tied / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, tied / "model.safetensors", metadata={"format": "pt"})

    plain = hand_run(tmp_path / "plain", str(tied), tiny_tokenizer, target_modules=["q_proj", "o_proj"])
    out = kinfuse.export(plain, format="merged", out=tmp_path / "m1", **QUIET)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    assert "lm_head.weight" not in json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    diff, tol = inprocess_diff(out, plain, "none", tiny_tokenizer)
    assert diff <= tol, (diff, tol)

    # LoRA on the output layer (and the embeddings) breaks the tie: both are written, untied
    head = hand_run(tmp_path / "head", str(tied), tiny_tokenizer, seed=1,
                    target_modules=["q_proj", "lm_head", "embed_tokens"])
    out = kinfuse.export(head, format="merged", out=tmp_path / "m2", **QUIET)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= set(weight_map)
    diff, tol = inprocess_diff(out, head, "none", tiny_tokenizer)
    assert diff <= tol, (diff, tol)
    with pytest.raises(ex.ExportError, match="embeddings"):
        kinfuse.export(head, format="tgi-adapter", out=tmp_path / "t", **QUIET)


# -- bad input --------------------------------------------------------------------------------------


def test_bad_input(run, tmp_path, capsys):
    no_adapter = tmp_path / "no-adapter"
    no_adapter.mkdir()
    (no_adapter / "metrics.json").write_text("{}")
    with pytest.raises(ex.ExportError, match="has no adapter"):
        kinfuse.export(no_adapter, format="merged", out=tmp_path / "x", **QUIET)
    with pytest.raises(ex.ExportError, match="no such run"):
        kinfuse.export(tmp_path / "nope", format="merged", out=tmp_path / "x", **QUIET)

    moved = tmp_path / "moved"
    (moved / "adapter").mkdir(parents=True)
    for f in (run / "adapter").iterdir():
        (moved / "adapter" / f.name).write_bytes(f.read_bytes())
    metrics = json.loads((run / "metrics.json").read_text())
    (moved / "metrics.json").write_text(json.dumps({**metrics, "model": str(tmp_path / "gone-base")}))
    with pytest.raises(ModelError, match="no such model folder.*gone-base"):
        kinfuse.export(moved, format="merged", out=tmp_path / "x", **QUIET)
    assert cli(["export", str(moved), "--format", "tgi-adapter", "--out", str(tmp_path / "x")]) == 2
    assert "gone-base" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(ex.ExportError, match="exists: pass --overwrite"):
        kinfuse.export(run, format="tgi-adapter", out=taken, **QUIET)
    kinfuse.export(run, format="tgi-adapter", out=taken, overwrite=True, **QUIET)
    assert (taken / "adapter_config.json").is_file()
    with pytest.raises(ex.ExportError, match="holds the source"):
        kinfuse.export(run / "adapter", format="tgi-adapter", out=run, overwrite=True, **QUIET)
    with pytest.raises(ex.ExportError, match="choose one of"):
        kinfuse.export(run, format="gguf", out=tmp_path / "y", **QUIET)


def test_full_disk_leaves_no_export(run, tmp_path, monkeypatch):
    good = kinfuse.export(run, format="merged", out=tmp_path / "out", **QUIET)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    real_write = ex._write_shard
    calls = []

    def full_disk(path, tensors, metadata):
        calls.append(path)
        if len(calls) == 2:
            real_write(path, dict(list(tensors.items())[:1]), metadata)  # a partial file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, tensors, metadata)

    monkeypatch.setattr(ex, "_write_shard", full_disk)
    with pytest.raises(ex.ExportError, match="disk filled up"):
        kinfuse.export(run, format="merged", out=tmp_path / "new", max_shard_size=50_000, **QUIET)
    assert len(calls) == 2 and not (tmp_path / "new").exists()
    calls.clear()
    with pytest.raises(ex.ExportError, match="disk filled up"):  # an overwrite that fails keeps the old export
        kinfuse.export(run, format="merged", out=good, overwrite=True, max_shard_size=50_000, **QUIET)
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial folders left beside it
