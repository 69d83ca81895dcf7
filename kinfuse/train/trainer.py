"""QLoRATrainer: our own training recipe over the modules of kinfuse.train (no transformers.Trainer).

setup:  pick device and dtype, load the base model (NF4 with double quantization via
        bitsandbytes, or plain), enable gradient checkpointing, wrap every linear projection
        with a peft LoRA, swap in the kernels' and the lean LoRA forwards (setup.py).
train:  shuffled packed blocks (blocks.py) -> micro-batches -> loss over target tokens only
        (losses.py), normalised by the target tokens of the whole optimizer step -> clip ->
        AdamW -> schedule (optim.py), with logs and checkpoints (loop.py).
save:   the adapter as PEFT safetensors, loadable by plain peft.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..io import staged_dir
from ..models import load_tokenizer, resolve_model
from . import distributed, fsdp, fsdp_load, losses
from .blocks import BlockTensors, check_blocks
from .checkpoint import Checkpoints, write_failure
from .logs import plot_loss
from .loop import train_loop
from .result import TrainingError, TrainResult
from .setup import build_model, patch_forwards, pick_device, pick_dtype, tune_allocator


class QLoRATrainer:
    """Train a LoRA adapter on a (4-bit quantized) causal LM.

    `model` is a Hugging Face id, a local checkpoint folder, or `kinfuse.default_model()`.
    """

    def __init__(self, model: str | os.PathLike, config: TrainConfig | None = None, *, tokenizer: Any = None):
        self.config = (config or TrainConfig()).validate()
        cfg = self.config
        # Under torchrun: join the other processes (and, on CUDA, take GPU LOCAL_RANK) first.
        self.dist = distributed.init(cfg.device)
        self.device = pick_device(cfg.device)
        self.compute_dtype = pick_dtype(cfg.compute_dtype, self.device)
        self.dtype_name = str(self.compute_dtype).removeprefix("torch.")  # recorded for export (results, checkpoints)
        self.model_name = resolve_model(model)
        tune_allocator(cfg, self.device)
        self.tokenizer = tokenizer or load_tokenizer(self.model_name)
        # FSDP-QLoRA (fsdp.py): what it cannot run is refused before the model loads; the stock
        # modules in place of the Triton ops (fsdp.kernels_setting says why).
        self.sharded = cfg.distributed == "fsdp"
        patch_cfg = cfg
        if self.sharded:
            fsdp.check_config(self.dist)
            if cfg.optimizer == "auto":  # torch AdamW steps sharded weights; bitsandbytes' paged one does not
                self.config = cfg = replace(cfg, optimizer="adamw")
            patch_cfg = replace(cfg, kernels=fsdp.kernels_setting(cfg))
        # fsdp_loading = "sharded": the base weights stay on the meta device until sharded (fsdp_load.py)
        self.loader = None
        if self.sharded and cfg.fsdp_loading == "sharded":
            self.model, self.full_modules, self.loader = fsdp_load.build_meta_model(self.model_name, cfg,
                                                                                    self.compute_dtype)
        else:
            self.model, self.full_modules = build_model(self.model_name, cfg, self.device, self.compute_dtype)
        self.kernel_patch, self.fused_ce = patch_forwards(self.model, patch_cfg, self.device, self.compute_dtype,
                                                          full_modules=bool(self.full_modules))
        if self.sharded:
            fsdp_load.shard_model(self.model, self.dist, self.device, self.loader)
        base = self.model.get_base_model()
        self.plain_head = losses.has_plain_head(base)
        self.max_length = getattr(base.config, "max_position_embeddings", None)
        # On a CPU the saved tensors are in host memory already: offloading would only copy them.
        self.offload_activations = cfg.offload_activations and self.device.type == "cuda"
        self.checkpoints = Checkpoints(cfg, self.model, sharded=self.sharded)

    @property
    def last_checkpoint(self) -> Path | None:
        """The checkpoint last written or resumed from."""
        return self.checkpoints.last

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def loss_sum(self, ids: Any, labels: Any, pos: Any) -> Any:
        """Summed next-token cross-entropy over target tokens, for (B, T) ids/labels/positions."""
        return losses.loss_sum(self.model, ids, labels, pos, plain_head=self.plain_head, fused_ce=self.fused_ce)

    def kl_sum(self, ids: Any, labels: Any, pos: Any) -> Any:
        """Summed KL(base || adapted) at the target positions of (B, T) blocks (the adapter off
        gives the base)."""
        return losses.kl_sum(self.model, ids, labels, pos, plain_head=self.plain_head)

    def train(
        self, blocks: Any, *, eval_blocks: Any = None, log_path: str | os.PathLike | None = None
    ) -> TrainResult:
        """Train on packed blocks (from Chunker); returns steps, tokens, tokens/s and peak memory.

        With `config.output_dir`, checkpoints go to `output_dir/checkpoints/step-N` every
        `save_every` steps and on SIGINT/SIGTERM; `resume`/`resume_from` continue from one.
        """
        check_blocks(blocks, self.max_length)
        data = BlockTensors(blocks)
        held_out = BlockTensors(eval_blocks) if eval_blocks is not None and len(eval_blocks) else None
        result = train_loop(self, data, held_out, log_path)
        if self.config.output_dir and result.history and self.dist.main:
            plot_loss(result.history, Path(self.config.output_dir) / "loss.png")
        return result

    def evaluate_loss(self, data: Any) -> float:
        """Mean per-token loss on held-out blocks (no gradients, dropout off)."""
        import torch

        data = data if isinstance(data, BlockTensors) else BlockTensors(data)
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        try:
            with torch.no_grad(), losses.autocast(self.device, self.compute_dtype):
                for i in range(0, data.n, self.config.micro_batch_size):
                    m = torch.arange(i, min(i + self.config.micro_batch_size, data.n))
                    ids, labels, pos = (t[m].to(self.device) for t in (data.ids, data.labels, data.pos))
                    total += self.loss_sum(ids, labels, pos).item()
                    count += int(data.targets[m].sum())
        finally:
            self.model.train(was_training)
        return total / max(1, count)

    def run_meta(self, data: BlockTensors, total: int) -> dict[str, Any]:
        """What a checkpoint records of the run, and a resume must match."""
        c = self.config
        return {
            "model": self.model_name,
            "compute_dtype": self.dtype_name,
            "lora": {"r": c.lora_r, "alpha": c.lora_alpha, "target_modules": c.target_modules,
                     "use_dora": c.use_dora, "use_rslora": c.use_rslora, "quantize": c.quantize},
            "blocks": [data.n, data.length],
            "total_steps": total,
            "micro_batch_size": c.micro_batch_size,
            "grad_accum": c.grad_accum,
            "full_modules": self.full_modules,
            "world_size": self.dist.world_size,
        }

    def save_adapter(self, path: str | os.PathLike) -> Path:
        """Write the adapter (adapter_config.json + adapter_model.safetensors) and the tokenizer.

        The folder is filled beside `path` and swapped in whole (kinfuse.io.staged_dir): a full
        disk or a crash leaves the previous adapter or none, never a truncated file. Under
        torchrun every process calls this and rank 0 alone writes (under FSDP the others' shards
        are gathered for it); every process returns once the adapter is whole."""
        path = Path(path)
        weights = fsdp.trainable_state(self.model) if self.sharded else None
        if self.dist.main:
            try:
                with staged_dir(path) as tmp:
                    self.model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
                    self.tokenizer.save_pretrained(tmp)
            except Exception as e:  # OSError, or safetensors'/the tokenizer's own errors for the same failed write
                raise TrainingError(f"could not save the adapter to {path}: {write_failure(e)}; nothing partial "
                                    "was left there") from e
        # A process that returned at once would go on to exit and tear its process group down
        # while rank 0 still writes, and gloo can abort on that teardown ("terminate called
        # without an active exception", seen once in CI). If rank 0's write fails it raises
        # before here, exits, and torchrun stops the processes waiting.
        self.dist.barrier()
        return path
