"""Checkpoints: output_dir/checkpoints/step-N, each enough to continue a run exactly.

    step-N/adapter/     the adapter as PEFT safetensors (loadable by plain peft)
    step-N/state.pt     optimizer, scheduler, RNG states (every process's, under torchrun) and the
                        RunState (tensors and plain containers only: loaded with weights_only=True,
                        so a file can never run code)
    step-N/meta.json    what the run was (model, LoRA, blocks, schedule); a resume must match it

A checkpoint is written into a staged folder that replaces step-N only when whole, so a
crash mid-write never leaves one that a resume would trip over.
"""

from __future__ import annotations

import errno
import io
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..io import staged_dir
from . import fsdp
from .result import TrainingError


@dataclass
class RunState:
    """What a checkpoint needs besides weights and optimizer to continue exactly."""

    step: int = 0
    tokens: int = 0
    targets: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


class Checkpoints:
    """Saving and resuming the checkpoints of one trainer's peft `model`.

    `meta` describes the run (see QLoRATrainer.run_meta); save() records it and load() refuses
    a checkpoint whose meta differs. `last` is the checkpoint last written or resumed from.
    """

    def __init__(self, config: TrainConfig, model: Any, *, sharded: bool = False):
        self.config, self.model = config, model
        self.sharded = sharded  # FSDP (fsdp.py): weights and optimizer state gathered whole to write
        self.last: Path | None = None

    @property
    def root(self) -> Path:
        return Path(self.config.output_dir or ".") / "checkpoints"

    def find_resume(self) -> Path | None:
        """The checkpoint to continue from: resume_from, the newest complete one with resume,
        or None (a fresh start)."""
        cfg = self.config
        if cfg.resume_from:
            path = Path(cfg.resume_from)
            if not (path / "meta.json").is_file():
                raise TrainingError(f"resume_from={str(path)!r} is not a kinfuse checkpoint (no meta.json)")
            return path
        if not cfg.resume:
            return None
        done = sorted(p for p in self.root.glob("step-*") if (p / "meta.json").is_file())
        return done[-1] if done else None  # nothing yet: a fresh start

    def save(self, run: RunState, optimizer: Any, scheduler: Any, meta: dict[str, Any], dist: Any = None) -> Path:
        """Adapter, optimizer, scheduler, RNG and data position, written atomically.

        Under torchrun (`dist`, a kinfuse.train.distributed.Dist) every process calls this: rank
        0 writes, with every process's RNG state, and the others wait until it is whole."""
        final = self.root / f"step-{run.step:07d}"
        rng = rng_state()
        ranks = dist.all_gather(rng) if dist is not None and dist.enabled else None
        # Under FSDP every process takes part in gathering the shards; rank 0 writes the whole.
        weights = fsdp.trainable_state(self.model) if self.sharded else None
        opt_state = fsdp.full_optimizer_state(optimizer) if self.sharded else optimizer.state_dict()
        if dist is None or dist.main:
            try:
                self._write(final, run, opt_state, scheduler, meta, rng if ranks is None else {**rng, "ranks": ranks},
                            weights)
            except Exception as e:  # OSError, or safetensors'/torch's own errors for the same failed write
                before = f"the last good checkpoint is {self.last}" if self.last else "no earlier checkpoint was written"
                raise TrainingError(f"could not write checkpoint {final} at step {run.step}: {write_failure(e)}; "
                                    f"nothing partial was left and {before}") from e
        if ranks is not None:
            dist.barrier()
        self.last = final
        return final

    def _write(self, final: Path, run: RunState, opt_state: dict[str, Any], scheduler: Any, meta: dict[str, Any],
               rng: dict[str, Any], weights: dict[str, Any] | None = None) -> None:
        import torch

        with staged_dir(final) as tmp:
            self.model.save_pretrained(tmp / "adapter", safe_serialization=True, state_dict=weights)
            # Serialised in memory (optimizer state is twice the LoRA weights: small), then written
            # by Python: a full disk is then an OSError(ENOSPC), where torch's zip writer says only
            # "unexpected pos".
            buffer = io.BytesIO()
            torch.save({"optimizer": opt_state, "scheduler": scheduler.state_dict(), "rng": rng,
                        "run": asdict(run)}, buffer)
            (tmp / "state.pt").write_bytes(buffer.getbuffer())
            # meta.json last: a checkpoint without it is incomplete and never resumed from.
            (tmp / "meta.json").write_text(json.dumps({**meta, "step": run.step}, indent=1))

    def load(self, path: Path, optimizer: Any, scheduler: Any, meta: dict[str, Any], rank: int = 0) -> RunState:
        """Put adapter, optimizer, scheduler and RNG (process `rank`'s, under torchrun) back as
        they were at `path`; the RunState to continue from. Refuses a checkpoint of another run
        (or of another number of processes), and one that does not load."""
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        saved = read_meta(path)
        saved.setdefault("full_modules", [])  # checkpoints from before trainable embeddings had none
        saved.setdefault("world_size", 1)  # and from before torchrun, one process
        if saved["world_size"] != meta.get("world_size", 1):
            n = saved["world_size"]
            raise TrainingError(
                f"checkpoint {path} was written by {n} training process(es), this run has {meta.get('world_size', 1)}: "
                "a run resumes exactly only on as many processes (each its own share of the batch and its own "
                "random state); resume with " + (f"torchrun --nproc-per-node {n} ..." if n > 1 else "one process "
                "(no torchrun)") + ", or start afresh with train.resume = false")
        diffs = [f"{k}: checkpoint has {saved.get(k)!r}, this run {meta[k]!r}" for k in meta if saved.get(k) != meta[k]]
        if diffs:
            raise TrainingError(f"checkpoint {path} does not match this run:\n  " + "\n  ".join(diffs)
                                + "\nresume with the same model, LoRA settings, blocks and schedule, or start afresh")
        try:
            weights = load_file(path / "adapter" / "adapter_model.safetensors")
            state = torch.load(path / "state.pt", weights_only=True)  # tensors and plain containers only: never runs code from the file
            if self.sharded:  # whole tensors on file, each process its shard
                fsdp.load_trainable(self.model, weights)
                fsdp.load_full_optimizer_state(optimizer, state["optimizer"])
            else:
                result = set_peft_model_state_dict(self.model, weights)
                if getattr(result, "unexpected_keys", None):
                    raise ValueError(f"unexpected adapter weights {result.unexpected_keys[:3]}")
                optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except Exception as e:  # a truncated or foreign file fails in many ways; all mean "corrupt"
            raise TrainingError(f"checkpoint {path} is corrupt or from another model: {type(e).__name__}: {e}") from e
        for p in self.model.parameters():
            if p.requires_grad and not self.sharded:  # the sharded ones are copied into, fp32 already
                p.data = p.data.float()
        rng = state["rng"]["ranks"][rank] if "ranks" in state["rng"] else state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.last = path
        return RunState(**state["run"])


