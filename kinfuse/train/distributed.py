"""Training on several processes (torchrun): data parallelism of the LoRA weights.

Under `torchrun --nproc-per-node N` (WORLD_SIZE > 1 in the environment) each process holds
the whole model, trains on its own share of every optimizer step's micro-batches and, after
its backward passes, the trainable weights' gradients are summed over the processes
(all_reduce_grads). One optimizer step on N processes with grad_accum A is then one step of a
single process with grad_accum N x A: the loop normalises every micro-batch's loss by the
target tokens of the whole (global) step, so the summed gradients are the single process's.

Why a manual all-reduce and not DistributedDataParallel: the loss does not go through the
peft model's forward alone (the KL anchor switches the adapter off, gradient checkpointing
reruns layers, the fused cross-entropy skips the head), which DDP's hooks would need
find_unused_parameters and static-graph care for; DDP also averages gradients where the
token-normalised loss needs them summed; and with accumulation DDP needs no_sync on every
micro-batch but the last. Summing the LoRA gradients once per optimizer step (one flat
buffer: they are a few MB) is the same communication as DDP with no_sync, in a dozen lines.

Rank 0 alone logs, writes checkpoints, the adapter and run.json, and evaluates. Without
WORLD_SIZE > 1 nothing here does anything: a single process trains exactly as before.
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Any

from ..errors import KinfuseError

# How long a process waits for the others at a collective: rank 0 alone builds the corpus and
# the training mix (fetching pages, a model writing rows) while the others wait for its blocks,
# which can take far longer than torch's default 10-30 minutes.
TIMEOUT_ENV = "KINFUSE_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 6 * 3600


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when unset)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise KinfuseError(f"WORLD_SIZE={value!r} is not a number: launch with torchrun --nproc-per-node N") from None


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Whether this process logs, writes and evaluates (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def sum_floats(self, values: list[float], device: Any) -> list[float]:
        """Each value summed over the processes (float64), in one collective."""
        if not self.enabled:
            return values
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def max_int(self, value: int, device: Any) -> int:
        """The largest of the processes' values (a stop flag raised on any rank stops all)."""
        if not self.enabled:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def broadcast(self, obj: Any, device: Any = None) -> Any:
        """Rank 0's `obj` on every process (pickled: only for plain data rank 0 produced)."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, device=device)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sync_weights(self, params: list[Any]) -> None:
        """Rank 0's trainable weights on every process: the LoRA init is seeded alike, but a
        run must not depend on every rank drawing the same numbers."""
        if not self.enabled:
            return
        import torch.distributed as dist

        for p in params:
            dist.broadcast(p.data, src=0)

    def all_reduce_grads(self, params: list[Any]) -> None:
        """Sum the gradients of `params` over the processes, in one flat buffer.

        A weight that no process gave a gradient stays without one, as in a single process
        (the optimizer then skips it); one that only some processes reached counts zero for
        the others."""
        if not self.enabled or not params:
            return
        import torch
        import torch.distributed as dist

        ref = params[0]
        have = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=ref.device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().flatten()
                          for p in params] + [have])
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            if p.grad is None:
                p.grad = torch.empty_like(p)
            p.grad.copy_(flat[offset:offset + n].view_as(p))
            offset += n
        for p, reached in zip(params, flat[offset:].tolist()):
            if not reached:
                p.grad = None


_CURRENT = Dist()


def current() -> Dist:
    """The Dist set up by init(), or a single process."""
    return _CURRENT


def init(device_name: str = "auto") -> Dist:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT),
    once; a single process (WORLD_SIZE unset or 1) joins nothing. On CUDA each process takes
    GPU LOCAL_RANK and talks NCCL; on the CPU, gloo."""
    global _CURRENT
    world = env_world_size()
    if world <= 1:
        return _CURRENT
    import torch
    import torch.distributed as dist

    if dist.is_initialized():  # by us earlier, or by the caller (accelerate, a user script)
        _CURRENT = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        return _CURRENT
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise KinfuseError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: launch several processes with "
                          "torchrun --nproc-per-node N (which sets them), or unset WORLD_SIZE for one process")
    local = int(os.environ["LOCAL_RANK"])
    on_gpu = torch.cuda.is_available() and not device_name.startswith("cpu")
    if on_gpu:
        if local >= torch.cuda.device_count():
            raise KinfuseError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) visible: launch at "
                              "most that many processes per node (torchrun --nproc-per-node)")
        torch.cuda.set_device(local)  # so that device "auto"/"cuda" means this process's own GPU
    seconds = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    dist.init_process_group("nccl" if on_gpu else "gloo", timeout=datetime.timedelta(seconds=seconds))
    atexit.register(shutdown)
    _CURRENT = Dist(dist.get_rank(), dist.get_world_size(), local)
    return _CURRENT


def shutdown() -> None:
    """Leave the process group (at exit, or when the caller is done)."""
    global _CURRENT
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = Dist()

