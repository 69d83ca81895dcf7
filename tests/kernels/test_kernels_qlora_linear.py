"""kinfuse.kernels.qlora_linear (fused QLoRA linear, W recomputed in backward) against its
torch twin: the output and the gradients of x, A and B, on odd shapes (in=96, out=80, r=6,
7 or 2x5 tokens: no power of two). On a CPU the NF4 kernel runs in Triton's interpreter."""

from __future__ import annotations

import pytest

from kernel_cases import torch, DEVICE, DTYPES  # noqa: E402  (skips without triton)
bnb = pytest.importorskip("bitsandbytes")

import kinfuse.kernels.qlora_linear as fused_module  # noqa: E402
from kinfuse.kernels import reference  # noqa: E402
from kinfuse.kernels.qlora_linear import qlora_linear  # noqa: E402

# Same dequantized W (bit for bit, test_kernels_nf4.py); the fused op adds the LoRA term in
# the GEMM epilogue and sums both input-gradient products in one buffer, so results differ
# by the rounding of a few fp32 ops (fp32) or of the half-precision outputs (fp16/bf16:
# 1-2 ulps of values up to ~10).
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=4e-3, atol=1e-2),
       torch.bfloat16: dict(rtol=2e-2, atol=6e-2)}
IN, OUT, R = 96, 80, 6


def make(dtype, *, lead=(1, 7), bias=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(OUT, IN, generator=g) * 0.2).to(dtype)
    weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=True, quant_type="nf4").to(DEVICE)
    x = torch.randn(*lead, IN, generator=g).to(DEVICE, dtype).requires_grad_()
    a = (torch.randn(R, IN, generator=g) * 0.1).to(DEVICE).requires_grad_()  # fp32 master weights, as the trainer
    b = (torch.randn(OUT, R, generator=g) * 0.1).to(DEVICE).requires_grad_()
    bias_t = (torch.randn(OUT, generator=g) * 0.1).to(DEVICE, dtype) if bias else None
    return weight, x, a, b, bias_t


def run(fn, weight, x, a, b, bias, *, dropout=0.0, seed=0, **kw):
    torch.manual_seed(seed)  # the dropout mask
    y = fn(x, weight, a, b, 1.75, bias=bias, dropout=dropout, training=True, **kw)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(9)).to(y)
    grads = torch.autograd.grad(y, (x, a, b), dy)
    return (y, *grads)


def assert_all_close(got, want, dtype):
    for name, g, w in zip(("y", "dx", "dA", "dB"), got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        torch.testing.assert_close(g.float(), w.float(), **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")


@DTYPES
@pytest.mark.parametrize("lead", [(1, 7), (2, 5)], ids=["7-tokens", "2x5-tokens"])
def test_forward_and_gradients_match_reference(dtype, lead):
    weight, x, a, b, _ = make(dtype, lead=lead)
    got, want = run(qlora_linear, weight, x, a, b, None), run(reference.qlora_linear, weight, x, a, b, None)
    assert got[0].dtype == dtype and got[2].dtype == torch.float32  # y in x's dtype; grads in the master dtype
    assert_all_close(got, want, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_dropout_same_mask_as_reference_and_only_on_the_lora_branch(dtype):
    weight, x, a, b, bias = make(dtype, bias=True)
    got = run(qlora_linear, weight, x, a, b, bias, dropout=0.3, seed=5)
    assert_all_close(got, run(reference.qlora_linear, weight, x, a, b, bias, dropout=0.3, seed=5), dtype)
    # The base term never sees dropout: with B = 0 the LoRA branch is 0 and y is x Wᵀ + bias.
    zero_b = torch.zeros_like(b, requires_grad=True)
    y = qlora_linear(x, weight, a, zero_b, 1.75, bias=bias, dropout=0.3, training=True)
    torch.testing.assert_close(y, reference.qlora_linear(x, weight, a, zero_b, 1.75, bias=bias), rtol=0, atol=0)
    # Not training: no dropout at all.
    off = qlora_linear(x, weight, a, b, 1.75, bias=bias, dropout=0.3, training=False)
    torch.testing.assert_close(off, reference.qlora_linear(x, weight, a, b, 1.75, bias=bias), **TOL[dtype])


def test_backward_keeps_no_dense_weight_and_skips_it_when_x_is_frozen(monkeypatch):
    weight, x, a, b, _ = make(torch.float32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = qlora_linear(x, weight, a, b, 1.75)
    assert saved and not any(t.is_floating_point() and t.numel() >= OUT * IN for t in saved), \
        [tuple(t.shape) for t in saved]  # x (7, 96), h (7, 6), A, B and the packed bytes only

    calls = []
    real = fused_module.nf4_dequantize
    monkeypatch.setattr(fused_module, "nf4_dequantize", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    y = qlora_linear(x, weight, a, b, 1.75)
    y.sum().backward()
    assert len(calls) == 2  # forward, and recomputed for dx
    calls.clear()
    frozen = x.detach()  # the first layer's input (frozen embeddings): no dx, so no dequantization
    qlora_linear(frozen, weight, a, b, 1.75).sum().backward()
    assert len(calls) == 1 and a.grad is not None


def test_autocast_runs_in_the_autocast_dtype():
    # The trainer runs LoRA under autocast on GPUs; here CPU autocast with fp16 stands in.
    weight, x, a, b, _ = make(torch.float32)
    with torch.autocast(DEVICE, dtype=torch.float16):
        got = run(qlora_linear, weight, x, a, b, None)
        want = run(reference.qlora_linear, weight, x, a, b, None)
    assert got[0].dtype == torch.float32  # x's dtype, as peft's layer returns
    assert_all_close(got, want, torch.float16)


def test_bad_inputs_name_the_problem():
    weight, x, a, b, bias = make(torch.float32, bias=True)
    with pytest.raises(ValueError, match="x has 95 features"):
        qlora_linear(x[..., :95], weight, a, b, 1.0)
    with pytest.raises(ValueError, match=r"expected A \(r, 96\) and B \(80, r\)"):
        qlora_linear(x, weight, a, b.t(), 1.0)
    with pytest.raises(ValueError, match="bias is trainable"):
        qlora_linear(x, weight, a, b, 1.0, bias=bias.requires_grad_())
