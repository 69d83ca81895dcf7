"""Fused output projection + cross-entropy as a Triton op, never building the (N, V) logits.

What it computes (the pure-torch statement is `kinfuse.kernels.reference.fused_linear_cross_entropy`,
which equals `F.cross_entropy((hidden @ weight.T).float(), targets, reduction=...)`):

    loss = sum over rows i with targets[i] != ignore_index of  logsumexp(z_i) - z_i[targets[i]]
    z    = hidden @ weight.T          (N, V), in the inputs' dtype, as HF's lm_head computes it

divided by the number of such rows for reduction="mean".

How (Liger-Kernel's approach): the tokens are cut into chunks of `chunk_size` rows. For each
chunk the forward
  1. computes the chunk's logits z_c = hidden_c @ weight.T  (C, V) with torch's matmul;
  2. runs one Triton program per row that finds max and sum of exp over V in one online pass
     (fp32), writes the row's loss, then overwrites the row of z_c with its gradient
     dL/dz = (softmax(z) - onehot(target)) * scale  (zero for ignored rows);
  3. turns that into grad_hidden_c = dz_c @ weight  (C, H) and, when weight requires grad,
     grad_weight += dz_c.T @ hidden_c  (V, H), accumulated in fp32.
Peak extra memory is one (C, V) chunk plus the (N, H) grad_hidden (and an fp32 (V, H)
grad_weight buffer when the weight is trained). The backward only scales the stored
gradients by the incoming grad_output. Without grad mode (evaluation) step 3 and the
gradient writes are skipped.

Under autocast the matmuls run in the autocast dtype, as nn.Linear's would.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import require_device
from .reference import check_linear_cross_entropy, projection_inputs

MAX_BLOCK_V = 32768  # columns per step of the row loop (fp32 registers: 128 KiB per program)


@triton.jit
def _ce_rows_kernel(
    Z, stride_z, TARGETS, LOSS,  # Z (C, V) logits in, gradients out (in place); TARGETS (C,) int; LOSS (C,) fp32 out
    n_cols, ignore_index, grad_scale,
    BLOCK: tl.constexpr, WRITE_GRAD: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    z_row = Z + row * stride_z
    target = tl.load(TARGETS + row)
    if target == ignore_index:
        tl.store(LOSS + row, 0.0)
        if WRITE_GRAD:  # an ignored row contributes nothing: its gradient row is zero
            for start in range(0, n_cols, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                tl.store(z_row + cols, tl.zeros((BLOCK,), dtype=tl.float32).to(Z.dtype.element_ty),
                         mask=cols < n_cols)
    else:
        # Pass 1: running max m and sum d of exp(z - m) over the row (online softmax, fp32).
        m = float("-inf")
        d = 0.0
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(z_row + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)  # (BLOCK,)
            m_new = tl.maximum(m, tl.max(z, axis=0))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
            m = m_new
        z_target = tl.load(z_row + target).to(tl.float32)  # read before pass 2 overwrites the row
        tl.store(LOSS + row, tl.log(d) + m - z_target)
        if WRITE_GRAD:
            # Pass 2: dL/dz = (softmax(z) - onehot(target)) * grad_scale, written over z.
            for start in range(0, n_cols, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                mask = cols < n_cols
                z = tl.load(z_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
                p = tl.exp(z - m) / d
                p = tl.where(cols == target, p - 1.0, p)
                tl.store(z_row + cols, (p * grad_scale).to(Z.dtype.element_ty), mask=mask)


def _ce_rows(z: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor, ignore_index: int, grad_scale: float,
             write_grad: bool) -> None:
    """Per-row loss of logits z (C, V) into loss (C,); with write_grad, z becomes dloss/dz."""
    n_rows, n_cols = z.shape
    block = min(MAX_BLOCK_V, triton.next_power_of_2(n_cols))
    num_warps = 32 if block >= 32768 else 16 if block >= 8192 else 8 if block >= 2048 else 4
    _ce_rows_kernel[(n_rows,)](
        z, z.stride(0), targets, loss, n_cols, ignore_index, grad_scale,
        BLOCK=block, WRITE_GRAD=write_grad, num_warps=num_warps,
    )


def default_chunk_size(n_tokens: int, hidden_size: int, vocab_size: int) -> int:
    """Rows per chunk such that one (C, V) logits chunk is about the size of hidden (N, H).

    A power of two, at least 1: e.g. N=8192, H=4096 -> 1024 rows for V=32000, 256 for V=128256.
    """
    ratio = triton.cdiv(vocab_size, max(hidden_size, 1))
    return triton.next_power_of_2(max(1, triton.cdiv(n_tokens, ratio)))


class FusedLinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str,
                ignore_index: int, chunk_size: int | None, grad_enabled: bool) -> torch.Tensor:
        n_tokens, hid = hidden.shape
        vocab = weight.shape[0]
        need_h = grad_enabled and ctx.needs_input_grad[0]
        need_w = grad_enabled and ctx.needs_input_grad[1]
        hidden = hidden.contiguous()
        targets = targets.contiguous()
        # One host sync for both: targets out of range would read out of bounds in the kernel,
        # and the mean needs the count of target rows.
        valid = targets != ignore_index  # (N,)
        n_valid, n_bad = (int(x) for x in torch.stack(
            [valid.sum(), (valid & ((targets < 0) | (targets >= vocab))).sum()]).tolist())
        if n_bad:
            bad = targets[valid & ((targets < 0) | (targets >= vocab))][:5].tolist()
            raise ValueError(
                f"fused_linear_cross_entropy: {n_bad} targets are outside [0, {vocab}) and not ignore_index "
                f"({ignore_index}), e.g. {bad}: mask them with ignore_index or check the vocabulary size"
            )
        # For "mean" each row's gradient carries the 1/n_valid of the mean; max(1, .) keeps the
        # gradients at zero (not nan) when every row is ignored, while the loss is nan like torch's.
        grad_scale = 1.0 / max(n_valid, 1) if reduction == "mean" else 1.0
        chunk = chunk_size or default_chunk_size(n_tokens, hid, vocab)
        loss_rows = torch.zeros(n_tokens, dtype=torch.float32, device=hidden.device)  # (N,)
        grad_hidden = torch.empty_like(hidden) if need_h else None  # (N, H)
        grad_weight = torch.zeros((vocab, hid), dtype=torch.float32, device=weight.device) if need_w else None
        write_grad = need_h or need_w
        for start in range(0, n_tokens, chunk):
            end = min(start + chunk, n_tokens)
            h = hidden[start:end]  # (C, H)
            z = h @ weight.t()  # (C, V): logits, then overwritten with their gradient
            _ce_rows(z, targets[start:end], loss_rows[start:end], ignore_index, grad_scale, write_grad)
            if need_h:
                torch.mm(z, weight, out=grad_hidden[start:end])  # (C, V) @ (V, H)
            if need_w:
                grad_weight.add_(z.t() @ h)  # (V, C) @ (C, H), summed in fp32
        loss = loss_rows.sum()
        if reduction == "mean":
            loss = loss / n_valid if n_valid else loss * float("nan")  # torch's mean over no targets is nan
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        # The stored gradients are of the loss itself; the chain rule only scales them (a
        # 0-dim tensor multiply: no host sync).
        dh = grad_hidden * grad_output.to(grad_hidden.dtype) if grad_hidden is not None else None
        dw = (grad_weight * grad_output).to(ctx.weight_dtype) if grad_weight is not None else None
        return dh, dw, None, None, None, None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    reduction: str = "sum",
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of hidden (N, H) @ weight (V, H).T against targets (N,), without (N, V) logits.

    Returns a 0-dim fp32 loss ("sum" or "mean" over non-ignored rows). Gradients flow to
    hidden and, when it requires grad, weight. chunk_size: rows per chunk (default: one chunk
    of logits about the size of hidden, see `default_chunk_size`).
    """
    check_linear_cross_entropy(hidden, weight, targets, reduction, chunk_size)
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"fused_linear_cross_entropy: targets must be integer class ids, got {targets.dtype}")
    if len({hidden.device, weight.device, targets.device}) != 1:
        raise ValueError(
            f"fused_linear_cross_entropy: hidden ({hidden.device}), weight ({weight.device}) and targets "
            f"({targets.device}) must be on one device"
        )
    require_device("fused_linear_cross_entropy", hidden.device, _ce_rows_kernel)
    hidden, weight = projection_inputs(hidden, weight)
    device_type = hidden.device.type
    with torch.autocast(device_type, enabled=False):
        return FusedLinearCrossEntropyFunction.apply(
            hidden, weight, targets, reduction, int(ignore_index), chunk_size, torch.is_grad_enabled()
        )
