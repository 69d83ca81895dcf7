"""Memory as training sees it: the peak so far, and what to change when it runs out."""

from __future__ import annotations

import resource
from typing import Any

from ..config import TrainConfig


def peak_memory(device: Any) -> tuple[int, str]:
    """(bytes, kind): CUDA's max allocated on a GPU, the process's peak resident set on a CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_peak_rss"  # Linux reports KiB


def oom_advice(config: TrainConfig, device: Any, block_size: int, step: int) -> str:
    """What was in use when memory ran out, and which settings lower it (call it while the
    failed step's tensors are still referenced by the traceback, so the numbers are real)."""
    import torch

    gib = 2**30
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        where = (f"CUDA out of memory at step {step} on {torch.cuda.get_device_name(device)}: "
                 f"{torch.cuda.memory_allocated(device) / gib:.2f} GiB allocated "
                 f"(peak {torch.cuda.max_memory_allocated(device) / gib:.2f}, reserved "
                 f"{torch.cuda.memory_reserved(device) / gib:.2f}, free {free / gib:.2f} of {total / gib:.2f} GiB)")
    else:
        rss, _ = peak_memory(device)
        where = f"out of memory at step {step} on {device}: peak resident memory {rss / gib:.2f} GiB"
    c = config
    fixes = [f"lower micro_batch_size (now {c.micro_batch_size}) and raise grad_accum (now {c.grad_accum}) "
             "to keep the same step size",
             f"use shorter blocks (now {block_size} tokens): Chunker(tokenizer, block_size={max(1, block_size // 2)})"]
    if not c.gradient_checkpointing:
        fixes.append("turn gradient_checkpointing on (now False)")
    if device.type == "cuda" and not c.offload_activations:
        fixes.append("set offload_activations=True (checkpointed activations kept in CPU memory)")
    if c.quantize != "nf4":
        fixes.append(f"quantize the base model: quantize='nf4' (now {c.quantize!r})")
    if c.train_embeddings or c.train_lm_head:
        fixes.append("set train_embeddings/train_lm_head False (full copies plus their optimizer state)")
    return where + "; to fit, " + "; or ".join(fixes)
