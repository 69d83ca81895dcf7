"""Training blocks as tensors, and the data order: which blocks each micro-batch takes.

The order is a pure function of (seed, epoch), so that a resumed run draws exactly the
micro-batches the uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any

from ..config import TrainConfig
from .result import TrainingError


def check_blocks(blocks: Any, max_length: int | None) -> None:
    """Refuse blocks training cannot use, saying how to build usable ones."""
    if blocks is None or len(blocks) == 0:
        raise TrainingError("no training blocks: the dataset is empty; check the corpus and Chunker.stats")
    for col in ("input_ids", "labels"):
        if col not in blocks.column_names:
            raise TrainingError(f"training blocks lack the {col!r} column: build them with kinfuse.Chunker")
    length = len(blocks[0]["input_ids"])
    if max_length and length > max_length:
        raise TrainingError(
            f"block size {length} is over the model's maximum length {max_length}: "
            f"rebuild the blocks with Chunker(tokenizer, block_size={max_length}) or less"
        )


class BlockTensors:
    """Packed blocks (a datasets.Dataset from Chunker) as tensors, and their data order."""

    def __init__(self, blocks: Any):
        import torch

        self.ids = torch.tensor(blocks["input_ids"], dtype=torch.long)  # (N, T)
        self.labels = torch.tensor(blocks["labels"], dtype=torch.long)  # (N, T)
        self.n, self.length = self.ids.shape
        cols = blocks.column_names
        self.pos = (torch.tensor(blocks["position_ids"], dtype=torch.long) if "position_ids" in cols
                    else torch.arange(self.length).expand_as(self.ids))  # (N, T)
        # Real (non-padding) tokens per block, for honest tokens/s.
        self.real = (torch.tensor(blocks["num_tokens"], dtype=torch.long) if "num_tokens" in cols
                     else torch.full((self.n,), self.length, dtype=torch.long))  # (N,)
        # Target tokens per block (a loss is normalised by those of its whole step).
        self.targets = (self.labels[:, 1:] != -100).sum(1)  # (N,)
        # Blocks to keep close to the base model (KL instead of cross-entropy), if marked.
        self.anchor = (torch.tensor(blocks["anchor"], dtype=torch.bool) if "anchor" in cols
                       and any(blocks["anchor"]) else None)  # (N,)
        # Blocks with a "phase" column train in ascending phase order within every epoch
        # (shuffled within a phase): Q&A before documents, for instance.
        self.phases: list[Any] | None = None  # block indices per phase, lowest phase first
        if "phase" in cols:
            phase = torch.tensor(blocks["phase"], dtype=torch.long)  # (N,)
            values = torch.unique(phase)  # sorted
            if len(values) > 1:
                self.phases = [torch.nonzero(phase == v).flatten() for v in values]
        self._order: tuple[int, Any] | None = None

    def micro_batch(self, k: int, cfg: TrainConfig) -> Any:
        """Block indices of global micro-batch k: epochs are reshuffled, never cut short."""
        import torch

        per_epoch = math.ceil(self.n / cfg.micro_batch_size)
        epoch, i = divmod(k, per_epoch)
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            if self.phases is None:
                self._order = (epoch, torch.randperm(self.n, generator=gen))
            else:
                self._order = (epoch, torch.cat([idx[torch.randperm(len(idx), generator=gen)] for idx in self.phases]))
        return self._order[1][i * cfg.micro_batch_size : (i + 1) * cfg.micro_batch_size]
