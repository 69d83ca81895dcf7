"""Training a LoRA adapter: the QLoRATrainer recipe and the parts it is made of.

    setup.py       device, dtype, allocator, model build, every forward patch (one function)
    blocks.py      training blocks as tensors, and the data order
    losses.py      cross-entropy on target tokens, KL to the base model for anchor blocks
    optim.py       optimizer, parameter groups, learning-rate schedule
    loop.py        the training loop (StepResult per step, StopOnSignal)
    checkpoint.py  save and resume (atomic folders; state.pt loaded with weights_only=True)
    logs.py        JSONL / TensorBoard step log, the loss curve
    memory.py      peak memory, and what to change when it runs out
    lora.py        leaner LoRA forward and CPU dropout
    result.py      TrainResult, StepResult, TrainingError
    distributed.py several processes under torchrun: LoRA gradients summed, rank 0 writes
    trainer.py     QLoRATrainer, the recipe over these

Imports go one way: train uses kernels, models, config, io and errors, never the reverse.
"""

from __future__ import annotations

from .blocks import BlockTensors
from .logs import plot_loss
from .memory import peak_memory
from .result import StepResult, TrainingError, TrainResult, cross_entropy
from .setup import cpu_has_bf16, pick_dtype, set_mmap_threshold
from .trainer import QLoRATrainer

_LORA = ("BitsDropout", "use_bits_dropout", "use_lean_lora_forward")


def __getattr__(name: str):
    # lora.py imports torch at import time; importing kinfuse must not (torch loads on first use).
    if name in _LORA:
        from . import lora

        return getattr(lora, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BitsDropout",
    "BlockTensors",
    "QLoRATrainer",
    "StepResult",
    "TrainResult",
    "TrainingError",
    "cpu_has_bf16",
    "cross_entropy",
    "peak_memory",
    "pick_dtype",
    "plot_loss",
    "set_mmap_threshold",
    "use_bits_dropout",
    "use_lean_lora_forward",
]
