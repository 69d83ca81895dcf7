import os
from pathlib import Path

import datasets
import pytest
import torch

from kinfuse import Chunker, KinfuseError, ModelError, QLoRATrainer, TrainConfig, TrainingError
from kinfuse.errors import ConfigError
from kinfuse.trainer import _Tensors

FAST = dict(progress=False, lora_dropout=0.0, learning_rate=5e-3, lr_schedule="constant")
# for comparisons at fp32 precision on any device (Triton's fp32 dots may run in tf32 on a GPU)
EXACT = dict(quantize="none", compute_dtype="float32", kernels="none")


@pytest.fixture(scope="module")
def blocks(tiny_tokenizer, sample_text):
    return Chunker(tiny_tokenizer, block_size=64)([{"text": t} for t in sample_text.splitlines()])


@pytest.fixture(scope="module")
def tied_model(tiny_model, tmp_path_factory):
    """The tiny model with lm_head tied to the input embeddings, as SmolLM2 has it."""
    import shutil

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
    with pytest.raises(TrainingError, match="empty"):
        trainer.train(None)
    with pytest.raises(TrainingError, match="lack the 'labels' column.*Chunker"):
        trainer.train(datasets.Dataset.from_dict({"input_ids": [[1] * 8]}))
    too_long = datasets.Dataset.from_dict({"input_ids": [[1] * 600], "labels": [[1] * 600]})
    with pytest.raises(TrainingError, match="block size 600 is over the model's maximum length 512.*block_size=512"):
        trainer.train(too_long)
    assert issubclass(TrainingError, KinfuseError)


