"""RMSNorm with Llama semantics as a Triton op: forward, and backward for x and weight.

What it computes (the pure-torch statement is `kinfuse.kernels.reference.rms_norm`, which is
HF's LlamaRMSNorm): per row of x (..., H),

    rstd = 1 / sqrt(mean(x_fp32 ** 2) + eps)
    y    = weight * (x_fp32 * rstd).to(x.dtype)

All arithmetic is fp32; the normalised row is rounded to x's dtype before the weight multiply,
exactly where LlamaRMSNorm rounds it, so half-precision outputs match HF's to the last bit but
for the rsqrt. The output dtype is torch.promote_types(x.dtype, weight.dtype), as in HF.

Layout: one program per row in the forward (a whole row fits one block: H <= 65536). The
backward runs a fixed number of programs, each walking a strided set of rows and summing its
share of dweight in fp32 registers; the partial sums (programs, H) are added up by torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import require_device

MAX_HIDDEN = 65536  # one row must fit one block of registers


def _num_warps(block: int) -> int:
    # More warps for wider rows so each thread holds a bounded number of elements.
    return 32 if block >= 32768 else 16 if block >= 8192 else 8 if block >= 2048 else 4


@triton.jit
def _rms_norm_fwd_kernel(
    X, W, Y, RSTD,  # X (N, H) in, W (H,), Y (N, H) out, RSTD (N,) fp32 out
    stride_x, stride_y, n_cols, eps,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)  # (BLOCK,)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    # LlamaRMSNorm rounds the normalised row to the input dtype before the weight multiply.
    xn = (x * rstd).to(X.dtype.element_ty).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, (xn * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _rms_norm_bwd_kernel(
    DY, X, W, RSTD, DX, DW_PARTIAL,  # DY (N, H), X (N, H), W (H,), RSTD (N,), DX (N, H), DW_PARTIAL (G, H) fp32
    stride_dy, stride_x, stride_dx, n_rows, n_cols, rows_per_program,
    BLOCK: tl.constexpr, HAS_DW: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)  # (BLOCK,)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    first = pid * rows_per_program
    last = tl.minimum(first + rows_per_program, n_rows)
    # Row pointers advance by their strides each step: 64-bit pointer arithmetic, no int32 row * stride.
    first64 = first.to(tl.int64)
    dy_ptr = DY + first64 * stride_dy
    x_ptr = X + first64 * stride_x
    dx_ptr = DX + first64 * stride_dx
    for r in range(first, last):
        dy = tl.load(dy_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + r)
        xn = x * rstd
        g = dy * w  # grad w.r.t. the normalised row
        # d/dx of x * rstd(x): rstd * (g - xn * mean(g * xn)); padding lanes are 0 in g and xn.
        dx = rstd * (g - xn * (tl.sum(g * xn, axis=0) / n_cols))
        tl.store(dx_ptr + cols, dx.to(DX.dtype.element_ty), mask=mask)
        if HAS_DW:
            dw += dy * xn.to(X.dtype.element_ty).to(tl.float32)  # the weight saw the rounded row
        dy_ptr += stride_dy
        x_ptr += stride_x
        dx_ptr += stride_dx
    if HAS_DW:
        tl.store(DW_PARTIAL + pid * n_cols + cols, dw, mask=mask)


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dim() < 1 or weight.dim() != 1 or x.shape[-1] != weight.shape[0]:
        raise ValueError(
            f"rms_norm: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not match: weight must be "
            f"1-D with x.shape[-1] elements"
        )
    if x.shape[-1] > MAX_HIDDEN:
        raise ValueError(f"rms_norm: hidden size {x.shape[-1]} is over {MAX_HIDDEN}; use kinfuse.kernels.reference.rms_norm")
    if x.device != weight.device:
        raise ValueError(f"rms_norm: x is on {x.device} but weight on {weight.device}; move both to one device")
    require_device("rms_norm", x.device, _rms_norm_fwd_kernel)


def _bwd_programs(n_rows: int, device: torch.device) -> int:
    if device.type == "cuda":
        # A few programs per SM keeps every SM busy while the (G, H) partial-dweight buffer stays small.
        return max(1, min(n_rows, 4 * torch.cuda.get_device_properties(device).multi_processor_count))
    return max(1, min(n_rows, 4))


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # (N, H)
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        n_rows, n_cols = x2.shape
        w = weight.contiguous()
        y = torch.empty((n_rows, n_cols), dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)  # (N,)
        block = triton.next_power_of_2(n_cols)
        if n_rows:
            _rms_norm_fwd_kernel[(n_rows,)](
                x2, w, y, rstd, x2.stride(0), y.stride(0), n_cols, eps, BLOCK=block, num_warps=_num_warps(block)
            )
        ctx.save_for_backward(x2, w, rstd)
        ctx.shape = shape
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, w, rstd = ctx.saved_tensors
        n_rows, n_cols = x2.shape
        dy2 = dy.reshape(n_rows, n_cols)
        if dy2.stride(-1) != 1:
            dy2 = dy2.contiguous()
        dx = torch.empty_like(x2)  # (N, H), x's dtype
        need_dw = ctx.needs_input_grad[1]
        programs = _bwd_programs(n_rows, x2.device)
        dw_partial = torch.empty((programs, n_cols) if need_dw else (1, 1), dtype=torch.float32, device=x2.device)
        block = triton.next_power_of_2(n_cols)
        if n_rows:
            _rms_norm_bwd_kernel[(programs,)](
                dy2, x2, w, rstd, dx, dw_partial, dy2.stride(0), x2.stride(0), dx.stride(0), n_rows, n_cols,
                triton.cdiv(n_rows, programs), BLOCK=block, HAS_DW=need_dw, num_warps=_num_warps(block),
            )
        dw = None
        if need_dw:
            dw = (dw_partial.sum(0) if n_rows else torch.zeros(n_cols, device=x2.device)).to(w.dtype)
        return dx.view(ctx.shape), dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm of x (..., H) with weight (H,): fp32 math, HF's rounding and output dtype.

    Gradients flow to x and (when it requires grad) weight.
    """
    _check(x, weight)
    return RMSNormFunction.apply(x, weight, float(eps))
