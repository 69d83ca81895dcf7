"""kinfuse.kernels.nf4 (Triton) and its torch twin against bitsandbytes' own NF4 layout.

On a CPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, set in conftest.py).
"""

from __future__ import annotations

import pytest

from kernel_cases import torch, DEVICE, DTYPES  # noqa: E402  (skips without triton)
bnb = pytest.importorskip("bitsandbytes")

from bitsandbytes.functional import dequantize_4bit, quantize_4bit  # noqa: E402

from kinfuse.kernels import reference  # noqa: E402
from kinfuse.kernels.nf4 import nf4_dequantize  # noqa: E402



def quantized(shape, *, nested=True, blocksize=64, seed=0):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    return quantize_4bit(w, blocksize=blocksize, compress_statistics=nested, quant_type="nf4")


# in_features a multiple of 64, as in every real model: bitsandbytes' native CPU kernel is
# right only then (it mis-scales rows whose blocks straddle a row end, e.g. (2, 96); its
# generic path and CUDA kernel are right everywhere, see test_odd_shapes_* below).
# (160, 192): 480 blocks, so the nested absmax2 has 2 entries and the grid has 30 programs.
@DTYPES
@pytest.mark.parametrize("nested", [True, False], ids=["double-quant", "fp32-absmax"])
@pytest.mark.parametrize("shape,blocksize", [((160, 192), 64), ((33, 128), 64), ((7, 256), 128)])
def test_equals_bitsandbytes_bit_for_bit(shape, blocksize, nested, dtype):
    packed, qs = quantized(shape, nested=nested, blocksize=blocksize)
    qs.dtype = dtype  # what the weight is dequantized to (bnb reads it from the state)
    want = dequantize_4bit(packed, qs, quant_type="nf4")
    got = nf4_dequantize(packed, qs)
    assert got.dtype == dtype and got.shape == shape
    assert torch.equal(got, want)
    assert torch.equal(reference.nf4_dequantize(packed, qs), want)


@pytest.mark.parametrize("shape", [(7, 9), (80, 96), (5, 100)])
def test_odd_shapes_requantize_to_the_same_bytes(shape):
    # Element counts that are not a multiple of the block (or even odd): dequantizing and
    # quantizing again with bitsandbytes must give back exactly its bytes and scales, which
    # holds only if every nibble and every block scale was read from the right place.
    packed, qs = quantized(shape, nested=False)
    got = nf4_dequantize(packed, qs)
    again, qs2 = quantize_4bit(got, blocksize=64, compress_statistics=False, quant_type="nf4")
    assert torch.equal(again, packed) and torch.equal(qs2.absmax, qs.absmax)
    assert torch.equal(got, reference.nf4_dequantize(packed, qs))
    packed, qs = quantized(shape, nested=True)
    assert torch.equal(nf4_dequantize(packed, qs), reference.nf4_dequantize(packed, qs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_params4bit_and_output_dtype(dtype):
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(1)).to(dtype)
    param = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=True, quant_type="nf4").to(DEVICE)
    got = nf4_dequantize(param)  # the quant_state comes with the parameter
    assert got.dtype == dtype  # default: the dtype it was quantized from
    assert torch.equal(got, dequantize_4bit(param.data, param.quant_state, quant_type="nf4"))
    fp32 = nf4_dequantize(param, dtype=torch.float32)  # rounded once, from fp32: not got.float()
    assert fp32.dtype == torch.float32 and torch.equal(fp32, reference.nf4_dequantize(param, dtype=torch.float32))
    # Weights stored as another dtype (bnb_4bit_quant_storage) are the same bytes.
    assert torch.equal(nf4_dequantize(param.data.reshape(-1).view(torch.float16), param.quant_state), got)


def test_bad_inputs_name_the_problem():
    packed, qs = quantized((16, 64))
    with pytest.raises(ValueError, match="no quant_state"):
        nf4_dequantize(packed)
    _, fp4 = quantize_4bit(torch.randn(16, 64, device=DEVICE), quant_type="fp4")
    with pytest.raises(ValueError, match="only 'nf4'"):
        nf4_dequantize(packed, fp4)
    _, other = quantize_4bit(torch.randn(16, 128, device=DEVICE), quant_type="nf4")
    with pytest.raises(ValueError, match="wrong quant_state"):
        nf4_dequantize(packed, other)
    with pytest.raises(ValueError, match="float32, torch.float16 or torch.bfloat16"):
        nf4_dequantize(packed, qs, dtype=torch.int32)
    with pytest.raises(ValueError, match="no quant_state"):
        reference.nf4_dequantize(packed)