def _adapter_bytes(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_" in k or "modules_to_save" in k}


@pytest.mark.parametrize("full", [False, True], ids=["lora", "lora+tied-embeddings"])
def test_resume_is_bitwise_identical_on_cpu(tiny_model, tied_model, blocks, tmp_path, full):
    base = dict(max_steps=6, micro_batch_size=2, quantize="none", progress=False, lora_dropout=0.1,
                learning_rate=5e-3, warmup_steps=2)
    if full:  # the embedding copy and its own optimizer group must resume exactly too
        tiny_model = tied_model
        base.update(train_embeddings=True, train_lm_head=True, embedding_learning_rate=1e-3)
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


class _RunsCode:
    """A pickled object whose loading runs code: what an untrusted state.pt could hold."""
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_resume_never_unpickles_code(tiny_model, blocks, tmp_path, monkeypatch):
    cfg = dict(max_steps=2, quantize="none", progress=False, output_dir=str(tmp_path), save_every=2)
    QLoRATrainer(tiny_model, TrainConfig(**cfg)).train(blocks)
    ckpt = tmp_path / "checkpoints/step-0000002"
    torch.save({"optimizer": _RunsCode()}, ckpt / "state.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingError, match="corrupt"):
        QLoRATrainer(tiny_model, TrainConfig(**cfg, resume_from=str(ckpt))).train(blocks)
    assert not (tmp_path / "pwned").exists()


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


# -- trainable embeddings / lm_head -------------------------------------------------------


def _full_params(trainer):
    return {n: p for n, p in trainer.model.named_parameters() if p.requires_grad and ".modules_to_save." in n}


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_trainable_embeddings_own_lr_and_plain_peft_reload(tiny_model, tied_model, blocks, tmp_path, tied):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = tied_model if tied else tiny_model
    cfg = TrainConfig(max_steps=3, train_embeddings=True, train_lm_head=True, embedding_learning_rate=1e-3,
                      **EXACT, **FAST)
    trainer = QLoRATrainer(model, cfg)
    full = _full_params(trainer)
    base = trainer.model.get_base_model()
    if tied:  # one shared trainable matrix that both the input and the output layer use
        assert len(full) == 1
        (weight,) = full.values()
        assert base.get_output_embeddings().modules_to_save["default"].weight is weight
    else:
        assert sorted(n.split(".modules_to_save")[0].rsplit(".", 1)[-1] for n in full) == ["embed_tokens", "lm_head"]
    groups = trainer._param_groups()
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


def test_tied_embeddings_refuse_training_one_side(tied_model, tiny_model):
    for one in (dict(train_embeddings=True), dict(train_lm_head=True)):
        with pytest.raises(ConfigError, match="ties lm_head to its input embeddings.*set both True or both False"):
            QLoRATrainer(tied_model, TrainConfig(progress=False, quantize="none", **one))
    # untied: either side alone is fine, and only that side trains
    trainer = QLoRATrainer(tiny_model, TrainConfig(progress=False, quantize="none", train_lm_head=True))
    assert [n.split(".modules_to_save")[0] for n in _full_params(trainer)] == ["base_model.model.lm_head"]
    assert trainer._param_groups()[1]["lr"] == pytest.approx(2e-4 / 10)  # default: learning_rate / 10


def test_embedding_config_problems_reported_together():
    with pytest.raises(ConfigError) as e:
        TrainConfig(embedding_learning_rate=0.0).validate()
    assert len(e.value.problems) == 2
    assert any("embedding_learning_rate=0.0: must be > 0" in p for p in e.value.problems)
    assert any("set train_embeddings" in p for p in e.value.problems)


def test_trainable_embeddings_with_nf4_base(tied_model, blocks):
    import bitsandbytes as bnb

    trainer = QLoRATrainer(tied_model, TrainConfig(max_steps=2, train_embeddings=True, train_lm_head=True, **FAST))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    assert len(_full_params(trainer)) == 1
    result = trainer.train(blocks.select(range(2)))
    assert result.steps == 2 and all(r["loss"] == r["loss"] for r in result.history)  # finite, not NaN


# -- activation offload, OOM guard ----------------------------------------------------------


def test_offload_activations_gives_same_gradients_and_offloads_layer_inputs(tiny_model, blocks, monkeypatch):
    trainer = QLoRATrainer(tiny_model, TrainConfig(offload_activations=True, **EXACT, **FAST))
    # On a CPU the flag does nothing (tensors are in host memory already) ...
    assert trainer.offload_activations is (trainer.device.type == "cuda")
    data, micro = _Tensors(blocks), [torch.tensor([0, 1])]
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
        trainer._step(data, micro)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    # the checkpointed decoder-layer inputs, (B, T, H) each, went through the offload hook
    layers, hidden = trainer.model.config.num_hidden_layers, trainer.model.config.hidden_size
    assert packed.count((2, data.length, hidden)) >= layers


def test_out_of_memory_names_memory_and_settings(tiny_model, blocks):
    # no checkpointing, so that each forward runs layer 0 once (no recompute in backward)
    trainer = QLoRATrainer(tiny_model, TrainConfig(max_steps=3, micro_batch_size=2, grad_accum=2, quantize="none",
                                                   gradient_checkpointing=False, progress=False))
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
def test_nf4_load_keeps_no_weight_in_the_checkpoint_memory_map(tied_model):
    # Unquantized weights left as views into the mapped safetensors file would keep every page
    # of it (all read during quantization) resident for the whole run.
    trainer = QLoRATrainer(tied_model, TrainConfig(progress=False, device="cpu"))
    base = trainer.model.get_base_model()
    for name, p in base.named_parameters():
        assert not (_mapping_of(p.data_ptr()) or "").startswith("/"), name
    assert base.get_output_embeddings().weight is base.get_input_embeddings().weight  # still tied


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_cpu_mmap_threshold_is_passed_to_the_allocator(tiny_model, monkeypatch):
    import kinfuse.trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "set_mmap_threshold", lambda n: calls.append(n) or True)
    QLoRATrainer(tiny_model, TrainConfig(progress=False, quantize="none", device="cpu", cpu_mmap_threshold=123456))
    QLoRATrainer(tiny_model, TrainConfig(progress=False, quantize="none", device="cpu", cpu_mmap_threshold=None))
    assert calls == [123456]
    # What the threshold does to glibc's heap is not asserted here: whether a freed buffer
    # stays on "[heap]" depends on which allocator the process ended up with (another
    # library may bring jemalloc), so such a check failed in a full suite run.


def test_training_after_evaluation_takes_the_same_exact_path(tiny_model):
    """bitsandbytes repacks NF4 weights for an inference-only CPU kernel (bf16 absmax) the
    first time a layer runs in eval mode under no_grad, and keeps that layout; kinfuse keeps
    the training layout, so evaluating first changes nothing about the next training step."""
    ids = torch.arange(3, 40).unsqueeze(0)  # (1, T)
    pos = torch.arange(ids.shape[1]).unsqueeze(0)

    def grads(evaluate_first: bool) -> list[torch.Tensor]:
        trainer = QLoRATrainer(tiny_model, TrainConfig(quantize="nf4", progress=False, lora_dropout=0.0))
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


# -- anchor blocks: KL to the base model ----------------------------------------------------


def test_kl_sum_is_kl_to_the_adapter_off_model(tiny_model, blocks):
    import torch.nn.functional as F

    trainer = QLoRATrainer(tiny_model, TrainConfig(**EXACT, **FAST))
    data = _Tensors(blocks.select(range(2)))
    ids, labels, pos = (t.to(trainer.device) for t in (data.ids, data.labels, data.pos))
    trainer.model.train()
    assert trainer.kl_sum(ids, labels, pos).item() == pytest.approx(0.0, abs=1e-6)  # LoRA B starts at zero
    with torch.no_grad():
        for n, p in trainer.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    kl = trainer.kl_sum(ids, labels, pos)
    # the same number from full logits of the two models
    keep = labels[:, 1:] != -100
    with torch.no_grad():
        adapted = trainer.model(input_ids=ids, position_ids=pos).logits[:, :-1][keep].float()
        with trainer.model.disable_adapter():
            base = trainer.model(input_ids=ids, position_ids=pos).logits[:, :-1][keep].float()
    want = (F.softmax(base, -1) * (F.log_softmax(base, -1) - F.log_softmax(adapted, -1))).sum()
    assert kl.item() > 1e-3 and kl.item() == pytest.approx(want.item(), rel=1e-4)
    kl.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in trainer.model.named_parameters()
               if p.requires_grad and "lora_B" in n)


