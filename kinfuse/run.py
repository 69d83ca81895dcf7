"""The run record: what one `infuse` run wrote, typed, in `RUN_DIR/run.json`.

Training writes it (and rewrites it when evaluation finishes); export, verify and report read
it. Nothing downstream re-derives a training decision (the compute dtype NF4 weights were
quantized from, the device, whether training finished) from the config or from metrics.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import io
from .errors import KinfuseError

RECORD_FILE = "run.json"
FORMAT_VERSION = 1
STATUSES = ("running", "completed", "interrupted", "failed")


def kinfuse_version() -> str:
    """The installed kinfuse's version ("" when run from a source tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kinfuse")
    except PackageNotFoundError:
        return ""


class RunRecordError(KinfuseError):
    """A run folder whose record is missing, unreadable or from an unknown format."""


@dataclass
class RunRecord:
    model: str  # the base model as the run loaded it: a local folder or a hub id
    quantize: str  # "nf4" or "none": how the base weights were held while training
    compute_dtype: str  # what training computed in; NF4 weights were quantized from this dtype
    device: str  # where training ran ("cpu", "cuda:0"): NF4 rounding differs between the two
    chat: bool  # trained and asked through the tokenizer's chat template
    steps: int  # optimizer steps run
    # "running" (written before training starts, so a killed run is never taken for a finished
    # one), "completed", "interrupted" (SIGINT/SIGTERM, after a checkpoint) or "failed"
    status: str = "running"
    reason: str = ""  # why the run is not "completed": the signal or the error
    adapter: str = "adapter"  # the adapter folder, relative to the run folder
    checkpoint: str | None = None  # the last checkpoint written or resumed from
    metrics: str | None = None  # "metrics.json" once evaluation has written it
    config: dict[str, Any] = field(default_factory=dict)  # the InfuseConfig, as a dict
    kinfuse_version: str = ""
    format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RunRecordError(f"run record status {self.status!r}: expected one of {', '.join(STATUSES)}")

    @property
    def completed(self) -> bool:
        """Training ran its last step: the adapter is the one the run set out to train."""
        return self.status == "completed"

    def trained(self, train: Any) -> RunRecord:
        """The record once training returned (a TrainResult): completed, or interrupted by a signal."""
        self.steps, self.checkpoint = train.steps, train.checkpoint
        self.status = "interrupted" if train.interrupted else "completed"
        self.reason = f"stopped by {train.stop_signal or 'a signal'} at step {train.steps}" if train.interrupted else ""
        return self

    def failed(self, error: BaseException, checkpoint: Any = None) -> RunRecord:
        """The record when training raised: Ctrl-C outside the trainer's handler is an interruption."""
        self.status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        self.reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        self.checkpoint = str(checkpoint) if checkpoint else None
        return self

    @property
    def trained_on(self) -> str:
        """"cuda" or "cpu": where the NF4 weights were quantized."""
        return "cuda" if self.device.startswith("cuda") else "cpu"

    def write(self, run_dir: str | os.PathLike) -> Path:
        return io.write_json(Path(run_dir) / RECORD_FILE, asdict(self))

    @classmethod
    def exists(cls, run_dir: str | os.PathLike) -> bool:
        return (Path(run_dir) / RECORD_FILE).is_file()

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> RunRecord:
        path = Path(run_dir) / RECORD_FILE
        if not path.is_file():
            raise RunRecordError(f"{run_dir}: no {RECORD_FILE}; this is not a kinfuse run folder, or the run "
                                 "stopped before training began")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunRecordError(f"{path}: not JSON ({e}); the file is damaged, rerun the infusion") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise RunRecordError(f"{path}: unknown run record format {data.get('format') if isinstance(data, dict) else data!r} "
                                 f"(this kinfuse reads format {FORMAT_VERSION}); use the kinfuse version that wrote it")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise RunRecordError(f"{path}: incomplete run record ({e}); rerun the infusion") from None
        except RunRecordError as e:
            raise RunRecordError(f"{path}: {e}; rerun the infusion") from None

    def incomplete(self, run_dir: str | os.PathLike) -> str | None:
        """Why the adapter of this run is not the one it set out to train (None when it is): the
        message export and verify refuse it with, naming the run and the ways on."""
        why = self.why_incomplete()
        if why is None:
            return None
        resume = (f"; resume it from {self.checkpoint} (train.resume = true, or --train.resume)"
                  if self.checkpoint else "")
        return (f"run {run_dir} is not complete ({RECORD_FILE} status {self.status!r}): {why}. Its adapter is "
                f"partial or stale{resume}, or rerun the infusion; pass --allow-incomplete "
                "(allow_incomplete=True) to use it anyway")

    def why_incomplete(self) -> str | None:
        """What stopped training, in a few words (None for a completed run)."""
        return {
            "completed": None,
            "running": "training has not finished: it is still running, or the process was killed",
            "interrupted": f"training was interrupted ({self.reason or 'SIGINT/SIGTERM'}) after {self.steps} steps",
            "failed": f"training failed: {self.reason or 'unknown error'}",
        }[self.status]
