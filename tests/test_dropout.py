"""kinfuse.dropout: BitsDropout is dropout (right keep rate, unbiased, reproducible, replayed
by gradient checkpointing) and use_bits_dropout swaps it into a peft LoRA model."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from kinfuse.dropout import BitsDropout, use_bits_dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_keep_rate_and_scale(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1003)  # odd size: the last 64-bit word is only partly used
    out = BitsDropout(p)(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.003
    drop = round(p * 65536) / 65536
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (1 - drop)))


def test_unbiased_and_dtype_kept():
    torch.manual_seed(1)
    x = torch.randn(64, 37, dtype=torch.float64)
    mean = sum(BitsDropout(0.3)(x) for _ in range(4000)) / 4000
    torch.testing.assert_close(mean, x, atol=0.1, rtol=0.1)
    assert BitsDropout(0.3)(x.half()).dtype == torch.float16


def test_same_seed_same_mask_and_masks_differ_between_calls():
    d = BitsDropout(0.1)
    x = torch.randn(33, 17)
    torch.manual_seed(3)
    a, b = d(x), d(x)
    torch.manual_seed(3)
    assert torch.equal(d(x), a)
    assert not torch.equal(a, b)


def test_identity_in_eval_and_at_p0_zeros_at_p1():
    x = torch.randn(5, 7)
    d = BitsDropout(0.4).eval()
    assert d(x) is x
    assert BitsDropout(0.0)(x) is x
    assert torch.equal(BitsDropout(1.0)(x), torch.zeros_like(x))


def test_gradient_is_the_mask_and_checkpoint_replays_it():
    lin = torch.nn.Linear(16, 8)
    d = BitsDropout(0.25)
    x = torch.randn(40, 16, requires_grad=True)

    def f(x):
        return lin(d(x)).square().sum()

    torch.manual_seed(7)
    out = d(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / (1 - round(0.25 * 65536) / 65536))

    grads = []
    for ckpt in (False, True):
        x.grad = None
        torch.manual_seed(11)
        loss = checkpoint(f, x, use_reentrant=False) if ckpt else f(x)
        loss.backward()
        grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[1])  # the recompute drew the same mask


def test_use_bits_dropout_swaps_lora_dropout_only_where_p_positive():
    from peft import LoraConfig, get_peft_model

    base = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1, target_modules=["0", "2"]))
    keys = set(model.state_dict())
    assert use_bits_dropout(model) == 2
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 2 and all(type(m) is BitsDropout and m.p == 0.1 for m in drops)
    assert set(model.state_dict()) == keys  # no weights added or renamed
    assert use_bits_dropout(model) == 0  # already swapped
    model.eval()
    x = torch.randn(3, 8)
    torch.testing.assert_close(model(x), model(x))