def rng_state() -> dict[str, Any]:
    """This process's random states (torch, Python, CUDA), as a checkpoint keeps them."""
    import torch

    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's meta.json, or a TrainingError naming it and the way on when it is empty,
    truncated or not an object (a hand-copied or damaged checkpoint)."""
    file = path / "meta.json"
    try:
        saved = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        saved = e
    if not isinstance(saved, dict):
        why = f"{type(saved).__name__}: {saved}" if isinstance(saved, Exception) else "not a JSON object"
        raise TrainingError(f"checkpoint {path} is damaged: {file} does not read ({why}); delete {path} to resume "
                            "from the checkpoint before it, or set train.resume = false (and no resume_from) to "
                            "start afresh")
    return saved


def write_failure(e: Exception) -> str:
    """What a failed write means and what to do. A full disk reaches us as OSError(ENOSPC) from
    Python, as SafetensorError "No space left on device (os error 28)" from safetensors, or as
    a RuntimeError from torch.save's zip writer (a tokenizer or other file saved by a library):
    each is told as a full disk."""
    text = f"{type(e).__name__}: {e}"
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left" in text or "os error 28" in text:
        return "the disk is full; free some space (or choose another output_dir), then resume with train.resume = true"
    if isinstance(e, PermissionError) or "Permission denied" in text or "Read-only file system" in text:
        return f"{text}; make the folder writable (or choose another output_dir)"
    if "unexpected pos" in text or "file write failed" in text:  # torch.save's zip writer ran out of room
        return (f"{text} (the disk is likely full); free some space (or choose another output_dir), then resume "
                "with train.resume = true")
    return f"{text}; check the folder is writable and has free space"
