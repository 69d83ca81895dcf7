"""kinfuse.kernels rmsnorm / rope / swiglu (Triton) against their pure-torch twins, and the
twins against what transformers runs (LlamaRMSNorm, apply_rotary_pos_emb, LlamaMLP's act).
Odd shapes (H=72, T=13, D=24, 5 query / 3 key heads: no multiple of any block size). On a CPU
the kernels run under TRITON_INTERPRET=1."""

from __future__ import annotations

import pytest

from kernel_cases import torch, DEVICE, DTYPES  # noqa: E402  (skips without triton)

import torch.nn.functional as F  # noqa: E402
from transformers.activations import ACT2FN  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb  # noqa: E402

from kinfuse.kernels import reference  # noqa: E402
from kinfuse.kernels.rmsnorm import rms_norm  # noqa: E402
from kinfuse.kernels.rope import apply_rotary  # noqa: E402
from kinfuse.kernels.swiglu import swiglu  # noqa: E402

# Kernels and twins compute in fp32 but may round at different points (the kernels round once,
# HF's half-precision chains round after each op): a couple of ulps apart.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=4e-3, atol=4e-3),
       torch.bfloat16: dict(rtol=3e-2, atol=3e-2)}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def close(actual, expected, dtype, what):
    scale = max(expected.abs().max().item(), 1e-6)  # relative to the largest entry
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual.float() / scale, expected.float() / scale, **TOL[dtype],
                               msg=lambda m: f"{what} ({dtype}): {m}")


