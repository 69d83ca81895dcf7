"""Merged exports (kinfuse.export.merge) on the tiny model: the NF4 weights training saw, bit for
bit; DoRA merged exactly; tied embeddings kept tied or untied. Each merged export is loaded with
plain transformers and compared with the reference verify uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import kinfuse
from kinfuse import TrainConfig
from kinfuse.export.errors import ExportError
from kinfuse.export.merge import nf4_roundtrip
from kinfuse.export.source import load_source
from kinfuse.export.verify import PROMPTS, reference_logits, tolerance
from kinfuse.run import RunRecord


def hand_run(path: Path, base: str, tokenizer, *, quantize: str = "none", seed: int = 0, **lora) -> Path:
    """A run dir built by hand: a peft LoRA with random (non-zero) B, saved like kinfuse saves it."""
    from dataclasses import asdict

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
    RunRecord(model=base, quantize=quantize, compute_dtype="float32", device="cpu", chat=False, steps=0,
              status="completed", config={"train": asdict(TrainConfig(quantize=quantize))}).write(path)
    return path


def inprocess_diff(export_dir: Path, run_dir: Path, quantize: str, tokenizer) -> tuple[float, float]:
    """(max |Δlogit|, tolerance) of a merged export loaded with transformers against the reference verify uses."""
    from transformers import AutoModelForCausalLM

    src = load_source(run_dir)
    ids = [tokenizer(t).input_ids for t in PROMPTS]
    reference, _ = reference_logits(src, src.base_path(), quantize, ids)
    model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    worst = (0.0, 1.0)
    with torch.no_grad():
        for row, ref in zip(ids, reference):
            diff = (model(input_ids=torch.tensor([row])).logits[0] - ref).abs().max().item()
            tol = tolerance(ref.abs().max().item(), "bfloat16", "float32")
            worst = max(worst, (diff, tol), key=lambda d: d[0] / d[1])
    return worst


def test_merged_verifies_and_matches_the_nf4_weights_trained(run, tiny_model, tmp_path, quiet):
    out = kinfuse.export(run, format="merged", out=tmp_path / "merged", **quiet)
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

    dtype = getattr(torch, load_source(run).quant_dtype)  # the run's: bf16 on a CPU with native bf16
    model = load_model(tiny_model, quantize="nf4", compute_dtype=dtype, device=torch.device("cpu"))
    with safe_open(str(Path(tiny_model) / "model.safetensors"), "pt") as f:
        for name, module in model.named_modules():
            if isinstance(module, bnb.nn.Linear4bit):
                trained = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
                assert torch.equal(nf4_roundtrip(f.get_tensor(f"{name}.weight"), dtype), trained), name

    report = kinfuse.verify(out, **quiet)  # plain transformers in a subprocess vs base NF4 + adapter
    assert report.ok and report.kind == "merged" and report.prompts == 4, report.summary()
    assert report.max_abs_diff <= report.tolerance
    assert report.adapter_effect > 5 * report.tolerance  # the check can tell the adapter from no adapter
    print(f"\nmerged bf16 (NF4 run): {report.summary()}")


# -- adapters outside plain LoRA: DoRA, tied embeddings ----------------------------------------------


def test_dora_is_refused_for_tgi_and_merges_exactly(tiny_model, tiny_tokenizer, tmp_path, quiet):
    dora = hand_run(tmp_path / "dora", tiny_model, tiny_tokenizer, quantize="nf4", use_dora=True,
                    target_modules=["q_proj", "v_proj", "down_proj"])
    with pytest.raises(ExportError, match=r"(?s)DoRA.*--format merged"):
        kinfuse.export(dora, format="tgi-adapter", out=tmp_path / "tgi", **quiet)
    assert not (tmp_path / "tgi").exists()
    out = kinfuse.export(dora, format="merged", out=tmp_path / "merged", **quiet)
    diff, tol = inprocess_diff(out, dora, "nf4", tiny_tokenizer)
    assert diff <= tol, (diff, tol)


def test_tied_embeddings_stay_tied_or_are_untied(tiny_model, tiny_tokenizer, tmp_path, quiet):
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
    out = kinfuse.export(plain, format="merged", out=tmp_path / "m1", **quiet)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    assert "lm_head.weight" not in json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    diff, tol = inprocess_diff(out, plain, "none", tiny_tokenizer)
    assert diff <= tol, (diff, tol)

    # LoRA on the output layer (and the embeddings) breaks the tie: both are written, untied
    head = hand_run(tmp_path / "head", str(tied), tiny_tokenizer, seed=1,
                    target_modules=["q_proj", "lm_head", "embed_tokens"])
    out = kinfuse.export(head, format="merged", out=tmp_path / "m2", **quiet)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= set(weight_map)
    diff, tol = inprocess_diff(out, head, "none", tiny_tokenizer)
    assert diff <= tol, (diff, tol)
    with pytest.raises(ExportError, match="embeddings"):
        kinfuse.export(head, format="tgi-adapter", out=tmp_path / "t", **quiet)
