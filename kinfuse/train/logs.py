"""Where training's per-step metrics go: a JSONL log and TensorBoard while it runs
(StepLog), and the loss curve as a PNG when it ends (plot_loss)."""

from __future__ import annotations

import json
import os
from io import BytesIO
from pathlib import Path
from typing import Any

from .. import io
from ..config import TrainConfig
from .result import TrainingError


class StepLog:
    """Every `log_every`-th history row, appended to `log_path` (one JSON object a line) and,
    with `config.tensorboard`, to output_dir/tensorboard. Call close() at the end.

    `start` is the step training begins after: 0 for a fresh run (an old log at `log_path` is
    emptied), the checkpoint's step on resume (the log keeps the rows up to it and drops any
    logged after it, which the resumed run writes again). Only the `main` process of several
    (rank 0) writes TensorBoard; the others give no log_path."""

    SCALARS = ("loss", "lr", "tokens_per_second", "eval_loss")  # the rows' keys TensorBoard plots

    def __init__(self, config: TrainConfig, log_path: str | os.PathLike | None, *, start: int = 0,
                 main: bool = True):
        self.every = config.log_every
        self.file = None
        if log_path:
            try:
                keep_until(Path(log_path), start)
                # Appended line by line, flushed each time: the log of a killed run holds every step it finished.
                self.file = open(log_path, "a")
            except OSError as e:
                raise TrainingError(f"cannot write the training log {log_path}: {e.strerror}; make its folder "
                                    "writable (and check free space) or choose another output folder") from e
        self.writer = _tensorboard(config) if config.tensorboard and main else None

    def write(self, row: dict[str, float]) -> None:
        step = row["step"]
        if step % self.every:
            return
        if self.file:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        if self.writer:
            for key in self.SCALARS:
                if key in row:
                    self.writer.add_scalar(f"train/{key}", row[key], step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


def keep_until(path: Path, step: int) -> None:
    """Keep the rows of the JSONL log at `path` up to `step` (none for 0), rewritten atomically.
    A line that does not parse (the last one of a process killed mid-write) goes too: the step
    it was half of is run, and logged, again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(row)
    io.write_jsonl(path, kept)


def _tensorboard(config: TrainConfig) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingError("tensorboard=True needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(Path(config.output_dir or ".") / "tensorboard"))


def plot_loss(history: list[dict[str, float]], path: Path) -> Path | None:
    """Write the loss curve (and eval loss when measured) as a PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([r["step"] for r in history], [r["loss"] for r in history], label="train loss")
    evals = [r for r in history if "eval_loss" in r]
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per target token")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    return io.write_bytes(path, png.getvalue())
