"""Fixtures of the export tests: a trained QLoRA run folder (adapter + run.json) on the tiny model."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from kinfuse import Chunker, QLoRATrainer, TrainConfig
from kinfuse.run import RunRecord


@pytest.fixture(scope="session")
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
    RunRecord(model=trainer.model_name, quantize=cfg.quantize, compute_dtype=result.compute_dtype, device=result.device,
              chat=False, steps=result.steps,
              status="interrupted" if result.interrupted else "completed", checkpoint=result.checkpoint,
              config={"train": asdict(cfg)}).write(out)
    return out


@pytest.fixture
def quiet() -> dict:
    """Keyword arguments that silence export's and verify's progress messages."""
    return dict(echo=lambda message: None)
