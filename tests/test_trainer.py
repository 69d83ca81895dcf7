import datasets
import pytest
import torch

from kinfuse import Chunker, KinfuseError, ModelError, QLoRATrainer, TrainConfig, TrainingError

FAST = dict(progress=False, lora_dropout=0.0, learning_rate=5e-3, lr_schedule="constant")


@pytest.fixture(scope="module")
def blocks(tiny_tokenizer, sample_text):
    return Chunker(tiny_tokenizer, block_size=64)([{"text": t} for t in sample_text.splitlines()])


@pytest.mark.parametrize("quantize", ["nf4", "none"])
def test_loss_falls_and_result_is_measured(tiny_model, blocks, quantize):
    # the same batch of 2 blocks every step: the loss must fall fast
    cfg = TrainConfig(max_steps=25, micro_batch_size=2, quantize=quantize, **{**FAST, "learning_rate": 2e-2})
    trainer = QLoRATrainer(tiny_model, cfg)
    if quantize == "nf4":
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    result = trainer.train(blocks.select(range(2)))
    assert result.steps == 25 and len(result.history) == 25
    assert result.final_loss < 0.7 * result.first_loss
    assert result.tokens == 25 * sum(blocks.select(range(2))["num_tokens"])
    assert result.tokens_per_second > 0 and result.peak_memory_bytes > 0


def test_gradient_accumulation_normalised_by_tokens(tiny_model, blocks):
    # One step over 2 blocks as one micro-batch, or as 2 accumulated micro-batches: same update.
    grads = []
    for mbs, accum in ((2, 1), (1, 2)):
        trainer = QLoRATrainer(tiny_model, TrainConfig(max_steps=1, micro_batch_size=mbs, grad_accum=accum,
                                                       quantize="none", max_grad_norm=None, **FAST))
        trainer.train(blocks.select(range(2)))
        grads.append(torch.cat([p.detach().flatten() for p in trainer.model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_gradient_checkpointing_gives_same_gradients(tiny_model, blocks):
    batch = {k: torch.tensor(blocks[:2][k]) for k in ("input_ids", "position_ids")}
    grads = []
    for ckpt in (True, False):
        trainer = QLoRATrainer(tiny_model, TrainConfig(gradient_checkpointing=ckpt, quantize="none", **FAST))
        trainer.model.train()
        trainer.model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0], grads[1])


def test_saved_adapter_loads_with_plain_peft(tiny_model, blocks, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer = QLoRATrainer(tiny_model, TrainConfig(max_steps=5, quantize="none", **FAST))
    trainer.train(blocks)
    path = trainer.save_adapter(tmp_path / "adapter")
    assert (path / "adapter_model.safetensors").is_file() and (path / "adapter_config.json").is_file()
    ids = torch.tensor(blocks[:1]["input_ids"])
    with torch.no_grad():
        ours = trainer.model(input_ids=ids).logits
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), path).eval()
        theirs = loaded(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_bad_input(tiny_model, tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        QLoRATrainer(str(tmp_path / "missing"), TrainConfig(progress=False))
    with pytest.raises(ModelError, match="no-such-org/no-such-model"):
        QLoRATrainer("no-such-org/no-such-model", TrainConfig(progress=False))
    trainer = QLoRATrainer(tiny_model, TrainConfig(quantize="none", progress=False))
    with pytest.raises(TrainingError, match="empty"):
        trainer.train(datasets.Dataset.from_dict({"input_ids": [], "labels": []}))
    too_long = datasets.Dataset.from_dict({"input_ids": [[1] * 600], "labels": [[1] * 600]})
    with pytest.raises(TrainingError, match="block_size=512"):
        trainer.train(too_long)
    assert issubclass(TrainingError, KinfuseError)
