"""Pure-torch twins of the Triton ops in this package, with the same signatures.

They are the CPU path, the ground truth the kernel tests compare against, and the readable
statement of what each kernel computes. Shapes are written inline: (N, H) = tokens x hidden.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# -- NF4 dequantization and the fused QLoRA linear (kernels/nf4.py, kernels/qlora_linear.py) --

_BNB_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)


def nf4_parts(weight, quant_state=None):
    """The packed bytes (as uint8, flat) and the bitsandbytes QuantState of an NF4 weight.

    `weight` is a bitsandbytes `Params4bit` (its `quant_state` is used) or its packed data
    with `quant_state` given. Checks everything the NF4 kernels rely on, so both twins fail
    the same way on a layout they do not read.
    """
    qs = quant_state if quant_state is not None else getattr(weight, "quant_state", None)
    if qs is None:
        raise ValueError(
            "nf4: no quant_state: pass a bitsandbytes Params4bit that has been quantized (moved to its "
            "device), or its packed data together with quant_state="
        )
    if getattr(qs, "quant_type", None) != "nf4":
        raise ValueError(f"nf4: quant_type={getattr(qs, 'quant_type', None)!r}; only 'nf4' is supported "
                         "(load the model with bnb_4bit_quant_type='nf4')")
    if getattr(qs, "packing_format_for_cpu", False):
        raise ValueError("nf4: this weight was repacked by bitsandbytes for its AVX512 CPU inference path "
                         "(packing_format_for_cpu); repack it with bitsandbytes' inverse conversion first")
    if qs.blocksize not in _BNB_BLOCKSIZES:
        raise ValueError(f"nf4: blocksize={qs.blocksize} is not a bitsandbytes block size {_BNB_BLOCKSIZES}")
    if len(qs.shape) != 2:
        raise ValueError(f"nf4: quant_state.shape={tuple(qs.shape)}; expected a 2-D (out, in) linear weight")
    data = weight.data if isinstance(weight, torch.nn.Parameter) else weight
    if not data.is_contiguous():
        raise ValueError("nf4: the packed weight is not contiguous (a transposed view?); pass the stored tensor")
    packed = data.view(torch.uint8).reshape(-1)  # (ceil(n/2),): other quant_storage dtypes are the same bytes
    n = qs.shape[0] * qs.shape[1]
    if packed.numel() != (n + 1) // 2:
        raise ValueError(f"nf4: {packed.numel()} packed bytes do not hold a {tuple(qs.shape)} weight "
                         f"({(n + 1) // 2} expected): wrong quant_state for this weight?")
    blocks = -(-n // qs.blocksize)
    if qs.absmax.numel() != blocks:
        raise ValueError(f"nf4: absmax has {qs.absmax.numel()} entries, {blocks} expected for blocksize {qs.blocksize}")
    if qs.nested:
        if qs.absmax.dtype != torch.uint8:
            raise ValueError(f"nf4: double-quantized absmax should be uint8, got {qs.absmax.dtype}")
        if qs.state2.absmax.numel() != -(-blocks // qs.state2.blocksize):
            raise ValueError("nf4: nested absmax2 does not match the number of absmax blocks")
    return packed, qs


def nf4_absmax(quant_state):
    """Per-block fp32 scales (blocks,), undoing double quantization as bitsandbytes does:
    absmax[b] = code2[absmax_u8[b]] * absmax2[b // blocksize2] + offset, in fp32."""
    qs = quant_state
    if not qs.nested:
        return qs.absmax.float()
    s2 = qs.state2
    blocks = qs.absmax.numel()
    scale2 = s2.absmax.float().repeat_interleave(s2.blocksize)[:blocks]  # (blocks,)
    offset = torch.as_tensor(qs.offset, dtype=torch.float32, device=scale2.device)  # () fp32
    return s2.code.float()[qs.absmax.long()] * scale2 + offset


def nf4_dequantize(weight, quant_state=None, dtype=None):
    """bitsandbytes NF4 weight -> dense (out, in) tensor in `dtype` (default: the dtype it was
    quantized from). Element 2i sits in the high nibble of byte i, 2i+1 in the low nibble;
    value = nf4_code[nibble] * absmax[element // blocksize], in fp32, rounded once to dtype."""
    packed, qs = nf4_parts(weight, quant_state)
    out_f, in_f = qs.shape
    n = out_f * in_f
    nibbles = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)[:n].long()  # (n,)
    values = qs.code.to(device=packed.device, dtype=torch.float32)[nibbles]  # (n,)
    scale = nf4_absmax(qs).repeat_interleave(qs.blocksize)[:n]  # (n,)
    return (values * scale).reshape(out_f, in_f).to(dtype or qs.dtype)


