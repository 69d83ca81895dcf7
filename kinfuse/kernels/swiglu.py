"""SwiGLU (Llama's MLP activation) as a Triton op: silu(gate) * up, forward and backward.

What it computes (the pure-torch statement is `kinfuse.kernels.reference.swiglu`, which is
LlamaMLP's `act_fn(gate_proj(x)) * up_proj(x)`): for gate, up of the same shape (..., I),

    y     = silu(gate).to(dtype) * up              silu(g) = g * sigmoid(g)
    dup   = dy * silu(gate).to(dtype)
    dgate = dy * up * sigmoid(g) * (1 + g * (1 - sigmoid(g)))

in fp32. silu(gate) is rounded to the input dtype before the multiply, where HF's separate
act_fn rounds it, so half-precision outputs match HF's. The op saves gate and up (not the
activation) and recomputes sigmoid in the backward, which writes fresh dgate/dup tensors.

Layout: elementwise over the flattened (contiguous) tensors, BLOCK elements per program.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import require_device

BLOCK = 1024  # elements per program: 4 warps x 32 threads x 8 elements


@triton.jit
def _swiglu_fwd_kernel(G, U, Y, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) flat indices
    mask = offs < n
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    act = (g * tl.sigmoid(g)).to(Y.dtype.element_ty).to(tl.float32)  # HF rounds act_fn's output
    tl.store(Y + offs, (act * u).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(DY, G, U, DG, DU, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    act = (g * sig).to(DU.dtype.element_ty).to(tl.float32)  # the rounded activation `up` was multiplied by
    tl.store(DU + offs, (dy * act).to(DU.dtype.element_ty), mask=mask)
    # d silu(g)/dg = sig + g * sig * (1 - sig)
    tl.store(DG + offs, (dy * u * sig * (1.0 + g * (1.0 - sig))).to(DG.dtype.element_ty), mask=mask)


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        gate, up = gate.contiguous(), up.contiguous()  # (..., I), flat indexing below
        y = torch.empty_like(gate)
        n = gate.numel()
        if n:
            _swiglu_fwd_kernel[(triton.cdiv(n, BLOCK),)](gate, up, y, n, BLOCK=BLOCK, num_warps=4)
        ctx.save_for_backward(gate, up)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        gate, up = ctx.saved_tensors
        dy = dy.contiguous()
        dgate, dup = torch.empty_like(gate), torch.empty_like(up)
        n = gate.numel()
        if n:
            _swiglu_bwd_kernel[(triton.cdiv(n, BLOCK),)](dy, gate, up, dgate, dup, n, BLOCK=BLOCK, num_warps=4)
        return dgate, dup


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate, up of one shape and dtype (..., I); gradients for both."""
    if gate.shape != up.shape:
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the same shape")
    if gate.dtype != up.dtype:
        raise ValueError(f"swiglu: gate is {gate.dtype} but up is {up.dtype}; cast them to one dtype")
    if gate.device != up.device:
        raise ValueError(f"swiglu: gate is on {gate.device} but up on {up.device}; move both to one device")
    require_device("swiglu", gate.device, _swiglu_fwd_kernel)
    return SwiGLUFunction.apply(gate, up)