def test_anchor_blocks_train_on_kl_not_cross_entropy(tiny_model, blocks):
    two = blocks.select(range(2))
    marked = two.add_column("anchor", [False, True])
    targets = [int((torch.tensor(r)[1:] != -100).sum()) for r in two["labels"]]  # per block
    # No clipping: Adam's update is then blind to the loss scale, so runs normalised by
    # different target counts follow the same path.
    cfg = dict(max_steps=5, micro_batch_size=2, max_grad_norm=None, **EXACT, **FAST)

    def run(data, **kw):
        return QLoRATrainer(tiny_model, TrainConfig(**cfg, **kw)).train(data).history

    first_only, anchored, zero = run(two.select([0])), run(marked), run(marked, anchor_kl_weight=0.0)
    assert "anchor_kl" not in first_only[0]
    kls = [r["anchor_kl"] for r in anchored]
    assert kls[0] == pytest.approx(0.0, abs=1e-7) and kls[-1] > 1e-4  # the adapter moves off the base
    # the plain block's cross-entropy, over both blocks' targets; the anchor block adds no CE
    scale = sum(targets) / targets[0]
    assert [r["loss"] * scale for r in zero] == pytest.approx([r["loss"] for r in first_only], rel=1e-4)
    assert anchored[0]["loss"] * scale == pytest.approx(first_only[0]["loss"], rel=1e-4)  # KL is 0 at step 1
    # "ce" is the text part of a mixed step: the plain block's own cross-entropy per target
    assert [r["ce"] for r in zero] == pytest.approx([r["loss"] for r in first_only], rel=1e-4)
    # with weight 1 the KL counts (and pulls the adapter back towards the base)
    assert abs(anchored[-1]["loss"] * scale - first_only[-1]["loss"]) > 1e-3


def test_first_and_final_loss_are_cross_entropy_skipping_anchor_only_steps(tiny_model, blocks):
    marked = blocks.select(range(2)).add_column("anchor", [True, False])
    cfg = TrainConfig(max_steps=4, micro_batch_size=1, **EXACT, **FAST)
    result = QLoRATrainer(tiny_model, cfg).train(marked)
    kinds = ["anchor" if "anchor_kl" in r else "text" for r in result.history]
    assert kinds.count("anchor") == 2 and (kinds[0] == "anchor" or kinds[-1] == "anchor")  # the case to test
    text = [r["loss"] for r, k in zip(result.history, kinds) if k == "text"]
    assert (result.first_loss, result.final_loss) == (text[0], text[-1]) and min(text) > 0.1
