"""kinfuse.kernels dispatch: resolve(), patch_model()/undo() on the tiny Llama, and training
with kernels="triton" (Triton's interpreter on a CPU) against kernels="none"."""

from __future__ import annotations

import logging
import sys

import pytest

from kernel_cases import torch  # noqa: E402  (skips without triton)

import kinfuse.kernels as K  # noqa: E402
from kinfuse import Chunker, ConfigError, QLoRATrainer, TrainConfig  # noqa: E402

# Every module family the tiny Llama has (2 layers): 7 LoRA Linear4bit per layer, 2 norms per
# layer + the final one, one MLP and one attention per layer.
ALL_OPS = {"qlora_linear": 14, "rms_norm": 5, "swiglu": 2, "apply_rotary": 2}
FAST = dict(progress=False, learning_rate=5e-3, lr_schedule="constant", compute_dtype="float32", kernels="none")


@pytest.fixture(scope="module")
def blocks(tiny_tokenizer, sample_text):
    # 16-token blocks: Triton's interpreter runs each program in Python, so tokens cost time.
    return Chunker(tiny_tokenizer, block_size=16)([{"text": t} for t in sample_text.splitlines()])


def test_resolve(monkeypatch):
    assert K.triton_available()
    assert K.resolve("auto", "cpu") == "torch"  # the reference on a CPU, interpreter or not
    assert K.resolve("auto", "cuda") == "triton"
    assert K.resolve("torch", "cuda") == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert K.resolve("triton", "cpu") == "triton"
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(K.KernelError, match="TRITON_INTERPRET=1"):
        K.resolve("triton", "cpu")
    with pytest.raises(K.KernelError, match="choose one of auto, triton, torch"):
        K.resolve("fast", "cpu")
    # Without triton: "auto" falls back to the reference even on CUDA; "triton" says how to install.
    monkeypatch.setitem(sys.modules, "triton", None)
    assert not K.triton_available()
    assert K.resolve("auto", "cuda") == "torch"
    with pytest.raises(K.KernelError, match=r"pip install 'kinfuse\[kernels\]'"):
        K.resolve("triton", "cuda")