def grads(fn, inputs, upstream):
    """Outputs of fn(*inputs) and the grads of sum(out * upstream) w.r.t. every input."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    sum(((o.float() * u.float()).sum() for o, u in zip(outs, upstream))).backward()
    return [o.detach() for o in outs], [x.grad for x in leaves]


# -- RMSNorm -------------------------------------------------------------------------------


@DTYPES
def test_rms_norm(dtype):
    g = gen(0)
    x = (3 * torch.randn(3, 13, 72, generator=g)).to(DEVICE, dtype)  # 39 rows: the backward splits them unevenly
    w = (1 + 0.5 * torch.randn(72, generator=g)).to(DEVICE, dtype)
    dy = torch.randn(3, 13, 72, generator=g).to(DEVICE, dtype)
    hf = LlamaRMSNorm(72, eps=1e-5).to(DEVICE, dtype)

    def hf_fn(x, w):
        return torch.func.functional_call(hf, {"weight": w}, (x,))  # the module, with w as its weight

    (y_hf,), d_hf = grads(hf_fn, (x, w), (dy,))
    (y_ref,), d_ref = grads(lambda x, w: reference.rms_norm(x, w, 1e-5), (x, w), (dy,))
    (y,), d = grads(lambda x, w: rms_norm(x, w, 1e-5), (x, w), (dy,))
    for name, want, got_ref, got in [("y", y_hf, y_ref, y), ("dx", d_hf[0], d_ref[0], d[0]), ("dw", d_hf[1], d_ref[1], d[1])]:
        torch.testing.assert_close(got_ref, want, rtol=0, atol=0, msg=f"reference {name} differs from HF")
        close(got, got_ref, dtype, f"triton {name}")


def test_rms_norm_frozen_weight_and_mixed_dtypes():
    # QLoRA freezes the norms: no dweight work, no dweight. An fp32 weight on fp16 activations
    # gives an fp32 output, as HF's promotion does.
    g = gen(1)
    x = torch.randn(37, 72, generator=g).to(DEVICE, torch.float16).requires_grad_()
    w = (1 + torch.randn(72, generator=g)).to(DEVICE)
    y = rms_norm(x, w, 1e-6)
    assert y.dtype == torch.float32
    close(y, reference.rms_norm(x.detach(), w, 1e-6), torch.float16, "y")
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float16 and w.grad is None
    with pytest.raises(ValueError, match="weight must be 1-D with x.shape"):
        rms_norm(x, w[:-1], 1e-6)


# -- RoPE ----------------------------------------------------------------------------------


def rope_cache(batch, seq, dim, dtype, shift=0):
    """cos/sin (B, T, D) as LlamaRotaryEmbedding builds them (two equal halves), with per-row
    positions so that batch rows differ."""
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))  # (D/2,)
    pos = torch.arange(seq).float()[None] + shift * torch.arange(batch).float()[:, None]  # (B, T)
    emb = torch.cat([pos[..., None] * inv, pos[..., None] * inv], dim=-1)  # (B, T, D)
    return emb.cos().to(DEVICE, dtype), emb.sin().to(DEVICE, dtype)


@DTYPES
def test_apply_rotary(dtype):
    b, hq, hk, t, d = 2, 5, 3, 13, 24
    g = gen(2)
    # HF's layout: projections viewed as (B, T, H, D) and transposed to (B, H, T, D), not contiguous.
    q = torch.randn(b, t, hq, d, generator=g).to(DEVICE, dtype)
    k = torch.randn(b, t, hk, d, generator=g).to(DEVICE, dtype)
    dq = torch.randn(b, hq, t, d, generator=g).to(DEVICE, dtype)
    dk = torch.randn(b, hk, t, d, generator=g).to(DEVICE, dtype)
    cos, sin = rope_cache(b, t, d, dtype, shift=7)

    def layout(fn):
        # q * 1: a non-leaf, so the in-place kernel may write it; the grads flow back to q, k.
        return lambda q, k: fn((q * 1).transpose(1, 2), (k * 1).transpose(1, 2), cos, sin)

    out_hf, d_hf = grads(layout(apply_rotary_pos_emb), (q, k), (dq, dk))
    out_ref, d_ref = grads(layout(reference.apply_rotary), (q, k), (dq, dk))
    out, d_tri = grads(layout(apply_rotary), (q, k), (dq, dk))
    for name, want, got_ref, got in zip(["q", "k", "dq", "dk"], out_hf + d_hf, out_ref + d_ref, out + d_tri):
        torch.testing.assert_close(got_ref, want, rtol=0, atol=0, msg=f"reference {name} differs from HF")
        close(got, got_ref, dtype, f"triton {name}")


def test_apply_rotary_in_place_shared_positions_and_general_cos():
    # cos/sin of batch 1 broadcast over the batch; halves that differ (not HF's, but the formula
    # must still be apply_rotary_pos_emb's, forward and backward); the result lands in q and k.
    b, hq, hk, t, d = 2, 4, 1, 13, 24
    g = gen(3)
    cos = torch.randn(1, t, d, generator=g).to(DEVICE)
    sin = torch.randn(1, t, d, generator=g).to(DEVICE)
    q0 = torch.randn(b, hq, t, d, generator=g).to(DEVICE)
    k0 = torch.randn(b, hk, t, d, generator=g).to(DEVICE)
    dq = torch.randn(b, hq, t, d, generator=g).to(DEVICE)
    dk = torch.randn(b, hk, t, d, generator=g).to(DEVICE)
    out_ref, d_ref = grads(lambda q, k: apply_rotary_pos_emb(q, k, cos, sin), (q0, k0), (dq, dk))
    out, d_tri = grads(lambda q, k: apply_rotary(q * 1, k * 1, cos, sin), (q0, k0), (dq, dk))
    for name, want, got in zip(["q", "k", "dq", "dk"], out_ref + d_ref, out + d_tri):
        close(got, want, torch.float32, name)
    q, k = q0.clone(), k0.clone()
    q_out, k_out = apply_rotary(q, k, cos, sin)
    assert q_out.data_ptr() == q.data_ptr() and k_out.data_ptr() == k.data_ptr()
    close(q, out_ref[0], torch.float32, "q in place")


def test_apply_rotary_bad_inputs_are_named():
    cos, sin = rope_cache(1, 13, 24, torch.float32)
    q = torch.randn(1, 2, 13, 24, device=DEVICE)
    with pytest.raises(ValueError, match=r"cos and sin must both be \(B or 1, T, D\)"):
        apply_rotary(q, q.clone(), cos[:, :5], sin[:, :5])
    with pytest.raises(ValueError, match="head dim D=23 must be even"):
        apply_rotary(q[..., :23], q[..., :23], cos[..., :23], sin[..., :23])
    with pytest.raises(ValueError, match="cos/sin require grad"):
        apply_rotary(q, q.clone(), cos.requires_grad_(), sin)


# -- SwiGLU --------------------------------------------------------------------------------


@DTYPES
def test_swiglu(dtype):
    g = gen(4)
    gate = (3 * torch.randn(37, 13, 71, generator=g)).to(DEVICE, dtype)  # 34151 elements: a partial last block
    up = torch.randn(37, 13, 71, generator=g).to(DEVICE, dtype)
    dy = torch.randn(37, 13, 71, generator=g).to(DEVICE, dtype)
    act = ACT2FN["silu"]  # what LlamaMLP applies to gate_proj(x)
    (y_hf,), d_hf = grads(lambda a, b: act(a) * b, (gate, up), (dy,))
    (y_ref,), d_ref = grads(reference.swiglu, (gate, up), (dy,))
    (y,), d = grads(swiglu, (gate, up), (dy,))
    for name, want, got_ref, got in [("y", y_hf, y_ref, y), ("dgate", d_hf[0], d_ref[0], d[0]),
                                     ("dup", d_hf[1], d_ref[1], d[1])]:
        torch.testing.assert_close(got_ref, want, rtol=0, atol=0, msg=f"reference {name} differs from HF")
        close(got, got_ref, dtype, f"triton {name}")


def test_swiglu_bad_inputs_are_named():
    a = torch.randn(3, 5, device=DEVICE)
    with pytest.raises(ValueError, match="must have the same shape"):
        swiglu(a, a[:, :4])
    with pytest.raises(ValueError, match="cast them to one dtype"):
        swiglu(a, a.half())
    assert F.silu(a).shape == swiglu(a, a).shape
