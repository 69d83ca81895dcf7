"""Fused QLoRA linear: y = x·Wᵀ + bias + s·(dropout(x)·Aᵀ)·Bᵀ, W an NF4 (bitsandbytes) weight.

Against peft's LoRA Linear4bit + bitsandbytes it saves, per layer:
- memory: backward recomputes the dequantized W (one Triton launch, see nf4.py) instead of
  keeping anything of W's size; only x (after dropout) and h = x·Aᵀ (N, r) are kept;
- work: the LoRA output is added inside the base GEMM's epilogue (addmm with alpha=s), and
  the input gradient's two products g·W and (g·B)·A go into one buffer; when x needs no
  gradient (the first layer's q/k/v, whose input is the frozen embedding) backward does not
  dequantize W at all.

The matmuls are torch's (cuBLAS), not Triton: in training N = batch x block tokens is in
the thousands, so the GEMMs are compute-bound and cuBLAS runs them near peak, while the
dequantization is O(out x in) against the GEMM's O(N x out x in): under 1% of the FLOPs and
one extra bf16 weight write + read. A Triton GEMM that dequantizes tiles on the fly pays off
only at small N (decoding), which training does not hit.

LoRA dropout (p > 0, in training) is peft's: inverted dropout of x on the LoRA branch only,
drawn with F.dropout outside the autograd.Function, so it consumes the RNG exactly as peft's
nn.Dropout does (same mask under the same seed) and autograd routes its gradient. The
Function then takes x and dropout(x) as two inputs; with p = 0 they are the same tensor and
nothing extra is kept.

launcher `qlora_linear` -> `QLoRALinearFunction` (autograd) -> kernel `nf4.nf4_dequantize`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .nf4 import nf4_dequantize
from .reference import compute_dtype_for, nf4_parts


class QLoRALinearFunction(torch.autograd.Function):
    """Gradients for x (and dropout(x)), A and B; W and bias are frozen (no gradient)."""

    @staticmethod
    def forward(ctx, x, xd, packed, lora_A, lora_B, bias, quant_state, scaling, dtype):
        # x, xd (N, in) in dtype: the input and its dropout (xd is x when there is none);
        # packed: the NF4 bytes; lora_A (r, in), lora_B (out, r), bias (out,) or None, in dtype.
        with torch.autocast(x.device.type, enabled=False):  # everything is in dtype already
            w = nf4_dequantize(packed, quant_state, dtype)  # (out, in), freed on return
            y = F.linear(x, w, bias)  # (N, out)
            h = xd @ lora_A.t()  # (N, r)
            y.addmm_(h, lora_B.t(), alpha=scaling)  # y += s * h Bᵀ in the GEMM epilogue
        ctx.save_for_backward(xd, h, packed, lora_A, lora_B)  # packed: a reference, no copy
        ctx.quant_state, ctx.scaling, ctx.dtype, ctx.shared = quant_state, scaling, dtype, xd is x
        return y

    @staticmethod
    def backward(ctx, g):  # g (N, out)
        xd, h, packed, lora_A, lora_B = ctx.saved_tensors
        need_x, need_xd, _, need_A, need_B = ctx.needs_input_grad[:5]
        s = ctx.scaling
        dx = dxd = dA = dB = None
        with torch.autocast(g.device.type, enabled=False):
            g = g.to(ctx.dtype)
            dh = (g @ lora_B).mul_(s)  # (N, r): gradient of h = xd Aᵀ
            if need_A:
                dA = dh.t() @ xd  # (r, in)
            if need_B:
                dB = (g.t() @ h).mul_(s)  # (out, r)
            if need_x:
                w = nf4_dequantize(packed, ctx.quant_state, ctx.dtype)  # (out, in), recomputed
                dx = g @ w  # (N, in)
                if ctx.shared:  # no dropout: x feeds the LoRA branch too
                    dx.addmm_(dh, lora_A)
            if need_xd and not ctx.shared:
                dxd = dh @ lora_A  # (N, in); autograd applies the dropout mask to it
        return dx, dxd, None, dA, dB, None, None, None, None


def qlora_linear(x, weight, lora_A, lora_B, scaling, *, quant_state=None, bias=None, dropout=0.0,
                 training=False, compute_dtype=None):
    """y = x Wᵀ + bias + scaling · (dropout(x) Aᵀ) Bᵀ, W the NF4 base weight, as peft's LoRA
    Linear4bit computes it, with W recomputed in backward (see the module docstring).

    x (..., in); weight: a bitsandbytes Params4bit of an (out, in) weight, or its packed data
    with quant_state; lora_A (r, in); lora_B (out, r); bias (out,) or None (frozen).
    dropout: LoRA dropout probability, applied only when training. Matmuls run in
    `compute_dtype` (default: autocast's dtype when autocast is on, else x's); the result has
    x's dtype. Same signature and result as `kinfuse.kernels.reference.qlora_linear`.
    """
    packed, qs = nf4_parts(weight, quant_state)
    out_f, in_f = qs.shape
    if x.shape[-1] != in_f:
        raise ValueError(f"qlora_linear: x has {x.shape[-1]} features but the NF4 weight is {tuple(qs.shape)} (out, in)")
    if tuple(lora_A.shape[1:]) != (in_f,) or tuple(lora_B.shape) != (out_f, lora_A.shape[0]):
        raise ValueError(f"qlora_linear: lora_A {tuple(lora_A.shape)} / lora_B {tuple(lora_B.shape)} do not fit "
                         f"the weight {tuple(qs.shape)}: expected A (r, {in_f}) and B ({out_f}, r)")
    if bias is not None and bias.requires_grad and torch.is_grad_enabled():
        raise ValueError("qlora_linear: the bias is trainable, but this op treats it as frozen; freeze it "
                         "(bias.requires_grad_(False)) or use peft's stock layer (kernels='none')")
    dtype = compute_dtype_for(x, compute_dtype)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_f).to(dtype)  # (N, in)
    xd = F.dropout(x2, dropout, training=True) if dropout and training else x2  # (N, in)
    y = QLoRALinearFunction.apply(
        x2, xd, packed, lora_A.to(dtype), lora_B.to(dtype), None if bias is None else bias.to(dtype),
        qs, float(scaling), dtype,
    )  # (N, out)
    return y.reshape(*lead, out_f).to(x.dtype)
