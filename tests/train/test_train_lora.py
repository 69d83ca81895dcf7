"""kinfuse.train.lora: BitsDropout is dropout (right keep rate, unbiased, reproducible, replayed by
gradient checkpointing); the lean LoRA forward equals peft's; both swap into a peft model."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from kinfuse.train.lora import BitsDropout, use_bits_dropout, use_lean_lora_forward


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_keep_rate_and_scale(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1003)  # odd size: the last 64-bit word is only partly used
    out = BitsDropout(p)(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.003
    drop = round(p * 65536) / 65536
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (1 - drop)))


def test_unbiased_and_dtype_kept():
    torch.manual_seed(1)
    x = torch.randn(64, 37, dtype=torch.float64)
    mean = sum(BitsDropout(0.3)(x) for _ in range(4000)) / 4000
    torch.testing.assert_close(mean, x, atol=0.1, rtol=0.1)
    assert BitsDropout(0.3)(x.half()).dtype == torch.float16


def test_same_seed_same_mask_and_masks_differ_between_calls():
    d = BitsDropout(0.1)
    x = torch.randn(33, 17)
    torch.manual_seed(3)
    a, b = d(x), d(x)
    torch.manual_seed(3)
    assert torch.equal(d(x), a)
    assert not torch.equal(a, b)


def test_identity_in_eval_and_at_p0_zeros_at_p1():
    x = torch.randn(5, 7)
    d = BitsDropout(0.4).eval()
    assert d(x) is x
    assert BitsDropout(0.0)(x) is x
    assert torch.equal(BitsDropout(1.0)(x), torch.zeros_like(x))


def test_gradient_is_the_mask_and_checkpoint_replays_it():
    lin = torch.nn.Linear(16, 8)
    d = BitsDropout(0.25)
    x = torch.randn(40, 16, requires_grad=True)

    def f(x):
        return lin(d(x)).square().sum()

    torch.manual_seed(7)
    out = d(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / (1 - round(0.25 * 65536) / 65536))

    grads = []
    for ckpt in (False, True):
        x.grad = None
        torch.manual_seed(11)
        loss = checkpoint(f, x, use_reentrant=False) if ckpt else f(x)
        loss.backward()
        grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[1])  # the recompute drew the same mask


def test_use_bits_dropout_swaps_lora_dropout_only_where_p_positive():
    from peft import LoraConfig, get_peft_model

    base = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1, target_modules=["0", "2"]))
    keys = set(model.state_dict())
    assert use_bits_dropout(model) == 2
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 2 and all(type(m) is BitsDropout and m.p == 0.1 for m in drops)
    assert set(model.state_dict()) == keys  # no weights added or renamed
    assert use_bits_dropout(model) == 0  # already swapped
    model.eval()
    x = torch.randn(3, 8)
    torch.testing.assert_close(model(x), model(x))


def _tiny_lora(quantize: bool, dropout: float):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(64, 96, bias=True), torch.nn.SiLU(), torch.nn.Linear(96, 64, bias=False))
    if quantize:
        import bitsandbytes as bnb

        q = torch.nn.Sequential()
        for i, m in enumerate(base):
            if isinstance(m, torch.nn.Linear):
                lin = bnb.nn.Linear4bit(m.in_features, m.out_features, bias=m.bias is not None,
                                        compute_dtype=torch.float32, quant_type="nf4")
                lin.weight = bnb.nn.Params4bit(m.weight.data.clone(), requires_grad=False, quant_type="nf4")
                if m.bias is not None:
                    lin.bias = torch.nn.Parameter(m.bias.data.clone(), requires_grad=False)
                m = lin.to("cpu")
            q.add_module(str(i), m)
        base = q
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["0", "2"]))
    for n, p in model.named_parameters():
        if "lora_B" in n:  # B starts at zero: give it values so the LoRA branch counts
            torch.nn.init.normal_(p, std=0.1)
    return model


@pytest.mark.parametrize("quantize", [False, True])
def test_lean_lora_forward_matches_peft(quantize):
    model = _tiny_lora(quantize, dropout=0.2)
    if quantize:
        assert model.base_model.model[0].base_layer.weight.quant_state is not None  # really NF4
    x = torch.randn(3, 5, 64)

    def run():
        model.zero_grad()
        torch.manual_seed(5)
        out = model(x)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    want, want_grads = run()
    assert use_lean_lora_forward(model) == 2  # peft's dropout kept: the same masks
    got, grads = run()
    torch.testing.assert_close(got, want)
    for n in want_grads:
        torch.testing.assert_close(grads[n], want_grads[n], msg=lambda m, n=n: f"{n}: {m}")
    with model.disable_adapter():  # falls back to peft's forward, which skips the adapter
        torch.testing.assert_close(model(x), model.get_base_model()(x))
    assert use_lean_lora_forward(model, bits_dropout=True) == 0  # already set: nothing changes
    assert not any(isinstance(m, BitsDropout) for m in model.modules())
    del model.base_model.model[0].forward
    assert use_lean_lora_forward(model, bits_dropout=True) == 1
    assert type(model.base_model.model[0].lora_dropout["default"]) is BitsDropout


def test_lean_lora_forward_runs_under_autocast(monkeypatch):
    """Under CPU bf16 autocast (the trainer's path on CPUs with native bf16) the lean forward
    still takes the case, rather than falling back to peft's, and gives peft's result."""
    model = _tiny_lora(False, dropout=0.0)
    x = torch.randn(3, 5, 64, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got, calls = _peft_then_lean(model, x, monkeypatch)
    assert not calls and got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def _peft_then_lean(model, x, monkeypatch):
    """The tiny LoRA model (its frozen base put in bf16, LoRA kept in fp32) on `x`: peft's output,
    then kinfuse's lean forward's, and the calls peft's forward got while the lean one ran."""
    from peft.tuners.lora import Linear as LoraLinear

    for i in (0, 2):
        model.base_model.model[i].base_layer.to(torch.bfloat16)
    want = model(x)
    use_lean_lora_forward(model)
    calls = []
    peft_forward = LoraLinear.forward
    monkeypatch.setattr(LoraLinear, "forward", lambda self, *a, **k: calls.append(1) or peft_forward(self, *a, **k))
    return want, model(x), calls


def test_bf16_inference_forward_is_peft_within_bf16_and_rowwise(monkeypatch):
    """Inference in bf16 outside autocast (the Evaluator and `kinfuse ask` on a CPU): the LoRA
    product runs in bf16 with F.linear, not peft's fp32 matmuls. It is peft's result to bf16
    rounding, and each row is the same bits whether computed alone or with 31 others (torch's
    fp32 CPU matmuls, which peft uses, do not promise that)."""
    model = _tiny_lora(False, dropout=0.1)
    model.eval()
    x = torch.randn(32, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        want, got, calls = _peft_then_lean(model, x, monkeypatch)
        assert not calls and got.dtype == torch.bfloat16
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
        assert torch.equal(torch.cat([model(x[i : i + 1]) for i in range(32)]), got)
        model.train()  # training (dropout on) and gradients keep the fp32 path
        model(x)
    assert calls
