"""Rotary position embedding (HF Llama's rotate_half convention) as a Triton op.

What it computes (the pure-torch statement is `kinfuse.kernels.reference.apply_rotary`, which is
transformers' `apply_rotary_pos_emb` with unsqueeze_dim=1): for q (B, Hq, T, D), k (B, Hk, T, D)
and cos/sin (B or 1, T, D), with x1 = x[..., :D/2], x2 = x[..., D/2:],

    y1 = x1 * cos[:D/2] - x2 * sin[:D/2]
    y2 = x2 * cos[D/2:] + x1 * sin[D/2:]

in fp32, rounded once to q's/k's dtype (HF rounds after each product and the sum in half
precision: results a few ulps apart; and where cos is fp32 but q bf16, HF's result is promoted
to fp32 while this op, writing in place, keeps bf16). The forward writes the result into q and k in place (no
new activations; any strides, e.g. HF's view(B, T, H, D).transpose(1, 2)), and returns them. The
backward applies the transpose of that map to the incoming gradients: for HF's cos/sin (the two
halves equal) that is the rotation by -sin. cos and sin get no gradient (HF builds them under
no_grad); passing ones that require grad is an error rather than a silently missing gradient.

Layout: one launch for q and one for k; one program per (batch, position) row, holding all heads
of that position as a (heads, D/2) tile, so cos/sin are read once per row and launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import require_device


@triton.jit
def _rope_kernel(
    XI, XO, COS, SIN,  # XI/XO (B, H, T, D) in/out (may be the same tensor), COS/SIN (B or 1, T, D)
    xi_sb, xi_sh, xi_st, xi_sd, xo_sb, xo_sh, xo_st, xo_sd,
    c_sb, c_st, c_sd, s_sb, s_st, s_sd,
    seq_len, n_heads, half,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, TRANSPOSE: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    b = pid // seq_len
    t = pid % seq_len
    d = tl.arange(0, BLOCK_D)  # (BLOCK_D,) over the first half of the head dim
    d_mask = d < half
    cos = COS + b * c_sb + t * c_st
    sin = SIN + b * s_sb + t * s_st
    c1 = tl.load(cos + d * c_sd, mask=d_mask, other=0.0).to(tl.float32)[None, :]  # (1, BLOCK_D)
    c2 = tl.load(cos + (d + half) * c_sd, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    s1 = tl.load(sin + d * s_sd, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    s2 = tl.load(sin + (d + half) * s_sd, mask=d_mask, other=0.0).to(tl.float32)[None, :]

    h = tl.arange(0, BLOCK_H)[:, None]  # (BLOCK_H, 1)
    mask = (h < n_heads) & d_mask[None, :]  # (BLOCK_H, BLOCK_D)
    xi = XI + b * xi_sb + t * xi_st + h * xi_sh
    xo = XO + b * xo_sb + t * xo_st + h * xo_sh
    x1 = tl.load(xi + d[None, :] * xi_sd, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(xi + (d[None, :] + half) * xi_sd, mask=mask, other=0.0).to(tl.float32)
    if TRANSPOSE:  # the backward: dx1 = dy1*cos1 + dy2*sin2, dx2 = dy2*cos2 - dy1*sin1
        y1 = x1 * c1 + x2 * s2
        y2 = x2 * c2 - x1 * s1
    else:
        y1 = x1 * c1 - x2 * s1
        y2 = x2 * c2 + x1 * s2
    # Every element of this (b, t) row is read above before any is written below, and no
    # other program touches the row: writing in place (XO == XI) is safe.
    tl.store(xo + d[None, :] * xo_sd, y1.to(XO.dtype.element_ty), mask=mask)
    tl.store(xo + (d[None, :] + half) * xo_sd, y2.to(XO.dtype.element_ty), mask=mask)


def _cs_strides(c: torch.Tensor) -> tuple[int, int, int]:
    # cos/sin of batch 1 serve every batch row (HF passes (1, T, D) when positions are shared).
    return (0 if c.shape[0] == 1 else c.stride(0)), c.stride(1), c.stride(2)


def _launch(xi: torch.Tensor, xo: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, transpose: bool) -> None:
    b, n_heads, t, dim = xi.shape
    if xi.numel() == 0:
        return
    half = dim // 2
    block_d, block_h = triton.next_power_of_2(half), triton.next_power_of_2(n_heads)
    num_warps = 8 if block_h * block_d > 4096 else 4  # 32 heads x 64 = 2K elements: 4 warps
    _rope_kernel[(b * t,)](
        xi, xo, cos, sin,
        xi.stride(0), xi.stride(1), xi.stride(2), xi.stride(3), xo.stride(0), xo.stride(1), xo.stride(2), xo.stride(3),
        *_cs_strides(cos), *_cs_strides(sin),
        t, n_heads, half,
        BLOCK_H=block_h, BLOCK_D=block_d, TRANSPOSE=transpose, num_warps=num_warps,
    )


class RotaryFunction(torch.autograd.Function):
    """Rotates one tensor in place. q and k go through it separately: autograd allows a Function
    that writes in place into a view (HF's q is a transposed view) to return only one tensor."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        _launch(x, x, cos, sin, transpose=False)  # in place
        ctx.mark_dirty(x)
        ctx.save_for_backward(cos, sin)
        return x

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        cos, sin = ctx.saved_tensors
        # dy may be shared with other consumers, so the result goes to a fresh tensor rather
        # than overwriting it.
        dx = torch.empty_like(dy)
        _launch(dy, dx, cos, sin, transpose=True)
        return dx, None, None


def _check(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, cos {tuple(cos.shape)}, sin {tuple(sin.shape)}"
    if q.dim() != 4 or k.dim() != 4 or cos.dim() != 3 or sin.dim() != 3:
        raise ValueError(f"apply_rotary: want q (B, Hq, T, D), k (B, Hk, T, D), cos/sin (B, T, D); got {shapes}")
    b, _, t, d = q.shape
    if k.shape[0] != b or k.shape[2] != t or k.shape[3] != d:
        raise ValueError(f"apply_rotary: q and k must agree on B, T and D; got {shapes}")
    if cos.shape != sin.shape or cos.shape[0] not in (1, b) or cos.shape[1:] != (t, d):
        raise ValueError(f"apply_rotary: cos and sin must both be (B or 1, T, D) = ({b} or 1, {t}, {d}); got {shapes}")
    if d % 2:
        raise ValueError(f"apply_rotary: the head dim D={d} must be even (rotate_half splits it in two)")
    if cos.requires_grad or sin.requires_grad:
        raise ValueError("apply_rotary: cos/sin require grad, but this op gives them none; detach them "
                         "(HF builds them under no_grad) or use kinfuse.kernels.reference.apply_rotary")
    devices = {q.device, k.device, cos.device, sin.device}
    if len(devices) != 1:
        raise ValueError(f"apply_rotary: q, k, cos, sin must be on one device; got {sorted(map(str, devices))}")
    require_device("apply_rotary", q.device, _rope_kernel)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (B, Hq, T, D) and k (B, Hk, T, D) by cos/sin (B or 1, T, D), HF Llama convention.

    q and k are overwritten in place and returned (use the returned tensors: the pure-torch
    twin returns new ones). They must not be leaf tensors that require grad (autograd forbids
    in-place writes to those). Gradients flow to q and k, not to cos/sin.
    """
    _check(q, k, cos, sin)
    if q.dtype != k.dtype:
        raise ValueError(f"apply_rotary: q is {q.dtype} but k is {k.dtype}; cast them to one dtype")
    return RotaryFunction.apply(q, cos, sin), RotaryFunction.apply(k, cos, sin)
