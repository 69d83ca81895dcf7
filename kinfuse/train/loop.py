"""The training loop, top to bottom. Each optimizer step: forward and backward over its
micro-batches (forward_backward, a StepResult), clip, step the optimizer and the schedule,
record a history row, then hand the row to the log (StepLog), checkpoint (Checkpoints), and
stop when a signal asked for it (StopOnSignal).

The loss of a step is normalised by the target tokens of the whole step, not per
micro-batch, so gradient accumulation gives the same update as one big batch whatever the
padding.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from . import fsdp
from .blocks import BlockTensors
from .checkpoint import RunState
from .logs import StepLog
from .losses import autocast
from .memory import oom_advice, peak_memory
from .optim import lr_factor, make_optimizer, param_groups, total_steps
from .result import StepResult, TrainingError, TrainResult, cross_entropy

if TYPE_CHECKING:
    from .trainer import QLoRATrainer


def train_loop(trainer: "QLoRATrainer", data: BlockTensors, held_out: BlockTensors | None,
               log_path: str | os.PathLike | None) -> TrainResult:
    """Train `trainer.model` on `data` (resuming when the config says so); held_out blocks
    give an eval_loss every `eval_every` steps."""
    import torch
    from tqdm.auto import tqdm

    cfg, device, model, dist = trainer.config, trainer.device, trainer.model, trainer.dist
    # Under torchrun every step takes world_size x grad_accum micro-batches, this process the
    # grad_accum of them at its rank: one process with that many accumulated is the same run.
    per_step = cfg.grad_accum * dist.world_size
    if dist.enabled and len(set(dist.all_gather((data.n, data.length, int(data.ids.sum()))))) > 1:
        raise TrainingError("the training processes were given different blocks: under torchrun every process "
                            "must train on the same blocks (the same corpus, Chunker and seed); each takes its share")
    total = total_steps(cfg, data.n, dist.world_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(param_groups(model, cfg), cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total))
    checkpoints, meta = trainer.checkpoints, trainer.run_meta(data, total)
    resume = checkpoints.find_resume()
    sharded = trainer.sharded  # FSDP (fsdp.py): FSDP reduces the gradients itself
    if resume is None and dist.enabled:
        if not sharded:  # under FSDP rank 0's weights were copied to all before sharding
            dist.sync_weights(params)
        # Each process draws its own dropout masks, as the micro-batches of one process do.
        torch.manual_seed(cfg.seed + 1_000_033 * dist.rank)
    run = RunState() if resume is None else checkpoints.load(resume, optimizer, scheduler, meta, rank=dist.rank)
    log = StepLog(cfg, log_path if dist.main else None, start=run.step, main=dist.main)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    start = time.perf_counter() - run.seconds
    bar = tqdm(range(run.step, total), desc="training", disable=not (cfg.progress and dist.main), dynamic_ncols=True)
    stop = StopOnSignal()
    try:
        with stop:
            for step in bar:
                micro = [data.micro_batch(k, cfg) for k in range(step * per_step, (step + 1) * per_step)]
                mine = micro[dist.rank * cfg.grad_accum:(dist.rank + 1) * cfg.grad_accum]
                align = _pass_counts(data, micro, cfg.grad_accum, dist.world_size) if sharded else None
                result = forward_backward(trainer, data, mine, step_targets=_targets(data, micro), align=align)
                if not sharded:
                    dist.all_reduce_grads(params)
                run.tokens += result.tokens
                run.targets += result.target_tokens
                if not math.isfinite(result.loss):
                    raise TrainingError(
                        f"loss became {result.loss} at step {step + 1}: lower learning_rate (now "
                        f"{cfg.learning_rate}) or set max_grad_norm; " + _last_good(checkpoints)
                    )
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                try:
                    optimizer.step()
                except RuntimeError as e:
                    if "overflow" not in str(e):
                        raise
                    raise TrainingError(f"learning_rate {cfg.learning_rate} is too large for the optimizer at step "
                                        f"{step + 1} ({e}); lower it (the default is 2e-4)") from e
                if not _all_finite(params, dist if sharded else None, device):
                    # A finite loss can still take a step that overflows the weights (a huge
                    # learning rate): caught here, the step that did it is named and nothing
                    # downstream saves the adapter as if it were good.
                    raise TrainingError(
                        f"the LoRA weights became inf/NaN at step {step + 1} (its loss was {result.loss:.4g}): "
                        f"learning_rate {cfg.learning_rate} is too large; lower it (the default is 2e-4) "
                        "or set max_grad_norm; " + _last_good(checkpoints)
                    )
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                run.step = step + 1
                run.seconds = time.perf_counter() - start
                row = _history_row(run, result, scheduler.get_last_lr()[0], peak_memory(device)[0])
                # Under FSDP every process runs the sharded model's forwards together.
                if (held_out is not None and cfg.eval_every and run.step % cfg.eval_every == 0
                        and (dist.main or sharded)):
                    row["eval_loss"] = trainer.evaluate_loss(held_out)
                run.history.append(row)
                bar.set_postfix(loss=f"{result.loss:.3f}", lr=f"{row['lr']:.1e}",
                                tok_s=f"{row['tokens_per_second']:.0f}", mem=f"{row['peak_memory_gb']:.1f}G")
                log.write(row)
                stopping = stop.collective(dist, device)  # read once: the checkpoint and the stop agree
                if stopping or (cfg.save_every and run.step % cfg.save_every == 0):
                    if cfg.output_dir:
                        checkpoints.save(run, optimizer, scheduler, meta, dist)
                if stopping:
                    break
    except torch.OutOfMemoryError as e:
        raise TrainingError(oom_advice(cfg, device, data.length, run.step + 1)) from e
    finally:
        bar.close()
        log.close()
    mem, kind = peak_memory(device)
    model.eval()
    ce_rows = [c for c in map(cross_entropy, run.history) if c is not None]
    return TrainResult(
        steps=run.step,
        tokens=run.tokens,
        target_tokens=run.targets,
        seconds=run.seconds,
        tokens_per_second=run.tokens / max(run.seconds, 1e-9),
        peak_memory_bytes=mem,
        peak_memory_kind=kind,
        first_loss=ce_rows[0] if ce_rows else float("nan"),
        final_loss=ce_rows[-1] if ce_rows else float("nan"),
        device=str(device),
        compute_dtype=trainer.dtype_name,
        history=run.history,
        interrupted=stop.requested,
        stop_signal=stop.signal_name,
        checkpoint=str(checkpoints.last) if checkpoints.last else None,
    )


def _targets(data: BlockTensors, micro: list[Any]) -> int:
    return int(sum(data.targets[m].sum() for m in micro))


def _parts(data: BlockTensors, micro: list[Any]) -> list[tuple[Any, bool]]:
    """(rows, is_anchor) of each forward/backward pass over the micro-batches: anchor blocks
    (kept close to the base model) and plain blocks go in separate passes."""
    if data.anchor is None:
        return [(m, False) for m in micro]
    return [(m[sel], kind) for m in micro for kind, sel in ((False, ~data.anchor[m]), (True, data.anchor[m]))
            if sel.any()]


def _pass_counts(data: BlockTensors, micro: list[Any], share: int, world: int) -> tuple[int, int]:
    """The most plain and anchor passes any process makes this step (`share` micro-batches each)."""
    counts = [[sum(kind == a for _, kind in _parts(data, micro[r * share:(r + 1) * share])) for a in (False, True)]
              for r in range(world)]
    return max(c[0] for c in counts), max(c[1] for c in counts)


def forward_backward(trainer: "QLoRATrainer", data: BlockTensors, micro: list[Any],
                     step_targets: int | None = None, align: tuple[int, int] | None = None) -> StepResult:
    """Forward and backward over the micro-batches (block indices) of one optimizer step;
    the gradients accumulate on the trainable weights. `step_targets`, the target tokens the
    losses are normalised by, are those of `micro` unless given (the whole step's, under
    torchrun); the StepResult is then the whole step's, summed over the processes.

    `align` (FSDP): the plain and anchor passes every process must make. A sharded model
    gathers each unit's weights in a collective at every forward and backward, so all
    processes run alike passes in the same order, the plain ones first (one forward each)
    then the anchor ones (two forwards: adapter off, then on); a process with fewer runs
    extra passes on its first rows with their loss times zero, which adds nothing."""
    import torch

    step_targets = _targets(data, micro) if step_targets is None else step_targets
    step_loss = 0.0
    # save_on_cpu moves what autograd saves (the checkpointed layer inputs among it) to host memory.
    offload = (
        torch.autograd.graph.save_on_cpu(pin_memory=True)
        if trainer.offload_activations
        else contextlib.nullcontext()
    )
    sums, counts = [0.0, 0.0], [0, 0]  # [cross-entropy, anchor KL] and their target tokens
    passes = [(rows, kind, 1.0) for rows, kind in _parts(data, micro)]  # (rows, is_anchor, loss factor)
    if align is not None:
        aligned = []
        for kind in (False, True):
            mine = [q for q in passes if q[1] == kind]
            aligned += mine + [(micro[0][:1], kind, 0.0)] * (align[kind] - len(mine))
        passes = aligned
    for rows, is_anchor, real in passes:
        ids, labels, pos = (t[rows].to(trainer.device) for t in (data.ids, data.labels, data.pos))
        with autocast(trainer.device, trainer.compute_dtype), offload:
            part = (trainer.kl_sum if is_anchor else trainer.loss_sum)(ids, labels, pos) * real
            weight = trainer.config.anchor_kl_weight if is_anchor else 1.0
            loss = weight * part / max(1, step_targets)
            loss.backward()
        if real:
            sums[is_anchor] += part.item()
            counts[is_anchor] += int(data.targets[rows].sum())
            step_loss += loss.item()
    tokens = int(sum(data.real[m].sum() for m in micro))
    if trainer.dist.enabled:  # this process's share of the step -> the step's
        step_loss, *sums, c0, c1, tokens = trainer.dist.sum_floats([step_loss, *sums, *counts, tokens], trainer.device)
        counts, tokens = [int(c0), int(c1)], int(tokens)
    ce, kl = (s / c if c else None for s, c in zip(sums, counts))
    return StepResult(loss=step_loss, target_tokens=step_targets, tokens=tokens, anchor_kl=kl, ce=ce)


def _all_finite(params: list[Any], dist: Any = None, device: Any = None) -> bool:
    """Whether every trainable weight is finite (one host sync for all of them). With `dist`
    (FSDP) each process checks its shards and they agree, so all stop or none."""
    import torch

    local = [fsdp.local_shard(p) for p in params] if dist is not None else params
    peaks = [p.detach().abs().amax().float() for p in local if p.numel()]  # a shard may be empty
    finite = not peaks or bool(torch.isfinite(torch.stack(peaks)).all())
    return finite if dist is None else not dist.max_int(int(not finite), device)


def _last_good(checkpoints: Any) -> str:
    return (f"the last good checkpoint is {checkpoints.last}" if checkpoints.last
            else "no checkpoint was written (set output_dir and save_every)")


def _history_row(run: RunState, result: StepResult, lr: float, memory: int) -> dict[str, float]:
    row = {
        "step": run.step,
        "loss": result.loss,
        "lr": lr,
        "tokens": run.tokens,
        "seconds": run.seconds,
        "tokens_per_second": run.tokens / run.seconds,
        "peak_memory_gb": memory / 2**30,
    }
    if result.anchor_kl is not None:  # per anchor target token, before weighting
        row["anchor_kl"] = result.anchor_kl
        if result.ce is not None:  # the step's loss mixes the two; this is its text part
            row["ce"] = result.ce
    return row


class StopOnSignal:
    """SIGINT/SIGTERM ask the loop to stop after the current step (and checkpoint); a second
    SIGINT interrupts at once. Handlers are installed only in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None  # "SIGINT" or "SIGTERM": the first signal received
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def collective(self, dist: Any, device: Any) -> bool:
        """Whether to stop now, decided alike by every process: a signal to any of them stops
        all after this step (and the checkpoint they write together)."""
        if not dist.enabled:
            return self.requested
        code = dist.max_int(SIGNALS.index(self.signal_name) if self.requested else 0, device)
        if code:
            self.requested = True
            self.signal_name = self.signal_name or SIGNALS[code]
        return bool(code)


SIGNALS = (None, "SIGINT", "SIGTERM")  # the codes the processes' stop decision is shared in
