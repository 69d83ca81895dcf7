"""The optimizer and its learning-rate schedule: how many steps a run takes, which weights
learn at which rate, AdamW (or bitsandbytes' paged AdamW on CUDA), warmup then decay."""

from __future__ import annotations

import math
from typing import Any, Callable

from ..config import TrainConfig


def total_steps(config: TrainConfig, blocks: int, world_size: int = 1) -> int:
    """Optimizer steps of a run: max_steps, or enough for `epochs` passes over the blocks
    (each step takes grad_accum micro-batches on each of `world_size` processes)."""
    per_step = config.micro_batch_size * config.grad_accum * world_size
    return config.max_steps or max(1, math.ceil(config.epochs * blocks / per_step))


def param_groups(model: Any, config: TrainConfig) -> list[dict[str, Any]]:
    """LoRA weights at learning_rate; full embedding/lm_head copies at their own rate."""
    lora, full = [], []
    for name, p in model.named_parameters():  # a tied copy is listed once
        if p.requires_grad:
            (full if ".modules_to_save." in name else lora).append(p)
    groups = [{"params": lora, "lr": config.learning_rate}]
    if full:
        lr = config.embedding_learning_rate if config.embedding_learning_rate is not None else config.learning_rate / 10
        groups.append({"params": full, "lr": lr})
    return groups


def make_optimizer(params: list[Any], config: TrainConfig, device: Any) -> Any:  # params: tensors or param groups
    import torch

    name = config.optimizer
    if name == "auto":
        name = "paged_adamw_32bit" if device.type == "cuda" else "adamw"
    kw = {"lr": config.learning_rate, "weight_decay": config.weight_decay, "betas": (0.9, 0.999)}
    if name == "adamw":
        return torch.optim.AdamW(params, **kw)
    import bitsandbytes as bnb

    # Paged optimizers keep their state in CUDA managed memory, paged to the CPU under
    # pressure; LoRA state is small, so it never asks for much of it.
    cls = bnb.optim.PagedAdamW32bit if name == "paged_adamw_32bit" else bnb.optim.PagedAdamW8bit
    return cls(params, **kw)


def lr_factor(config: TrainConfig, total: int) -> Callable[[int], float]:
    """The learning rate's factor at each step (for LambdaLR): linear warmup, then constant,
    linear or cosine decay over the rest of the `total` steps."""
    cfg = config

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        if cfg.lr_schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