def compute_dtype_for(x, compute_dtype=None):
    """The dtype the QLoRA matmuls run in: the one asked for, else autocast's when autocast is
    on for x's device (as peft's LoRA matmuls run under autocast), else x's own dtype."""
    if compute_dtype is not None:
        return compute_dtype
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def qlora_linear(x, weight, lora_A, lora_B, scaling, *, quant_state=None, bias=None, dropout=0.0,
                 training=False, compute_dtype=None):
    """y = x Wᵀ + bias + scaling · (dropout(x) Aᵀ) Bᵀ with W the NF4 base weight, as peft's LoRA
    Linear4bit computes it: dropout (inverted, peft's nn.Dropout) touches the LoRA branch only.

    x (..., in); weight: NF4 Params4bit of an (out, in) weight (or packed data + quant_state);
    lora_A (r, in); lora_B (out, r). Runs in compute_dtype_for(x, compute_dtype); returns x.dtype.
    Plain autograd: it keeps the dequantized W for backward, which the fused op does not.
    """
    dtype = compute_dtype_for(x, compute_dtype)
    w = nf4_dequantize(weight, quant_state, dtype)  # (out, in)
    xc = x.to(dtype)  # (..., in)
    xd = F.dropout(xc, dropout, training=True) if dropout and training else xc
    base = F.linear(xc, w, None if bias is None else bias.to(dtype))  # (..., out)
    lora = F.linear(F.linear(xd, lora_A.to(dtype)), lora_B.to(dtype))  # (..., out)
    return (base + lora * scaling).to(x.dtype)


# -- fused output projection + cross-entropy, RMSNorm, RoPE, SwiGLU (kernels/cross_entropy.py,
#    kernels/rmsnorm.py, kernels/rope.py, kernels/swiglu.py) --


