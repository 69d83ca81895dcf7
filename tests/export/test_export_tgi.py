"""TGI (kinfuse.export.tgi): the tgi-adapter export verified, and TGI's rules for LoRA adapters."""

from __future__ import annotations

import json

import kinfuse
from kinfuse.cli import main as cli
from kinfuse.export.tgi import tgi_adapter_problems


def test_tgi_adapter_verifies(run, tmp_path, capsys, quiet):
    assert cli(["export", str(run / "adapter"), "--format", "tgi-adapter", "--out", str(tmp_path / "tgi")]) == 0
    out = tmp_path / "tgi"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tgi-launch.sh"} <= {
        p.name for p in out.iterdir()}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and "alora_invocation_tokens" not in config  # readable by older peft
    launch = (out / "tgi-launch.sh").read_text()
    assert "--lora-adapters tgi=/data" in launch and "--model-id /base" in launch
    report = kinfuse.verify(out, **quiet)
    assert report.ok and report.kind == "adapter" and report.max_abs_diff <= report.tolerance, report.summary()
    print(f"\ntgi-adapter: {report.summary()}")


def test_tgi_rules():
    lora = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "bias": "none"}
    keys = [f"base_model.model.model.layers.{i}.self_attn.{m}.lora_{ab}.weight"
            for i in range(2) for m in ("q_proj", "v_proj") for ab in "AB"]
    assert tgi_adapter_problems(lora, keys, 2) == []
    assert "rank_pattern" in tgi_adapter_problems({**lora, "rank_pattern": {"q_proj": 4}}, keys)[0]
    assert "modules_to_save" in tgi_adapter_problems({**lora, "modules_to_save": ["lm_head"]}, keys)[0]
    other = keys + ["base_model.model.model.layers.0.self_attn.qkv.lora_A.weight",
                    "base_model.model.model.layers.0.self_attn.qkv.lora_B.weight"]
    assert any("['qkv']" in p for p in tgi_adapter_problems(lora, other, 2))
    assert any("only some layers" in p for p in tgi_adapter_problems(lora, keys[:4] + keys[6:], 2))
    embed = ["base_model.model.model.embed_tokens.weight"]
    assert any("full tensor" in p for p in tgi_adapter_problems(lora, keys + embed, 2))
