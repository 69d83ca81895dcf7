"""kinfuse.kernels.cross_entropy (Triton) against its pure-torch twin, and the twin against
F.cross_entropy on the full logits. Odd shapes (N=37, H=72, V=523: no multiple of any block
size), ignored rows, several chunks. On a CPU the kernels run under TRITON_INTERPRET=1."""

from __future__ import annotations

import pytest

from kernel_cases import DEVICE, DTYPES, BF16, torch  # noqa: E402  (skips without triton)

import torch.nn.functional as F  # noqa: E402

from kinfuse.kernels import cross_entropy as ce  # noqa: E402
from kinfuse.kernels import reference  # noqa: E402

N, H, V = 37, 72, 523


def tol(dtype):
    return {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=2e-3, atol=2e-3),
            torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}[dtype]


def close(actual, expected, dtype, what):
    # Gradients vary in size with N and the reduction: tolerances are relative to the largest entry.
    scale = max(expected.abs().max().item(), 1e-6)
    t = tol(dtype)
    torch.testing.assert_close(actual.float() / scale, expected.float() / scale, rtol=t["rtol"], atol=t["atol"],
                               msg=lambda m: f"{what} ({dtype}): {m}")


def make(dtype, *, weight_grad=True, seed=0, ignore_every=5):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g).to(DEVICE, dtype).requires_grad_()
    weight = (0.3 * torch.randn(V, H, generator=g)).to(DEVICE, dtype).requires_grad_(weight_grad)
    targets = torch.randint(0, V, (N,), generator=g)
    if ignore_every:
        targets[::ignore_every] = -100  # prompt/padding rows
    return hidden, weight, targets.to(DEVICE)


def run(fn, hidden, weight, targets, upstream=3.0, **kw):
    """loss and the grads of upstream * loss (a grad_output other than 1 checks the chain rule)."""
    hidden.grad = None
    weight.grad = None
    loss = fn(hidden, weight, targets, **kw)
    (upstream * loss).backward()
    return loss.detach(), hidden.grad, (weight.grad if weight.requires_grad else None)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@DTYPES
def test_reference_matches_full_logits(dtype, reduction):
    hidden, weight, targets = make(dtype)
    loss, dh, dw = run(reference.fused_linear_cross_entropy, hidden, weight, targets, reduction=reduction, chunk_size=8)
    want, want_dh, want_dw = run(lambda h, w, t, reduction: F.cross_entropy((h @ w.t()).float(), t, reduction=reduction),
                                 hidden, weight, targets, reduction=reduction)
    assert loss.dtype == torch.float32
    close(loss, want, dtype, "loss")
    close(dh, want_dh, dtype, "grad hidden")
    close(dw, want_dw, dtype, "grad weight")


@pytest.mark.parametrize("dtype,reduction,chunk_size,max_block_v", [
    (torch.float32, "sum", None, None),
    (torch.float32, "mean", 7, 128),  # 6 chunks, the last of 2 rows; 5 column blocks, the last partial
    (torch.float16, "sum", 7, 128),
    (torch.float16, "mean", None, None),
    pytest.param(torch.bfloat16, "sum", 7, None, marks=BF16),
])
def test_triton_matches_reference(dtype, reduction, chunk_size, max_block_v, monkeypatch):
    if max_block_v:  # force the online softmax over several column blocks
        monkeypatch.setattr(ce, "MAX_BLOCK_V", max_block_v)
    hidden, weight, targets = make(dtype)
    loss, dh, dw = run(ce.fused_linear_cross_entropy, hidden, weight, targets, reduction=reduction,
                       chunk_size=chunk_size)
    want, want_dh, want_dw = run(reference.fused_linear_cross_entropy, hidden, weight, targets, reduction=reduction,
                                 chunk_size=chunk_size)
    assert loss.dtype == torch.float32 and dh.dtype == dtype and dw.dtype == dtype
    close(loss, want, dtype, "loss")
    close(dh, want_dh, dtype, "grad hidden")
    close(dw, want_dw, dtype, "grad weight")


