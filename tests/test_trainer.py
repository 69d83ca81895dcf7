import datasets
import pytest
import torch

from kinfuse import Chunker, KinfuseError, ModelError, QLoRATrainer, TrainConfig, TrainingError

FAST = dict(progress=False, lora_dropout=0.0, learning_rate=5e-3, lr_schedule="constant")
EXACT = dict(quantize="none", compute_dtype="float32")  # for comparisons at fp32 precision on any device


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
                                                       max_grad_norm=None, **EXACT, **FAST))
        trainer.train(blocks.select(range(2)))
        grads.append(torch.cat([p.detach().flatten() for p in trainer.model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_gradient_checkpointing_gives_same_gradients(tiny_model, blocks):
    grads = []
    for ckpt in (True, False):
        trainer = QLoRATrainer(tiny_model, TrainConfig(gradient_checkpointing=ckpt, **EXACT, **FAST))
        batch = {k: torch.tensor(blocks[:2][k], device=trainer.device) for k in ("input_ids", "position_ids")}
        trainer.model.train()
        trainer.model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0], grads[1])


def test_saved_adapter_loads_with_plain_peft(tiny_model, blocks, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer = QLoRATrainer(tiny_model, TrainConfig(max_steps=5, **EXACT, **FAST))
    trainer.train(blocks)
    path = trainer.save_adapter(tmp_path / "adapter")
    assert (path / "adapter_model.safetensors").is_file() and (path / "adapter_config.json").is_file()
    ids = torch.tensor(blocks[:1]["input_ids"])
    with torch.no_grad():
        ours = trainer.model(input_ids=ids.to(trainer.device)).logits.cpu()
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


def _adapter_bytes(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_" in k}


def test_resume_is_bitwise_identical_on_cpu(tiny_model, blocks, tmp_path):
    base = dict(max_steps=6, micro_batch_size=2, quantize="none", progress=False, lora_dropout=0.1,
                learning_rate=5e-3, warmup_steps=2)
    straight = QLoRATrainer(tiny_model, TrainConfig(output_dir=str(tmp_path / "a"), save_every=3, **base))
    full = straight.train(blocks)
    assert (tmp_path / "a/checkpoints/step-0000003/meta.json").is_file() and full.steps == 6

    # A run "interrupted" at step 3 continues from that checkpoint in a fresh process state.
    torch.manual_seed(1234)  # resume must restore RNG state, not depend on it
    resumed = QLoRATrainer(tiny_model, TrainConfig(output_dir=str(tmp_path / "b"),
                                                   resume_from=str(tmp_path / "a/checkpoints/step-0000003"), **base))
    result = resumed.train(blocks)
    assert result.steps == 6 and [r["step"] for r in result.history] == list(range(1, 7))
    a, b = _adapter_bytes(straight), _adapter_bytes(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_mismatched_or_corrupt_checkpoint(tiny_model, blocks, tmp_path):
    cfg = dict(max_steps=2, quantize="none", progress=False, output_dir=str(tmp_path), save_every=2)
    QLoRATrainer(tiny_model, TrainConfig(**cfg)).train(blocks)
    ckpt = tmp_path / "checkpoints/step-0000002"
    other = QLoRATrainer(tiny_model, TrainConfig(**{**cfg, "lora_r": 8}, resume_from=str(ckpt)))
    with pytest.raises(TrainingError, match=r"(?s)does not match.*'r': 16"):
        other.train(blocks)
    (ckpt / "state.pt").write_bytes(b"not a checkpoint")
    again = QLoRATrainer(tiny_model, TrainConfig(**cfg, resume_from=str(ckpt)))
    with pytest.raises(TrainingError, match="corrupt"):
        again.train(blocks)
    with pytest.raises(TrainingError, match="not a kinfuse checkpoint"):
        QLoRATrainer(tiny_model, TrainConfig(**cfg, resume_from=str(tmp_path))).train(blocks)


SIGTERM_CHILD = """
import json, sys
from kinfuse import Chunker, QLoRATrainer, TrainConfig
from transformers import AutoTokenizer
model, out = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(model)
blocks = Chunker(tok, block_size=64)([{"text": "The Zephyr router has four antennas. " * 20}])
trainer = QLoRATrainer(model, TrainConfig(max_steps=100000, quantize="none", progress=False, output_dir=out))
result = trainer.train(blocks, log_path=out + "/log.jsonl")
print(json.dumps({"interrupted": result.interrupted, "steps": result.steps, "checkpoint": result.checkpoint}))
"""


def test_sigterm_leaves_a_loadable_checkpoint(tiny_model, tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    child = subprocess.Popen([sys.executable, "-c", SIGTERM_CHILD, tiny_model, str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["interrupted"] and result["steps"] >= 2
    ckpt = tmp_path / "checkpoints" / f"step-{result['steps']:07d}"
    assert str(ckpt) == result["checkpoint"] and (ckpt / "meta.json").is_file()
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))  # nothing half-written left
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), ckpt / "adapter")


def test_nan_loss_stops_with_step_and_checkpoint(tiny_model, blocks, tmp_path):
    trainer = QLoRATrainer(tiny_model, TrainConfig(max_steps=4, quantize="none", progress=False,
                                                   output_dir=str(tmp_path), save_every=1))
    calls = {"n": 0}
    original = trainer.loss_sum

    def poisoned(*args):
        calls["n"] += 1
        loss = original(*args)
        return loss * float("nan") if calls["n"] == 3 else loss

    trainer.loss_sum = poisoned
    with pytest.raises(TrainingError, match=r"step 3.*step-0000002"):
        trainer.train(blocks)


def test_eval_loss_and_loss_curve(tiny_model, blocks, tmp_path):
    trainer = QLoRATrainer(tiny_model, TrainConfig(max_steps=4, quantize="none", progress=False, eval_every=2,
                                                   output_dir=str(tmp_path)))
    result = trainer.train(blocks.select(range(2)), eval_blocks=blocks.select(range(2, 3)))
    assert [("eval_loss" in r) for r in result.history] == [False, True, False, True]
    png = tmp_path / "loss.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
