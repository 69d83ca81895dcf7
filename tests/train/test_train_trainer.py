"""kinfuse.train.trainer: QLoRATrainer end to end: the saved adapter loads with plain peft, and
bad input (a missing model, blocks it cannot train on) is refused with a way out."""

import datasets
import pytest
import torch

from kinfuse import KinfuseError, ModelError, TrainingError


def test_saved_adapter_loads_with_plain_peft(make_trainer, tiny_model, blocks, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer = make_trainer(exact=True, fast=True, max_steps=5)
    trainer.train(blocks)
    path = trainer.save_adapter(tmp_path / "adapter")
    assert (path / "adapter_model.safetensors").is_file() and (path / "adapter_config.json").is_file()
    ids = torch.tensor(blocks[:1]["input_ids"])
    with torch.no_grad():
        ours = trainer.model(input_ids=ids.to(trainer.device)).logits.cpu()
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), path).eval()
        theirs = loaded(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_bad_input(make_trainer, tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        make_trainer(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="no-such-org/no-such-model"):
        make_trainer("no-such-org/no-such-model")
    trainer = make_trainer(quantize="none")
    with pytest.raises(TrainingError, match="empty"):
        trainer.train(datasets.Dataset.from_dict({"input_ids": [], "labels": []}))
    with pytest.raises(TrainingError, match="empty"):
        trainer.train(None)
    with pytest.raises(TrainingError, match="lack the 'labels' column.*Chunker"):
        trainer.train(datasets.Dataset.from_dict({"input_ids": [[1] * 8]}))
    too_long = datasets.Dataset.from_dict({"input_ids": [[1] * 600], "labels": [[1] * 600]})
    with pytest.raises(TrainingError, match="block size 600 is over the model's maximum length 512.*block_size=512"):
        trainer.train(too_long)
    assert issubclass(TrainingError, KinfuseError)
