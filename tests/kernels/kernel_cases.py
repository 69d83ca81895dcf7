"""What every kernel test module shares: skip cleanly without torch or triton, the device the
kernels run on (Triton's CPU interpreter without a GPU: conftest.py sets TRITON_INTERPRET
before any kernel module is imported), and the dtypes they are checked in."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="the Triton kernels need triton (pip install 'kinfuse[kernels]')")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BF16 = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="bf16 runs on CUDA only (numpy, under the Triton interpreter, has no bf16)")
DTYPE_PARAMS = [torch.float32, torch.float16, pytest.param(torch.bfloat16, marks=BF16)]
DTYPES = pytest.mark.parametrize("dtype", DTYPE_PARAMS, ids=["fp32", "fp16", "bf16"])