def test_importing_kinfuse_loads_neither_triton_nor_torch():
    import subprocess

    code = ("import sys, kinfuse, kinfuse.kernels; "
            "print(sorted(m for m in ('triton', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_validates_kernels():
    assert TrainConfig(kernels="triton").validate().kernels == "triton"
    with pytest.raises(ConfigError) as err:
        TrainConfig(kernels="fast", lora_r=0).validate()
    assert "kernels='fast': choose one of none, auto, triton, torch" in str(err.value)
    assert "lora_r" in str(err.value)  # reported with the other problems, in one pass


def _snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "dicts": {name: sorted(m.__dict__) for name, m in model.named_modules()},
    }


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_patch_and_undo_restore_the_model_exactly(tiny_model, blocks, caplog):
    from transformers.models.llama import modeling_llama

    # kernels="none", NF4 base. Train mode without dropout: deterministic, and bitsandbytes'
    # eval-mode CPU forward would repack the weights (checked below under the patch).
    trainer = QLoRATrainer(tiny_model, TrainConfig(lora_dropout=0.0, **FAST))
    model, stock_rope = trainer.model, modeling_llama.apply_rotary_pos_emb
    model.train()
    ids = torch.tensor(blocks[:2]["input_ids"], device=trainer.device)
    before, logits = _snapshot(model), _logits(model, ids)
    with model.disable_adapter():
        base_logits = _logits(model, ids)

    with caplog.at_level(logging.INFO, logger="kinfuse.kernels"), K.patch_model(model, "triton") as patch:
        assert patch.impl == "triton" and patch.replaced == ALL_OPS and not patch.skipped
        assert modeling_llama.apply_rotary_pos_emb is not stock_rope
        with pytest.raises(K.KernelError, match="already patched"):
            K.patch_model(model, "torch")
        # fp32: the kernels round differently from torch only in the last bits
        torch.testing.assert_close(_logits(model, ids), logits, rtol=1e-5, atol=1e-5)
        with model.disable_adapter():  # the evaluator's "before": the base model alone
            torch.testing.assert_close(_logits(model, ids), base_logits, rtol=1e-5, atol=1e-5)
            model.eval()  # what the evaluator does; the NF4 weights must stay readable by the kernels
            torch.testing.assert_close(_logits(model, ids), base_logits, rtol=1e-5, atol=1e-5)
            model.train()
        layers = [m for m in model.modules() if type(m).__name__ == "Linear4bit" and hasattr(m, "lora_A")]
        assert not any(getattr(m.base_layer.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    assert "qlora_linear x14" in caplog.text

    after = _snapshot(model)
    assert after["dicts"] == before["dicts"]  # no forward left on any instance
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    assert modeling_llama.apply_rotary_pos_emb is stock_rope
    assert torch.equal(_logits(model, ids), logits)
    assert getattr(model, "_kinfuse_kernel_patch", None) is None
    K.patch_model(model, "torch").undo()  # patchable again


def test_missing_op_file_is_skipped_with_a_log_line(tiny_model, monkeypatch, caplog):
    trainer = QLoRATrainer(tiny_model, TrainConfig(**FAST))
    monkeypatch.setitem(K.OP_FILES, "swiglu", "not_written_yet")
    with caplog.at_level(logging.WARNING, logger="kinfuse.kernels"):
        patch = K.patch_model(trainer.model, "triton")
    assert "swiglu" not in patch.replaced and patch.replaced["qlora_linear"] == 14
    assert any("swiglu" in s for s in patch.skipped)
    assert "swiglu not used: kinfuse/kernels/not_written_yet.py is not in this build" in caplog.text
    patch.undo()


def test_training_with_triton_kernels_matches_stock(tiny_model, blocks):
    # Same seed, data and LoRA init; only the ops differ. No dropout: on a CPU the stock path
    # draws its masks with kinfuse.train.lora.BitsDropout, the fused layer as peft does (that the
    # fused layer's masks equal peft's is tested in test_kernels_qlora_linear.py). In fp32 each op matches its stock counterpart to ~1e-6 relative
    # (reduction order in RMSNorm and the cross-entropy's log-sum-exp, the LoRA add in the GEMM
    # epilogue), measured at <1e-6 on these losses after 3 Adam steps; 1e-4 is 100x that and
    # still 1000x below the ~25% the loss moves per step, so a wrong gradient would show.
    cfg = dict(max_steps=3, micro_batch_size=2, lora_dropout=0.0, **FAST)
    runs = {}
    for kernels in ("none", "triton"):
        trainer = QLoRATrainer(tiny_model, TrainConfig(**{**cfg, "kernels": kernels}))
        runs[kernels] = [r["loss"] for r in trainer.train(blocks.select(range(2))).history]
        if kernels == "triton":
            assert trainer.kernel_patch.replaced == ALL_OPS and trainer.fused_ce is not None
            trainer.kernel_patch.undo()
    assert runs["none"][-1] < 0.9 * runs["none"][0]  # it learns: the comparison is not of a flat line
    torch.testing.assert_close(runs["triton"], runs["none"], rtol=1e-4, atol=0)


def test_trainer_default_kernels_are_triton_on_cuda_and_stock_elsewhere(tiny_model):
    trainer = QLoRATrainer(tiny_model, TrainConfig(progress=False))
    assert TrainConfig().kernels == "auto"
    if trainer.device.type == "cuda":
        assert trainer.kernel_patch is not None and trainer.kernel_patch.impl == "triton"
    else:  # the twins are slower than the stock modules on a CPU: "auto" leaves the model as it is
        assert trainer.kernel_patch is None


@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_generation_under_the_kernel_patch_equals_stock(tiny_model, kernels):
    # kernels="auto" patches the model on CUDA for the whole run, so the evaluator generates
    # through the patched modules too: decoding (one new token at a time, KV cache, a padded
    # batch) must give the stock model's tokens.
    prompts = torch.tensor([[0, 0, 5, 9, 14, 3], [7, 21, 4, 11, 8, 2]])  # (B, T), row 0 left-padded
    mask = (prompts != 0).long()
    out = {}
    for mode in ("none", kernels):
        trainer = QLoRATrainer(tiny_model, TrainConfig(**{**FAST, "kernels": mode}))
        trainer.model.eval()
        with torch.no_grad():
            out[mode] = trainer.model.generate(input_ids=prompts.to(trainer.device), attention_mask=mask.to(
                trainer.device), max_new_tokens=6, do_sample=False, pad_token_id=0).cpu()
        if trainer.kernel_patch is not None:
            assert trainer.kernel_patch.replaced == ALL_OPS
            trainer.kernel_patch.undo()
    assert torch.equal(out["none"], out[kernels])