def test_frozen_weight_and_no_grad():
    hidden, weight, targets = make(torch.float32, weight_grad=False)
    loss, dh, dw = run(ce.fused_linear_cross_entropy, hidden, weight, targets, chunk_size=16)
    want, want_dh, _ = run(reference.fused_linear_cross_entropy, hidden, weight, targets, chunk_size=16)
    assert dw is None and weight.grad is None
    close(loss, want, torch.float32, "loss")
    close(dh, want_dh, torch.float32, "grad hidden")
    with torch.no_grad():  # evaluation: the loss alone, the same value
        close(ce.fused_linear_cross_entropy(hidden, weight, targets), want, torch.float32, "no-grad loss")


def test_every_row_ignored():
    hidden, weight, targets = make(torch.float32, ignore_every=1)
    loss, dh, dw = run(ce.fused_linear_cross_entropy, hidden, weight, targets, reduction="sum")
    assert loss.item() == 0.0 and not dh.any() and not dw.any()
    loss, dh, _ = run(ce.fused_linear_cross_entropy, hidden, weight, targets, reduction="mean")
    assert torch.isnan(loss) and not dh.any()  # torch's mean over no targets is nan too
    assert torch.isnan(F.cross_entropy(torch.zeros(2, 3), torch.full((2,), -100), reduction="mean"))


def test_sensitive_to_targets():
    # A kernel that ignored its targets, or the gradient write, would still pass a loose check:
    # changing one target must change the loss and that row's gradient exactly as the twin says.
    hidden, weight, targets = make(torch.float32, ignore_every=0)
    other = targets.clone()
    other[3] = (other[3] + 1) % V
    a, dha, _ = run(ce.fused_linear_cross_entropy, hidden, weight, targets)
    b, dhb, _ = run(ce.fused_linear_cross_entropy, hidden, weight, other)
    assert (a - b).abs() > 1e-4
    changed = (dha - dhb).abs().amax(1) > 0  # (N,)
    assert changed.tolist() == [i == 3 for i in range(N)]


def test_bad_inputs_are_named():
    hidden, weight, targets = make(torch.float32)
    bad = targets.clone()
    bad[2] = V
    with pytest.raises(ValueError, match=r"outside \[0, 523\).*ignore_index"):
        ce.fused_linear_cross_entropy(hidden, weight, bad)
    with pytest.raises(ValueError, match="reduction='none'"):
        ce.fused_linear_cross_entropy(hidden, weight, targets, reduction="none")
    with pytest.raises(ValueError, match=r"hidden \(N, H\).*reshape"):
        ce.fused_linear_cross_entropy(hidden[None], weight, targets)
    with pytest.raises(ValueError, match="cast them to one dtype"):
        ce.fused_linear_cross_entropy(hidden, weight.detach().half(), targets)
    with pytest.raises(ValueError, match="chunk_size=0"):
        ce.fused_linear_cross_entropy(hidden, weight, targets, chunk_size=0)


def test_default_chunk_size():
    # Triton: one (C, V) chunk about the size of (N, H), as a power of two. The torch twin (the
    # CPU path): about H rows, since each chunk re-reads the whole weight.
    for n, h, v, want in [(8192, 4096, 32000, 1024), (8192, 4096, 128256, 256), (37, 72, 523, 8), (1, 72, 523, 1)]:
        assert ce.default_chunk_size(n, h, v) == want
    for n, h, want in [(1024, 576, 512), (8192, 4096, 4096), (37, 72, 32), (1, 72, 1), (100, 64, 64)]:
        assert reference.cpu_chunk_size(n, h) == want


def test_autocast_matches_reference():
    # Under autocast the projection runs in the autocast dtype, as nn.Linear's would; gradients
    # come back in the fp32 inputs' dtype. (CPU: fp16 autocast, since the interpreter has no bf16.)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float16
    hidden, weight, targets = make(torch.float32)
    with torch.autocast(DEVICE, dtype=dtype):
        loss, dh, dw = run(ce.fused_linear_cross_entropy, hidden, weight, targets)
        want, want_dh, want_dw = run(reference.fused_linear_cross_entropy, hidden, weight, targets)
    assert dh.dtype == torch.float32 and dw.dtype == torch.float32
    close(loss, want, dtype, "loss")
    close(dh, want_dh, dtype, "grad hidden")
    close(dw, want_dw, dtype, "grad weight")
    # and it did run in the low dtype: the fp32 loss differs by more than fp32 rounding
    fp32 = ce.fused_linear_cross_entropy(hidden.detach(), weight.detach(), targets)
    assert (fp32 - loss).abs() > 1e-6 * fp32.abs()
