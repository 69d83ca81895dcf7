"""kinfuse.train.setup: the model build (gradient checkpointing, trainable embeddings and
their tying, NF4 weights out of the file's memory map, the allocator setting) and the forward
patches (training after evaluation takes the same path)."""

from pathlib import Path

import pytest
import torch

from kinfuse import TrainConfig
from kinfuse.errors import ConfigError
from kinfuse.train.optim import param_groups


def test_gradient_checkpointing_gives_same_gradients(make_trainer, blocks):
    grads = []
    for ckpt in (True, False):
        trainer = make_trainer(exact=True, fast=True, gradient_checkpointing=ckpt)
        batch = {k: torch.tensor(blocks[:2][k], device=trainer.device) for k in ("input_ids", "position_ids")}
        trainer.model.train()
        trainer.model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0], grads[1])


def _full_params(trainer):
    return {n: p for n, p in trainer.model.named_parameters() if p.requires_grad and ".modules_to_save." in n}


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_trainable_embeddings_own_lr_and_plain_peft_reload(make_trainer, tiny_model, tied_model, blocks, tmp_path, tied):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = tied_model if tied else tiny_model
    trainer = make_trainer(model, exact=True, fast=True, max_steps=3, train_embeddings=True, train_lm_head=True,
                           embedding_learning_rate=1e-3)
    full = _full_params(trainer)
    base = trainer.model.get_base_model()
    if tied:  # one shared trainable matrix that both the input and the output layer use
        assert len(full) == 1
        (weight,) = full.values()
        assert base.get_output_embeddings().modules_to_save["default"].weight is weight
    else:
        assert sorted(n.split(".modules_to_save")[0].rsplit(".", 1)[-1] for n in full) == ["embed_tokens", "lm_head"]
    groups = param_groups(trainer.model, trainer.config)
    assert [g["lr"] for g in groups] == [5e-3, 1e-3]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in full.values()}
    assert all(".modules_to_save." not in n for n, p in trainer.model.named_parameters()
               if p.requires_grad and any(p is q for q in groups[0]["params"]))
    before = {n: p.detach().clone() for n, p in full.items()}
    trainer.train(blocks)
    assert all(not torch.equal(before[n], p) for n, p in full.items())  # they did train

    path = trainer.save_adapter(tmp_path / "adapter")
    ids = torch.tensor(blocks[:1]["input_ids"])
    with torch.no_grad():
        ours = trainer.model(input_ids=ids.to(trainer.device)).logits.cpu()
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), path).eval()
        theirs = loaded(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(model).eval()(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours, plain, atol=1e-3)


def test_tied_embeddings_refuse_training_one_side(make_trainer, tied_model):
    for one in (dict(train_embeddings=True), dict(train_lm_head=True)):
        with pytest.raises(ConfigError, match="ties lm_head to its input embeddings.*set both True or both False"):
            make_trainer(tied_model, quantize="none", **one)
    # untied: either side alone is fine, and only that side trains
    trainer = make_trainer(quantize="none", train_lm_head=True)
    assert [n.split(".modules_to_save")[0] for n in _full_params(trainer)] == ["base_model.model.lm_head"]
    assert param_groups(trainer.model, trainer.config)[1]["lr"] == pytest.approx(2e-4 / 10)  # default: learning_rate / 10


def test_embedding_config_problems_reported_together():
    with pytest.raises(ConfigError) as e:
        TrainConfig(embedding_learning_rate=0.0).validate()
    assert len(e.value.problems) == 2
    assert any("embedding_learning_rate=0.0: must be > 0" in p for p in e.value.problems)
    assert any("set train_embeddings" in p for p in e.value.problems)


def test_trainable_embeddings_with_nf4_base(make_trainer, tied_model, blocks):
    import bitsandbytes as bnb

    trainer = make_trainer(tied_model, fast=True, max_steps=2, train_embeddings=True, train_lm_head=True)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    assert len(_full_params(trainer)) == 1
    result = trainer.train(blocks.select(range(2)))
    assert result.steps == 2 and all(r["loss"] == r["loss"] for r in result.history)  # finite, not NaN


def _mapping_of(ptr: int) -> str | None:
    """Name of the memory mapping that holds address `ptr` (Linux /proc/self/maps): a file
    path, "[heap]", or "" for an anonymous mmap; None if unmapped."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= ptr < hi:
            return fields[5] if len(fields) >= 6 else ""
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_nf4_load_keeps_no_weight_in_the_checkpoint_memory_map(make_trainer, tied_model):
    # Unquantized weights left as views into the mapped safetensors file would keep every page
    # of it (all read during quantization) resident for the whole run.
    trainer = make_trainer(tied_model, device="cpu")
    base = trainer.model.get_base_model()
    for name, p in base.named_parameters():
        assert not (_mapping_of(p.data_ptr()) or "").startswith("/"), name
    assert base.get_output_embeddings().weight is base.get_input_embeddings().weight  # still tied


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_cpu_mmap_threshold_is_passed_to_the_allocator(make_trainer, monkeypatch):
    import kinfuse.train.setup as setup_module

    calls = []
    monkeypatch.setattr(setup_module, "set_mmap_threshold", lambda n: calls.append(n) or True)
    make_trainer(quantize="none", device="cpu", cpu_mmap_threshold=123456)
    make_trainer(quantize="none", device="cpu", cpu_mmap_threshold=None)
    assert calls == [123456]
    # What the threshold does to glibc's heap is not asserted here: whether a freed buffer
    # stays on "[heap]" depends on which allocator the process ended up with (another
    # library may bring jemalloc), so such a check failed in a full suite run.


def test_training_after_evaluation_takes_the_same_exact_path(make_trainer):
    """bitsandbytes repacks NF4 weights for an inference-only CPU kernel (bf16 absmax) the
    first time a layer runs in eval mode under no_grad, and keeps that layout; kinfuse keeps
    the training layout, so evaluating first changes nothing about the next training step."""
    ids = torch.arange(3, 40).unsqueeze(0)  # (1, T)
    pos = torch.arange(ids.shape[1]).unsqueeze(0)

    def grads(evaluate_first: bool) -> list[torch.Tensor]:
        trainer = make_trainer(quantize="nf4", lora_dropout=0.0)
        x, p = ids.to(trainer.device), pos.to(trainer.device)
        if evaluate_first:
            trainer.model.eval()
            with torch.no_grad():
                trainer.model(input_ids=x)
            trainer.model.train()
        trainer.loss_sum(x, x, p).backward()
        return [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]

    import bitsandbytes as bnb
    from kinfuse.models import keep_training_layout

    fresh, after_eval = grads(False), grads(True)
    assert all(torch.equal(a, b) for a, b in zip(fresh, after_eval))
    # and a layer already repacked (a model evaluated before kinfuse saw it) goes back to the
    # training layout; its absmax was rounded to bf16 by the repacking, so only closely equal
    layer = bnb.nn.Linear4bit(64, 96, bias=False, compute_dtype=torch.float32, quant_type="nf4").to("cpu")
    assert layer.weight.bnb_quantized
    x = torch.randn(5, 64)
    before = layer(x.requires_grad_()).detach()
    from bitsandbytes.functional import _convert_weight_packed_for_cpu
    layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu(layer.weight.data, layer.weight.quant_state)
    keep_training_layout(layer)
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    assert torch.allclose(layer(x).detach(), before, rtol=2e-2, atol=2e-2)
