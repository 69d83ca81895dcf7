"""Leaner LoRA training forwards, for the LoRA layers the kernels do not take.

Dropout: on a CPU, torch draws every dropout element's Bernoulli sample on its own, and LoRA
applies dropout to the input of every adapted projection (twice per step with gradient
checkpointing), so those draws are a large share of a CPU step. `BitsDropout` cuts 64-bit
random words into four 16-bit lanes instead: one draw per four elements.

Forward: peft's LoRA layer clones the base output, then allocates B(A(x)), its scaled copy and
the sum: four (tokens, out) tensors per projection. The lean forward (`use_lean_lora_forward`)
adds the LoRA product into the base output with one addmm. Besides the passes saved, glibc
keeps freed buffers of that size in its heap, so fewer of them also lower the peak resident
memory.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from ..kernels import plain_adapter

_LANES = 1 << 16  # values a 16-bit lane takes


class BitsDropout(torch.nn.Dropout):
    """nn.Dropout with the mask taken from 16 random bits per element.

    An element is kept when its lane is at or above a threshold, so the drop probability is p
    rounded to a multiple of 1/65536; kept elements are scaled by 1 / (1 - that rounded p), so
    E[out] = x exactly. Draws come from torch's default generator, so torch.manual_seed and
    gradient checkpointing's RNG replay reproduce the mask. Off the CPU it is nn.Dropout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or self.p >= 1:
            return super().forward(x)
        drop = round(self.p * _LANES)  # dropped lane values out of 65536
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # full 64 bits
        lanes = words.view(torch.int16)[: x.numel()].view(x.shape)  # uniform on [-32768, 32767]
        keep = lanes >= drop - _LANES // 2
        return torch.where(keep, x * (_LANES / (_LANES - drop)), 0.0)


def use_bits_dropout(model: torch.nn.Module) -> int:
    """Swap every plain nn.Dropout with p > 0 in `model` for a BitsDropout of the same p;
    returns how many were swapped. Dropout modules hold no weights, so checkpoints and
    adapters are unchanged."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout and child.p > 0:
                setattr(parent, name, BitsDropout(child.p, inplace=False))
                swapped += 1
    return swapped


def _lean_lora_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """peft's LoRA forward for the one case training runs (one plain LoRA adapter, unmerged, one
    dtype or x in autocast's dtype): base(x) + scaling * B(A(dropout(x))) as a single addmm.
    Anything else goes to peft's own forward."""
    name = plain_adapter(self)
    plain = not args and not kwargs and name is not None and not self.disable_adapters and not self.merged
    if plain and _rowwise_inference(self, x, name):
        return _inference_forward(self, x, name)
    if plain:
        a, b = self.lora_A[name], self.lora_B[name]
        if torch.is_autocast_enabled(x.device.type):  # autocast casts the weights to x's dtype
            plain = b.bias is None and x.dtype == torch.get_autocast_dtype(x.device.type)
        else:
            plain = b.bias is None and x.dtype == a.weight.dtype == b.weight.dtype
    if not plain:
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)  # (..., out)
    if result.dtype != x.dtype:
        return type(self).forward(self, x, *args, **kwargs)
    mid = a(self.lora_dropout[name](x))  # (..., r)
    out = torch.addmm(result.reshape(-1, result.shape[-1]), mid.reshape(-1, mid.shape[-1]), b.weight.t(),
                      alpha=self.scaling[name])  # (N, out): base + scaling * mid @ B^T in one pass
    return out.view(result.shape)


def _rowwise_inference(layer: torch.nn.Module, x: torch.Tensor, name: str) -> bool:
    """Inference on a CPU with activations in bf16 and the adapter's fp32 weights, outside
    autocast: how the Evaluator and `kinfuse ask` run a trained model there."""
    return (x.device.type == "cpu" and x.dtype == torch.bfloat16 and not layer.training and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and layer.lora_A[name].weight.dtype == torch.float32
            and layer.lora_B[name].bias is None)


def _inference_forward(self, x: torch.Tensor, name: str) -> torch.Tensor:
    """base(x) + scaling * B(A(x)) with the LoRA product in bf16, as training computed it under
    autocast. peft would compute it in fp32 (x cast up to the weights' dtype), and torch's fp32
    CPU matmuls (MKL) round a row differently with the number of rows beside it, while its bf16
    F.linear gives each row the same bits however many rows are computed with it
    (benchmarks/README.md, "Batched answers = lone answers"). So a prompt decoded in a batch of
    32 gets the answer it gets alone (`kinfuse ask`). addmm is avoided for the same reason: in
    bf16 it too rounds rows by batch for some shapes."""
    result = self.base_layer(x)
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    lora = F.linear(F.linear(x, a.to(x.dtype)), b.to(x.dtype))
    return result + lora * self.scaling[name]


def use_lean_lora_forward(model: torch.nn.Module, *, bits_dropout: bool = False) -> int:
    """Give every peft LoRA Linear / Linear4bit in `model` that has no instance forward yet (the
    kernels' patch sets one) the lean forward, and with `bits_dropout` BitsDropout for its
    LoRA dropout. `del module.forward` restores peft's. Returns how many modules got it."""
    from peft.tuners.lora import Linear as LoraLinear

    kinds = [LoraLinear]
    try:
        from peft.tuners.lora.bnb import Linear4bit

        kinds.append(Linear4bit)
    except ImportError:  # peft without bitsandbytes
        pass
    done = 0
    for module in model.modules():
        if type(module) in kinds and "forward" not in vars(module):
            module.forward = types.MethodType(_lean_lora_forward, module)
            if bits_dropout:
                use_bits_dropout(module.lora_dropout)
            done += 1
    return done
