"""Fixtures of the training tests: blocks of the sample text, the tiny model with tied
embeddings, and make_trainer (a QLoRATrainer on the tiny model from TrainConfig overrides)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Small, steady runs: no dropout, a learning rate that moves a random model, no decay.
FAST = dict(lora_dropout=0.0, learning_rate=5e-3, lr_schedule="constant")
# Comparisons at fp32 precision on any device (Triton's fp32 dots may run in tf32 on a GPU).
EXACT = dict(quantize="none", compute_dtype="float32", kernels="none")


@pytest.fixture
def make_trainer(tiny_model):
    """make_trainer(model=None, *, fast=False, exact=False, **overrides) -> QLoRATrainer(model
    or the tiny model, TrainConfig(progress=False, **FAST if fast, **EXACT if exact,
    **overrides)); overrides win."""
    from kinfuse import QLoRATrainer, TrainConfig

    def make(model: str | None = None, *, fast: bool = False, exact: bool = False, **overrides):
        fields = {"progress": False, **(FAST if fast else {}), **(EXACT if exact else {}), **overrides}
        return QLoRATrainer(model or tiny_model, TrainConfig(**fields))

    return make


@pytest.fixture(scope="module")
def blocks(tiny_tokenizer, sample_text):
    from kinfuse import Chunker

    return Chunker(tiny_tokenizer, block_size=64)([{"text": t} for t in sample_text.splitlines()])


@pytest.fixture(scope="module")
def tied_model(tiny_model, tmp_path_factory):
    """The tiny model with lm_head tied to the input embeddings, as SmolLM2 has it."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-tied")
    config = AutoConfig.from_pretrained(tiny_model)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    for f in Path(tiny_model).iterdir():
        if "token" in f.name or f.suffix == ".jinja":
            shutil.copy(f, path)
    return str(path)