def check_linear_cross_entropy(hidden, weight, targets, reduction, chunk_size):
    """The argument checks fused_linear_cross_entropy and its Triton twin share."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"fused_linear_cross_entropy: reduction={reduction!r} is not supported; use 'sum' or 'mean'")
    if hidden.dim() != 2 or weight.dim() != 2 or targets.dim() != 1 or hidden.shape[1] != weight.shape[1] \
            or targets.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"fused_linear_cross_entropy: want hidden (N, H), weight (V, H), targets (N,); got hidden "
            f"{tuple(hidden.shape)}, weight {tuple(weight.shape)}, targets {tuple(targets.shape)} "
            "(flatten batch and time first: hidden.reshape(-1, H), targets.reshape(-1))"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"fused_linear_cross_entropy: chunk_size={chunk_size} must be a positive row count or None")


def projection_inputs(hidden, weight):
    """hidden and weight in the dtype the output projection runs in: as nn.Linear under
    autocast, the autocast dtype (the casts are autograd ops, so gradients come back in the
    inputs' own dtypes); otherwise they must already share one dtype."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        return hidden.to(dtype), weight.to(dtype)
    if hidden.dtype != weight.dtype:
        raise ValueError(
            f"fused_linear_cross_entropy: hidden is {hidden.dtype} but weight is {weight.dtype}; cast them to one "
            "dtype or run under torch.autocast"
        )
    return hidden, weight


def cpu_chunk_size(n_tokens, hidden_size):
    """Rows per chunk for the torch twin: the power of two at or below min(n_tokens, hidden_size).

    Every chunk reads the whole (V, H) weight twice, so chunks much shorter than H rows are
    bound by memory traffic on a CPU; H rows keep each (C, V) logits chunk the size of the
    weight itself (SmolLM2-135M: 512 rows, 96 MiB in fp32 instead of 192 MiB per 1024 tokens).
    """
    rows = min(max(n_tokens, 1), max(hidden_size, 1))
    return 1 << (rows.bit_length() - 1)


class _LinearCrossEntropy(torch.autograd.Function):
    """Loss and gradients in one pass over row chunks: each (C, V) logits chunk is turned into
    its own gradient in place (softmax minus one-hot) and multiplied out at once, so no chunk
    outlives its loop turn and backward only rescales what forward stored. The same two
    matmuls per chunk as plain logits + F.cross_entropy, and no recomputation."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, reduction, ignore_index, chunk, need_h, need_w):
        n_tokens = hidden.shape[0]
        valid = targets != ignore_index  # (N,)
        safe = targets.masked_fill(~valid, 0)  # (N,): any class id for ignored rows; masked below
        n_valid = int(valid.sum())
        # "mean" divides by the rows with a target; max(1, .) keeps gradients 0, not nan, when
        # there are none, while the loss is nan like F.cross_entropy's.
        scale = 1.0 / max(n_valid, 1) if reduction == "mean" else 1.0
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None  # (N, H)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None  # (V, H)
        for start in range(0, n_tokens, chunk):
            rows = slice(start, start + chunk)
            h, t, keep = hidden[rows], safe[rows], valid[rows]  # (C, H), (C,), (C,)
            z = (h @ weight.t()).float()  # (C, V) logits in fp32
            lse = torch.logsumexp(z, dim=-1)  # (C,)
            total += ((lse - z.gather(1, t[:, None]).squeeze(1)) * keep).sum()
            if not (need_h or need_w):
                continue
            z.sub_(lse[:, None]).exp_()  # (C, V) softmax
            z[torch.arange(len(t), device=z.device), t] -= 1.0  # minus one-hot: d loss / d logits
            z.mul_((keep * scale)[:, None])  # ignored rows get no gradient
            g = z.to(hidden.dtype)  # (C, V)
            if need_h:
                torch.mm(g, weight, out=grad_h[rows])  # (C, V) @ (V, H)
            if need_w:
                grad_w += (g.t() @ h).float()  # (V, C) @ (C, H), summed in fp32
        if reduction == "mean":
            total = total / n_valid if n_valid else total * float("nan")
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w = ctx.saved_tensors
        dh = grad_h * grad_output.to(grad_h.dtype) if grad_h is not None else None
        dw = (grad_w * grad_output).to(ctx.weight_dtype) if grad_w is not None else None
        return dh, dw, None, None, None, None, None, None


def fused_linear_cross_entropy(hidden, weight, targets, reduction="sum", ignore_index=-100, chunk_size=None):
    """F.cross_entropy((hidden @ weight.T).float(), targets) for hidden (N, H), weight (V, H),
    targets (N,), "sum" or "mean" over rows whose target is not ignore_index (mean over none: nan).

    The logits are computed chunk by chunk in the inputs' dtype (autocast's under autocast, as
    HF's lm_head) and upcast to fp32 for the softmax; at most one (C, V) chunk is alive at a
    time, and gradients are computed in the same pass (see _LinearCrossEntropy). chunk_size
    defaults to `cpu_chunk_size`: this twin is the CPU path.
    """
    check_linear_cross_entropy(hidden, weight, targets, reduction, chunk_size)
    hidden, weight = projection_inputs(hidden, weight)
    device_type = hidden.device.type
    grad = torch.is_grad_enabled()
    chunk = chunk_size or cpu_chunk_size(hidden.shape[0], hidden.shape[1])
    with torch.autocast(device_type, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, targets, reduction, int(ignore_index), chunk,
                                         grad and hidden.requires_grad, grad and weight.requires_grad)


def rms_norm(x, weight, eps):
    """HF's LlamaRMSNorm of x (..., H) with weight (H,): normalise in fp32, round to x's dtype,
    multiply by the weight (the output dtype is their promotion)."""
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)  # (..., H) fp32
    return weight * h.to(dtype)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # (..., D): (-x2, x1)


def apply_rotary(q, k, cos, sin):
    """transformers' apply_rotary_pos_emb (rotate_half convention, unsqueeze_dim=1) for q (B, Hq,
    T, D), k (B, Hk, T, D), cos/sin (B or 1, T, D). Returns new tensors; the Triton op writes
    into q and k instead, so callers use the returned pair either way."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, D): broadcast over heads
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def swiglu(gate, up):
    """LlamaMLP's activation: silu(gate) * up, for gate and up (..., I)."""
    return F.silu(gate) * up
