"""kinfuse.train.loop: the loss falls, accumulation equals one big batch, first/final loss,
eval loss and the loss curve, and how a run stops: SIGTERM (with a checkpoint), a NaN loss,
running out of memory; activation offload leaves the gradients unchanged."""

import pytest
import torch

from kinfuse import TrainingError
from kinfuse.train.blocks import BlockTensors
from kinfuse.train.loop import forward_backward


@pytest.mark.parametrize("quantize", ["nf4", "none"])
def test_loss_falls_and_result_is_measured(make_trainer, blocks, quantize):
    # the same batch of 2 blocks every step: the loss must fall fast
    trainer = make_trainer(fast=True, max_steps=25, micro_batch_size=2, quantize=quantize, learning_rate=2e-2)
    if quantize == "nf4":
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    result = trainer.train(blocks.select(range(2)))
    assert result.steps == 25 and len(result.history) == 25
    assert result.final_loss < 0.7 * result.first_loss
    assert result.tokens == 25 * sum(blocks.select(range(2))["num_tokens"])
    assert result.tokens_per_second > 0 and result.peak_memory_bytes > 0



def test_gradient_accumulation_normalised_by_tokens(make_trainer, blocks):
    # One step over 2 blocks as one micro-batch, or as 2 accumulated micro-batches: same update.
    grads = []
    for mbs, accum in ((2, 1), (1, 2)):
        trainer = make_trainer(exact=True, fast=True, max_steps=1, micro_batch_size=mbs, grad_accum=accum,
                               max_grad_norm=None)
        trainer.train(blocks.select(range(2)))
        grads.append(torch.cat([p.detach().flatten() for p in trainer.model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_first_and_final_loss_are_cross_entropy_skipping_anchor_only_steps(make_trainer, blocks):
    marked = blocks.select(range(2)).add_column("anchor", [True, False])
    result = make_trainer(exact=True, fast=True, max_steps=4, micro_batch_size=1).train(marked)
    kinds = ["anchor" if "anchor_kl" in r else "text" for r in result.history]
    assert kinds.count("anchor") == 2 and (kinds[0] == "anchor" or kinds[-1] == "anchor")  # the case to test
    text = [r["loss"] for r, k in zip(result.history, kinds) if k == "text"]
    assert (result.first_loss, result.final_loss) == (text[0], text[-1]) and min(text) > 0.1


def test_eval_loss_and_loss_curve(make_trainer, blocks, tmp_path):
    trainer = make_trainer(max_steps=4, quantize="none", eval_every=2, output_dir=str(tmp_path))
    result = trainer.train(blocks.select(range(2)), eval_blocks=blocks.select(range(2, 3)))
    assert [("eval_loss" in r) for r in result.history] == [False, True, False, True]
    png = tmp_path / "loss.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


def test_nan_loss_stops_with_step_and_checkpoint(make_trainer, blocks, tmp_path):
    trainer = make_trainer(max_steps=4, quantize="none", output_dir=str(tmp_path), save_every=1)
    calls = {"n": 0}
    original = trainer.loss_sum

    def poisoned(*args):
        calls["n"] += 1
        loss = original(*args)
        return loss * float("nan") if calls["n"] == 3 else loss

    trainer.loss_sum = poisoned
    with pytest.raises(TrainingError, match=r"step 3.*step-0000002"):
        trainer.train(blocks)


def test_offload_activations_gives_same_gradients_and_offloads_layer_inputs(make_trainer, blocks, monkeypatch):
    trainer = make_trainer(exact=True, fast=True, offload_activations=True)
    # On a CPU the flag does nothing (tensors are in host memory already) ...
    assert trainer.offload_activations is (trainer.device.type == "cuda")
    data, micro = BlockTensors(blocks), [torch.tensor([0, 1])]
    # ... so switch it on by hand: save_on_cpu(pin_memory=True) then copies every saved tensor
    # into a fresh host tensor and back, the same pack/unpack path it takes on CUDA.
    packed: list[tuple[int, ...]] = []
    real = torch.autograd.graph.save_on_cpu

    def counting(*args, **kwargs):
        ctx = real(*args, **kwargs)
        inner = ctx.pack_hook
        ctx.pack_hook = lambda t: (packed.append(tuple(t.shape)), inner(t))[1]
        return ctx

    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", counting)
    grads = []
    for offload in (False, True):
        trainer.offload_activations = offload
        trainer.model.zero_grad(set_to_none=True)
        trainer.model.train()
        forward_backward(trainer, data, micro)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    # the checkpointed decoder-layer inputs, (B, T, H) each, went through the offload hook
    layers, hidden = trainer.model.config.num_hidden_layers, trainer.model.config.hidden_size
    assert packed.count((2, data.length, hidden)) >= layers


def test_out_of_memory_names_memory_and_settings(make_trainer, blocks):
    # no checkpointing, so that each forward runs layer 0 once (no recompute in backward)
    trainer = make_trainer(max_steps=3, micro_batch_size=2, grad_accum=2, quantize="none", gradient_checkpointing=False)
    calls = {"n": 0}

    def explode(module, args, output):  # the 3rd forward (step 2, first micro-batch) runs out of memory
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    trainer.model.get_base_model().get_decoder().layers[0].register_forward_hook(explode)
    with pytest.raises(TrainingError) as e:
        trainer.train(blocks)
    msg = str(e.value)
    assert isinstance(e.value.__cause__, torch.OutOfMemoryError)
    assert "out of memory at step 2" in msg and "GiB" in msg
    for setting in ("micro_batch_size (now 2)", "grad_accum (now 2)", "block_size=32", "quantize='nf4'",
                    "gradient_checkpointing on"):
        assert setting in msg, setting
