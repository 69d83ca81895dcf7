"""NF4 dequantization of bitsandbytes 4-bit weights in one Triton kernel.

The layout read here is bitsandbytes' (0.4x-0.50, quant_type="nf4"; the tests check it
against `bitsandbytes.functional.dequantize_4bit`):

- packed: uint8, ceil(n/2) bytes for the n = out*in elements of the row-major (out, in)
  weight; element 2i is the high nibble of byte i, element 2i+1 the low nibble;
- one scale (absmax) per block of `blocksize` (64) consecutive elements. With double
  quantization (`bnb_4bit_use_double_quant`), absmax is stored as uint8 codes of
  (absmax - offset), themselves block-quantized in blocks of 256 with the 8-bit dynamic
  map: absmax[b] = code2[absmax_u8[b]] * absmax2[b // 256] + offset;
- value = nf4_code[nibble] * absmax[block], in fp32, rounded once to the output dtype.

The kernel does the same fp32 arithmetic in the same order as bitsandbytes, with FMA
contraction turned off, so its output equals bitsandbytes' bit for bit. One launch does
both levels (no intermediate absmax tensor, unlike bitsandbytes' two calls).

kernel `_nf4_dequant_kernel` -> launcher `nf4_dequantize` (no autograd: W is frozen).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import require_device
from .reference import nf4_parts

# Quantization blocks handled by one program: 16 blocks of 64 = 1024 elements, enough work
# per program to hide memory latency while keeping the grid large for big weights.
_BLOCKS_PER_PROGRAM = 16


@triton.jit
def _nf4_dequant_kernel(
    packed_ptr,  # (ceil(n/2),) uint8: two 4-bit codes per byte, high nibble first
    absmax_ptr,  # (blocks,) uint8 codes if NESTED else fp32 scales
    absmax2_ptr,  # (ceil(blocks/BLOCKSIZE2),) fp32: scales of the absmax codes (NESTED only)
    code2_ptr,  # (256,) fp32: bitsandbytes' 8-bit dynamic map (NESTED only)
    offset_ptr,  # () fp32: mean absmax subtracted before quantizing absmax (NESTED only)
    nf4_ptr,  # (16,) fp32: the NF4 code book
    out_ptr,  # (n,) output in the target dtype
    n,  # number of weight elements
    BLOCKSIZE: tl.constexpr,  # elements per absmax (64)
    BLOCKSIZE2: tl.constexpr,  # absmax values per absmax2 (256)
    NESTED: tl.constexpr,
    ROWS: tl.constexpr,  # quantization blocks per program
):
    pid = tl.program_id(0).to(tl.int64)  # int64: n * 2 can pass 2**31 on large embeddings
    block = pid * ROWS + tl.arange(0, ROWS)  # (ROWS,) quantization-block ids
    idx = block[:, None] * BLOCKSIZE + tl.arange(0, BLOCKSIZE)[None, :]  # (ROWS, BLOCKSIZE) element ids
    mask = idx < n
    block_mask = block * BLOCKSIZE < n  # (ROWS,)

    # One scale per quantization block, broadcast along its row.
    if NESTED:
        code = tl.load(absmax_ptr + block, mask=block_mask, other=0).to(tl.int32)  # (ROWS,)
        scale2 = tl.load(absmax2_ptr + block // BLOCKSIZE2, mask=block_mask, other=0.0)  # (ROWS,)
        offset = tl.load(offset_ptr)
        scale = tl.load(code2_ptr + code, mask=block_mask, other=0.0) * scale2 + offset  # (ROWS,) fp32
    else:
        scale = tl.load(absmax_ptr + block, mask=block_mask, other=0.0)  # (ROWS,) fp32

    byte = tl.load(packed_ptr + idx // 2, mask=mask, other=0).to(tl.int32)  # (ROWS, BLOCKSIZE)
    shift = 4 - (idx % 2).to(tl.int32) * 4  # even element: high nibble (>> 4); odd: low (>> 0)
    nibble = (byte >> shift) & 0xF
    value = tl.load(nf4_ptr + nibble, mask=mask, other=0.0)  # (ROWS, BLOCKSIZE) fp32, from an L1-resident table
    out = value * scale[:, None]
    tl.store(out_ptr + idx, out.to(out_ptr.dtype.element_ty), mask=mask)


def nf4_dequantize(weight, quant_state=None, dtype=None) -> torch.Tensor:
    """bitsandbytes NF4 weight -> dense (out, in) tensor in `dtype` (default: the dtype it was
    quantized from), in one kernel launch.

    `weight` is a `bitsandbytes.nn.Params4bit`, or its packed data with `quant_state`.
    Same result, bit for bit, as `bitsandbytes.functional.dequantize_4bit` and as
    `kinfuse.kernels.reference.nf4_dequantize`.
    """
    packed, qs = nf4_parts(weight, quant_state)
    dtype = dtype or qs.dtype
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"nf4_dequantize: dtype={dtype}; use torch.float32, torch.float16 or torch.bfloat16")
    device = packed.device
    require_device("nf4_dequantize", device, _nf4_dequant_kernel)
    out_f, in_f = qs.shape
    n = out_f * in_f
    out = torch.empty((out_f, in_f), dtype=dtype, device=device)
    if n == 0:
        return out
    code = qs.code.to(device=device, dtype=torch.float32)  # (16,)
    if qs.nested:
        s2 = qs.state2
        absmax, absmax2, code2 = qs.absmax, s2.absmax.float(), s2.code.to(device=device, dtype=torch.float32)
        offset = torch.as_tensor(qs.offset, dtype=torch.float32, device=device).reshape(())
        blocksize2 = s2.blocksize
    else:
        # Unused pointers still need a tensor: pass the scales again (never read).
        absmax = absmax2 = code2 = offset = qs.absmax.float()
        blocksize2 = 1
    blocks = -(-n // qs.blocksize)
    grid = (triton.cdiv(blocks, _BLOCKS_PER_PROGRAM),)
    _nf4_dequant_kernel[grid](
        packed, absmax, absmax2, code2, offset, code, out, n,
        BLOCKSIZE=qs.blocksize, BLOCKSIZE2=blocksize2, NESTED=qs.nested, ROWS=_BLOCKS_PER_PROGRAM,
        enable_fp_fusion=False,  # a fused multiply-add would round differently from bitsandbytes
    )
    return out
