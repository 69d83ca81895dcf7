"""What training returns and how it fails: TrainResult (the whole run), StepResult (one
optimizer step), TrainingError, and cross_entropy() to read a history row.

These are plain data, so the loop, checkpoints and callers (pipeline, report) share them
without importing the trainer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import KinfuseError


class TrainingError(KinfuseError):
    """Training cannot go on (a NaN loss, or data that does not fit the model)."""


@dataclass
class TrainResult:
    steps: int  # optimizer steps run
    tokens: int  # real (non-padding) tokens seen, counting repeats
    target_tokens: int  # tokens the loss was computed on
    seconds: float  # wall time of the loop
    tokens_per_second: float  # real tokens / seconds
    peak_memory_bytes: int  # CUDA: max allocated; CPU: peak resident set size of the process
    peak_memory_kind: str  # "cuda_max_allocated" or "cpu_peak_rss"
    # Cross-entropy per target token of the first and last steps that had any: with KL anchors
    # a step's loss also holds the weighted KL (anchor-only steps have no cross-entropy).
    first_loss: float
    final_loss: float
    device: str
    compute_dtype: str  # what training computed in ("bfloat16", "float32"): NF4 weights were quantized from it
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step
    interrupted: bool = False  # stopped early by SIGINT/SIGTERM (after checkpointing)
    stop_signal: str | None = None  # "SIGINT" or "SIGTERM" when interrupted
    checkpoint: str | None = None  # the last checkpoint written or resumed from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepResult:
    """Forward and backward over the micro-batches of one optimizer step."""

    loss: float  # what was backpropagated: summed over micro-batches, per target token of the step
    target_tokens: int  # tokens the loss was computed on
    tokens: int  # real (non-padding) tokens
    anchor_kl: float | None  # KL per anchor target token (before weighting); None without anchor blocks
    ce: float | None  # cross-entropy per target token of the plain blocks; None without any


def cross_entropy(row: dict[str, float]) -> float | None:
    """A history row's cross-entropy per target token, or None for a step of anchor blocks only."""
    return row.get("ce", None if "anchor_kl" in row else row["loss"])
