"""QLoRATrainer: our own training loop, readable top to bottom (no transformers.Trainer).

setup:  load the base model (NF4 with double quantization via bitsandbytes, or plain),
        enable gradient checkpointing, wrap every linear projection with a peft LoRA.
train:  shuffled packed blocks -> micro-batches -> loss over target tokens only, normalised
        by the number of target tokens in the whole optimizer step (so gradient
        accumulation gives the same update as one big batch) -> clip -> AdamW -> schedule.
save:   the adapter as PEFT safetensors, loadable by plain peft.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .errors import KinfuseError
from .models import load_model, load_tokenizer, resolve_model


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
    first_loss: float
    final_loss: float  # mean per-token loss of the last optimizer step
    device: str
    history: list[dict[str, float]] = field(default_factory=list)  # one row per logged step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pick_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KinfuseError(f"device={name!r} but no CUDA GPU is visible; use device='auto' or 'cpu'")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _pick_dtype(name: str, device: Any) -> Any:
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # bf16 matmuls on most CPUs are slower than fp32


def _pick_attention(name: str, device: Any) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401  (optional extra)

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def peak_memory(device: Any) -> tuple[int, str]:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_peak_rss"  # Linux reports KiB


class QLoRATrainer:
    """Train a LoRA adapter on a (4-bit quantized) causal LM.

    `model` is a Hugging Face id, a local checkpoint folder, or `kinfuse.default_model()`.
    """

    def __init__(self, model: str | os.PathLike, config: TrainConfig | None = None, *, tokenizer: Any = None):
        import torch
        from peft import LoraConfig, get_peft_model

        self.config = (config or TrainConfig()).validate()
        cfg = self.config
        self.device = _pick_device(cfg.device)
        self.compute_dtype = _pick_dtype(cfg.compute_dtype, self.device)
        self.model_name = resolve_model(model)
        self.tokenizer = tokenizer or load_tokenizer(self.model_name)
        base = load_model(
            self.model_name,
            quantize=cfg.quantize,
            compute_dtype=self.compute_dtype,
            device=self.device,
            attention=_pick_attention(cfg.attention, self.device),
        )
        base.config.use_cache = False  # the KV cache is useless in training and costs memory
        for p in base.parameters():
            p.requires_grad_(False)
        if cfg.gradient_checkpointing:
            # Non-reentrant checkpointing works with frozen inputs (no enable_input_require_grads hack).
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        torch.manual_seed(cfg.seed)  # LoRA A is random: seed it so runs repeat
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.target_modules,
            use_rslora=cfg.use_rslora,
            use_dora=cfg.use_dora,
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(base, lora)
        for p in self.model.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # fp32 master weights for the adapter: tiny, and stable
        self.max_length = getattr(base.config, "max_position_embeddings", None)

    # -- helpers --------------------------------------------------------------------

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _optimizer(self, params: list[Any]) -> Any:
        import torch

        name = self.config.optimizer
        if name == "auto":
            name = "paged_adamw_32bit" if self.device.type == "cuda" else "adamw"
        kw = {"lr": self.config.learning_rate, "weight_decay": self.config.weight_decay, "betas": (0.9, 0.999)}
        if name == "adamw":
            return torch.optim.AdamW(params, **kw)
        import bitsandbytes as bnb

        # Paged optimizers keep their state in CUDA managed memory, paged to the CPU under
        # pressure; LoRA state is small, so it never asks for much of it.
        cls = bnb.optim.PagedAdamW32bit if name == "paged_adamw_32bit" else bnb.optim.PagedAdamW8bit
        return cls(params, **kw)

    def _schedule(self, total_steps: int) -> Any:
        cfg = self.config

        def factor(step: int) -> float:
            if step < cfg.warmup_steps:
                return (step + 1) / (cfg.warmup_steps + 1)
            if cfg.lr_schedule == "constant":
                return 1.0
            progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
            if cfg.lr_schedule == "linear":
                return max(0.0, 1.0 - progress)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        return factor

    def _check_blocks(self, blocks: Any) -> None:
        if blocks is None or len(blocks) == 0:
            raise TrainingError("no training blocks: the dataset is empty; check the corpus and Chunker.stats")
        for col in ("input_ids", "labels"):
            if col not in blocks.column_names:
                raise TrainingError(f"training blocks lack the {col!r} column: build them with kinfuse.Chunker")
        length = len(blocks[0]["input_ids"])
        if self.max_length and length > self.max_length:
            raise TrainingError(
                f"block size {length} is over the model's maximum length {self.max_length}: "
                f"rebuild the blocks with Chunker(tokenizer, block_size={self.max_length}) or less"
            )

    # -- the loop -------------------------------------------------------------------

    def train(self, blocks: Any, *, log_path: str | os.PathLike | None = None) -> TrainResult:
        """Train on packed blocks (from Chunker); returns steps, tokens, tokens/s and peak memory."""
        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        self._check_blocks(blocks)
        cfg, device = self.config, self.device
        ids_all = torch.tensor(blocks["input_ids"], dtype=torch.long)  # (N, T)
        labels_all = torch.tensor(blocks["labels"], dtype=torch.long)  # (N, T)
        if "position_ids" in blocks.column_names:
            pos_all = torch.tensor(blocks["position_ids"], dtype=torch.long)  # (N, T)
        else:
            pos_all = torch.arange(ids_all.shape[1]).expand_as(ids_all)
        n = ids_all.shape[0]
        # Real (non-padding) tokens per block, for honest tokens/s.
        if "num_tokens" in blocks.column_names:
            real_all = torch.tensor(blocks["num_tokens"], dtype=torch.long)  # (N,)
        else:
            real_all = torch.full((n,), ids_all.shape[1], dtype=torch.long)
        per_step = cfg.micro_batch_size * cfg.grad_accum
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * n / per_step))

        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self._optimizer(params)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule(total))
        gen = torch.Generator().manual_seed(cfg.seed)

        def batches():  # endless stream of micro-batch index tensors, reshuffled each epoch
            while True:
                order = torch.randperm(n, generator=gen)
                for i in range(0, n, cfg.micro_batch_size):
                    yield order[i : i + cfg.micro_batch_size]

        stream = batches()
        log = open(log_path, "a") if log_path else None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.model.train()
        history: list[dict[str, float]] = []
        tokens = targets = 0
        start = time.perf_counter()
        bar = tqdm(range(total), desc="training", disable=not cfg.progress, dynamic_ncols=True)
        try:
            for step in bar:
                micro = [next(stream) for _ in range(cfg.grad_accum)]
                # Normalise by the target tokens of the whole step, not per micro-batch, so
                # accumulation equals one large batch whatever the padding.
                step_targets = sum(int((labels_all[m][:, 1:] != -100).sum()) for m in micro)
                step_loss = 0.0
                for m in micro:
                    ids, labels, pos = ids_all[m].to(device), labels_all[m].to(device), pos_all[m].to(device)
                    logits = self.model(input_ids=ids, position_ids=pos, use_cache=False).logits  # (B, T, V)
                    loss = F.cross_entropy(
                        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum"
                    ) / max(1, step_targets)
                    loss.backward()
                    step_loss += loss.item()
                    tokens += int(real_all[m].sum())
                targets += step_targets
                if not math.isfinite(step_loss):
                    raise TrainingError(
                        f"loss became {step_loss} at step {step + 1}: lower learning_rate "
                        f"(now {cfg.learning_rate}) or set max_grad_norm; the adapter was not saved"
                    )
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                elapsed = time.perf_counter() - start
                mem, _ = peak_memory(device)
                row = {
                    "step": step + 1,
                    "loss": step_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "tokens": tokens,
                    "tokens_per_second": tokens / elapsed,
                    "peak_memory_gb": mem / 2**30,
                }
                history.append(row)
                bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{row['tokens_per_second']:.0f}", mem=f"{mem / 2**30:.1f}G")
                if log and (step + 1) % cfg.log_every == 0:
                    log.write(json.dumps(row) + "\n")
                    log.flush()
        except torch.OutOfMemoryError as e:
            raise TrainingError(self._oom_advice()) from e
        finally:
            bar.close()
            if log:
                log.close()
        seconds = time.perf_counter() - start
        mem, kind = peak_memory(device)
        self.model.eval()
        return TrainResult(
            steps=total,
            tokens=tokens,
            target_tokens=targets,
            seconds=seconds,
            tokens_per_second=tokens / seconds,
            peak_memory_bytes=mem,
            peak_memory_kind=kind,
            first_loss=history[0]["loss"],
            final_loss=history[-1]["loss"],
            device=str(device),
            history=history,
        )

    def _oom_advice(self) -> str:
        import torch

        used = torch.cuda.memory_allocated(self.device) / 2**30
        total = torch.cuda.get_device_properties(self.device).total_memory / 2**30
        c = self.config
        return (
            f"CUDA out of memory ({used:.1f} of {total:.1f} GiB allocated): lower micro_batch_size "
            f"(now {c.micro_batch_size}) and raise grad_accum, use a smaller block_size, or keep "
            f"gradient_checkpointing on (now {c.gradient_checkpointing})"
        )

    def save_adapter(self, path: str | os.PathLike) -> Path:
        """Write the adapter (adapter_config.json + adapter_model.safetensors) and the tokenizer."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        return path
