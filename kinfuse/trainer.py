"""QLoRATrainer: our own training loop, readable top to bottom (no transformers.Trainer).

setup:  load the base model (NF4 with double quantization via bitsandbytes, or plain),
        enable gradient checkpointing, wrap every linear projection with a peft LoRA.
train:  shuffled packed blocks -> micro-batches -> loss over target tokens only, normalised
        by the number of target tokens in the whole optimizer step (so gradient
        accumulation gives the same update as one big batch) -> clip -> AdamW -> schedule.
save:   the adapter as PEFT safetensors, loadable by plain peft.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import resource
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .errors import ConfigError, KinfuseError, ModelError
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
    # Cross-entropy per target token of the first and last steps that had any: with KL anchors
    # a step's loss also holds the weighted KL (anchor-only steps have no cross-entropy).
    first_loss: float
    final_loss: float
    device: str
    compute_dtype: str  # what training computed in ("bfloat16", "float32"): NF4 weights were quantized from it
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step
    interrupted: bool = False  # stopped early by SIGINT/SIGTERM (after checkpointing)
    checkpoint: str | None = None  # the last checkpoint written or resumed from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cross_entropy(row: dict[str, float]) -> float | None:
    """A history row's cross-entropy per target token, or None for a step of anchor blocks only."""
    return row.get("ce", None if "anchor_kl" in row else row["loss"])


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
    # A CPU with native bf16 dot products (AVX512-BF16, AMX) runs bf16 matmuls 2-2.5x faster
    # than fp32 (measured 414 vs 180 GFLOPS on 2 cores of an AMD EPYC with AVX512-BF16); on one
    # without, torch emulates them and they are slower than fp32.
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 dot products (AVX512-BF16 or AMX)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up with care
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


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


def set_mmap_threshold(nbytes: int) -> bool:
    """glibc mallopt(M_MMAP_THRESHOLD, nbytes): allocations from nbytes up are mmapped and
    unmapped on free. Fixing it also stops glibc from raising it after each large free, which
    leaves freed activation buffers in the heap (resident) instead of reusing or returning them.
    False where there is no glibc (macOS, musl): nothing changes."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_MMAP_THRESHOLD = -3  # malloc.h
    return mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1


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
        self.dtype_name = str(self.compute_dtype).removeprefix("torch.")  # recorded for export (results, checkpoints)
        self.model_name = resolve_model(model)
        if self.device.type == "cpu" and cfg.cpu_mmap_threshold:
            set_mmap_threshold(cfg.cpu_mmap_threshold)  # before loading: quantization churns memory too
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
        self.full_modules, tied = self._full_modules(base)
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.target_modules,
            use_rslora=cfg.use_rslora,
            use_dora=cfg.use_dora,
            # Trainable copies of embeddings / lm_head, saved in the adapter. For a tied model the
            # embeddings' copy is shared with lm_head (peft ties it), so it stays one matrix.
            modules_to_save=self.full_modules or None,
            ensure_weight_tying=tied,
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(base, lora)
        for p in self.model.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # fp32 master weights for the adapter: tiny, and stable
        if self.full_modules:
            self._check_full_modules(tied)
        # save_on_cpu moves what autograd saves (the checkpointed layer inputs among it) to host
        # memory; on a CPU the tensors are there already and it would only copy them.
        self.offload_activations = cfg.offload_activations and self.device.type == "cuda"
        self.max_length = getattr(base.config, "max_position_embeddings", None)
        self.last_checkpoint: Path | None = None
        # Logits are a plain linear map of the decoder's last hidden state for most causal
        # LMs; models that post-process them (soft-capping, scaling) take the full path.
        c = base.config
        self._plain_head = (
            hasattr(base, "get_decoder")
            and base.get_output_embeddings() is not None
            and not getattr(c, "final_logit_softcapping", None)
            and getattr(c, "logit_scale", None) in (None, 1, 1.0)
            and getattr(c, "logits_scaling", None) in (None, 1, 1.0)
        )
        # Custom kernels (kinfuse.kernels, issue 7): module forwards are swapped in one place
        # (self.kernel_patch.undo() restores them). The loss always uses the fused output layer +
        # cross-entropy (Triton when the kernels are, else its torch twin): it never builds the
        # (N, V) logits and takes its gradients in the same pass, which on the CPU benchmark is
        # both faster and ~1 GiB leaner than logits + F.cross_entropy.
        from .kernels import load_op, patch_model, resolve

        self.kernel_patch = None
        impl = "torch" if cfg.kernels == "none" else resolve(cfg.kernels, self.device)
        # "auto" where Triton cannot run resolves to the twins, which are for checking, not
        # speed: the trainer patches only Triton, or the twins when asked for by name.
        if impl == "triton" or cfg.kernels == "torch":
            self.kernel_patch = patch_model(self.model, impl)
        self._fused_ce = load_op("fused_linear_cross_entropy", impl)
        # LoRA layers the kernels did not take get one addmm instead of peft's four (tokens, out)
        # temporaries; on a CPU, dropout masks come from fewer random draws (see kinfuse/lora.py).
        from .lora import use_lean_lora_forward

        use_lean_lora_forward(self.model, bits_dropout=self.device.type == "cpu")

    # -- helpers --------------------------------------------------------------------

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _full_modules(self, base: Any) -> tuple[list[str], bool]:
        """Names of the modules trained in full (peft modules_to_save), and whether the model
        ties its output layer to its input embeddings."""
        cfg = self.config
        if not (cfg.train_embeddings or cfg.train_lm_head):
            return [], False
        emb, head = base.get_input_embeddings(), base.get_output_embeddings()
        if cfg.train_lm_head and head is None:
            raise ConfigError([f"train_lm_head=True but {self.model_name} has no output layer: set it False"],
                              "TrainConfig for this model")
        tied = head is not None and getattr(head, "weight", None) is emb.weight
        if tied and cfg.train_embeddings != cfg.train_lm_head:
            raise ConfigError(
                [f"train_embeddings={cfg.train_embeddings}, train_lm_head={cfg.train_lm_head}: {self.model_name} "
                 "ties lm_head to its input embeddings (one matrix), so neither trains without the other; "
                 "set both True or both False"],
                "TrainConfig for this model",
            )
        names = {id(m): n for n, m in base.named_modules()}
        if tied:
            return [names[id(emb)]], True
        return [names[id(m)] for m, on in ((emb, cfg.train_embeddings), (head, cfg.train_lm_head)) if on], False

    def _check_full_modules(self, tied: bool) -> None:
        """peft ties the trainable copies only for the embedding names it knows; check it did,
        since an untied copy would silently train the embeddings while lm_head stays frozen."""
        import torch

        base = self.model.get_base_model()
        full = {id(p) for n, p in self.model.named_parameters(remove_duplicate=False)
                if p.requires_grad and ".modules_to_save." in n}
        head = base.get_output_embeddings()
        if tied and (len(full) != 1 or not any(p.requires_grad for p in head.parameters())):
            raise ModelError(
                f"peft could not keep the tied embeddings and lm_head of {self.model_name} tied in the adapter "
                f"(modules {self.full_modules}): set train_embeddings and train_lm_head to False"
            )
        if self.compute_dtype != torch.float32:
            # The fp32 trainable embedding copy would turn the whole residual stream fp32 (twice
            # the activation memory); hand the decoder the compute dtype, as the frozen one did.
            dtype = self.compute_dtype
            base.get_input_embeddings().register_forward_hook(lambda m, i, out: out.to(dtype))

    def _param_groups(self) -> list[dict[str, Any]]:
        """LoRA weights at learning_rate; full embedding/lm_head copies at their own rate."""
        cfg = self.config
        lora, full = [], []
        for name, p in self.model.named_parameters():  # a tied copy is listed once
            if p.requires_grad:
                (full if ".modules_to_save." in name else lora).append(p)
        groups = [{"params": lora, "lr": cfg.learning_rate}]
        if full:
            lr = cfg.embedding_learning_rate if cfg.embedding_learning_rate is not None else cfg.learning_rate / 10
            groups.append({"params": full, "lr": lr})
        return groups

    def _optimizer(self, params: list[Any]) -> Any:  # params: tensors or param groups
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

    def _autocast(self) -> Any:
        import torch

        # The fp32 LoRA weights run their matmuls in the compute dtype (bf16/fp16, on a GPU or
        # a CPU with native bf16); the fp32 copies stay the optimizer's master weights.
        if self.compute_dtype != torch.float32:
            return torch.autocast(self.device.type, dtype=self.compute_dtype)
        return contextlib.nullcontext()

    def loss_sum(self, ids: Any, labels: Any, pos: Any) -> Any:
        """Summed next-token cross-entropy over target tokens, for (B, T) ids/labels/positions.

        The output layer runs only on positions that have a target: prompts of chat rows and
        padding cost no vocabulary projection, and the full (B, T, V) logits are never built.
        """
        import torch
        import torch.nn.functional as F

        targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
        keep = targets != -100  # (B, T-1)
        hidden, head = self._target_hidden(ids, pos, keep)
        # A trained head (peft wrapper) or one with a bias keeps the plain path.
        if self._fused_ce is not None and type(head) is torch.nn.Linear and head.bias is None:
            return self._fused_ce(hidden, head.weight, targets[keep], reduction="sum")
        logits = head(hidden) if head is not None else hidden  # (N, V)
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum")

    def kl_sum(self, ids: Any, labels: Any, pos: Any) -> Any:
        """Summed KL(base || adapted) of the next-token distributions at the target positions
        of (B, T) blocks: how far the adapter has moved the model on this text. The base is
        the same model with the adapter off (no gradient, no second copy in memory).

        Builds (N, V) logits twice (N = target positions), so anchor blocks cost one extra
        forward pass and, at a large vocabulary, memory that plain blocks do not.
        """
        import torch
        import torch.nn.functional as F

        keep = labels[:, 1:] != -100  # (B, T-1)

        def log_probs() -> Any:  # (N, V)
            hidden, head = self._target_hidden(ids, pos, keep)
            return F.log_softmax((head(hidden) if head is not None else hidden).float(), dim=-1)

        with torch.no_grad(), self.model.disable_adapter():
            base = log_probs()
        return F.kl_div(log_probs(), base, log_target=True, reduction="sum")

    def _target_hidden(self, ids: Any, pos: Any, keep: Any) -> tuple[Any, Any]:
        """(hidden (N, H), output layer) at the positions `keep` marks, or, for heads with
        soft-capping or scaling that only the model applies, (logits (N, V), None)."""
        if self._plain_head:
            base = self.model.get_base_model()
            hidden = base.get_decoder()(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state  # (B, T, H)
            return hidden[:, :-1][keep], base.get_output_embeddings()
        return self.model(input_ids=ids, position_ids=pos, use_cache=False).logits[:, :-1][keep], None

    # -- the loop -------------------------------------------------------------------

    def train(
        self, blocks: Any, *, eval_blocks: Any = None, log_path: str | os.PathLike | None = None
    ) -> TrainResult:
        """Train on packed blocks (from Chunker); returns steps, tokens, tokens/s and peak memory.

        With `config.output_dir`, checkpoints go to `output_dir/checkpoints/step-N` every
        `save_every` steps and on SIGINT/SIGTERM; `resume`/`resume_from` continue from one.
        """
        import torch
        from tqdm.auto import tqdm

        self._check_blocks(blocks)
        cfg, device = self.config, self.device
        data = _Tensors(blocks)
        held_out = _Tensors(eval_blocks) if eval_blocks is not None and len(eval_blocks) else None
        per_step = cfg.micro_batch_size * cfg.grad_accum
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * data.n / per_step))
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self._optimizer(self._param_groups())
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule(total))
        run = _RunState()
        resume = self._find_resume()
        if resume is not None:
            run = self._load_checkpoint(resume, optimizer, scheduler, data, total)
        writer = self._tensorboard()
        log = open(log_path, "a") if log_path else None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.model.train()
        start = time.perf_counter() - run.seconds
        bar = tqdm(range(run.step, total), desc="training", disable=not cfg.progress, dynamic_ncols=True)
        stop = _StopOnSignal()
        try:
            with stop:
                for step in bar:
                    micro = [data.micro_batch(k, cfg) for k in range(step * cfg.grad_accum, (step + 1) * cfg.grad_accum)]
                    step_loss, step_targets, anchor_kl, ce = self._step(data, micro)
                    run.tokens += int(sum(data.real[m].sum() for m in micro))
                    run.targets += step_targets
                    if not math.isfinite(step_loss):
                        raise TrainingError(
                            f"loss became {step_loss} at step {step + 1}: lower learning_rate (now "
                            f"{cfg.learning_rate}) or set max_grad_norm; "
                            + (f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint
                               else "no checkpoint was written (set output_dir and save_every)")
                        )
                    if cfg.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    run.step = step + 1
                    run.seconds = time.perf_counter() - start
                    mem, _ = peak_memory(device)
                    row = {
                        "step": run.step,
                        "loss": step_loss,
                        "lr": scheduler.get_last_lr()[0],
                        "tokens": run.tokens,
                        "seconds": run.seconds,
                        "tokens_per_second": run.tokens / run.seconds,
                        "peak_memory_gb": mem / 2**30,
                    }
                    if anchor_kl is not None:  # per anchor target token, before weighting
                        row["anchor_kl"] = anchor_kl
                        if ce is not None:  # the step's loss mixes the two; this is its text part
                            row["ce"] = ce
                    if held_out is not None and cfg.eval_every and run.step % cfg.eval_every == 0:
                        row["eval_loss"] = self.evaluate_loss(held_out)
                    run.history.append(row)
                    bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{row['lr']:.1e}",
                                    tok_s=f"{row['tokens_per_second']:.0f}", mem=f"{mem / 2**30:.1f}G")
                    if run.step % cfg.log_every == 0:
                        if log:
                            log.write(json.dumps(row) + "\n")
                            log.flush()
                        if writer:
                            for key in ("loss", "lr", "tokens_per_second", "eval_loss"):
                                if key in row:
                                    writer.add_scalar(f"train/{key}", row[key], run.step)
                    if stop.requested or (cfg.save_every and run.step % cfg.save_every == 0):
                        if cfg.output_dir:
                            self.save_checkpoint(run, optimizer, scheduler, data, total)
                    if stop.requested:
                        break
        except torch.OutOfMemoryError as e:
            raise TrainingError(self._oom_advice(data.length, run.step + 1)) from e
        finally:
            bar.close()
            if log:
                log.close()
            if writer:
                writer.close()
        mem, kind = peak_memory(device)
        self.model.eval()
        ce_rows = [c for c in map(cross_entropy, run.history) if c is not None]
        result = TrainResult(
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
            compute_dtype=self.dtype_name,
            history=run.history,
            interrupted=stop.requested,
            checkpoint=str(self.last_checkpoint) if self.last_checkpoint else None,
        )
        if cfg.output_dir and run.history:
            plot_loss(run.history, Path(cfg.output_dir) / "loss.png")
        return result

    def _step(self, data: "_Tensors", micro: list[Any]) -> tuple[float, int, float | None, float | None]:
        """Forward and backward over the micro-batches of one optimizer step: (loss, target
        tokens, KL per anchor target token or None when the step had no anchor block,
        cross-entropy per target token of the plain blocks or None when it had none)."""
        import torch

        # Normalise by the target tokens of the whole step, not per micro-batch, so
        # accumulation equals one large batch whatever the padding.
        step_targets = int(sum(data.targets[m].sum() for m in micro))
        step_loss = 0.0
        offload = (
            torch.autograd.graph.save_on_cpu(pin_memory=True)
            if self.offload_activations
            else contextlib.nullcontext()
        )
        sums, counts = [0.0, 0.0], [0, 0]  # [cross-entropy, anchor KL] and their target tokens
        for m in micro:
            # Anchor blocks (kept close to the base model) and plain blocks go in separate passes.
            parts = [(m, False)] if data.anchor is None else [
                (m[sel], kind) for kind, sel in ((False, ~data.anchor[m]), (True, data.anchor[m])) if sel.any()]
            for rows, is_anchor in parts:
                ids, labels, pos = (t[rows].to(self.device) for t in (data.ids, data.labels, data.pos))
                with self._autocast(), offload:
                    part = (self.kl_sum if is_anchor else self.loss_sum)(ids, labels, pos)
                    weight = self.config.anchor_kl_weight if is_anchor else 1.0
                    loss = weight * part / max(1, step_targets)
                    loss.backward()
                sums[is_anchor] += part.item()
                counts[is_anchor] += int(data.targets[rows].sum())
                step_loss += loss.item()
        ce, kl = (s / c if c else None for s, c in zip(sums, counts))
        return step_loss, step_targets, kl, ce

    def evaluate_loss(self, data: "Any") -> float:
        """Mean per-token loss on held-out blocks (no gradients, dropout off)."""
        import torch

        data = data if isinstance(data, _Tensors) else _Tensors(data)
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        try:
            with torch.no_grad(), self._autocast():
                for i in range(0, data.n, self.config.micro_batch_size):
                    m = torch.arange(i, min(i + self.config.micro_batch_size, data.n))
                    ids, labels, pos = (t[m].to(self.device) for t in (data.ids, data.labels, data.pos))
                    total += self.loss_sum(ids, labels, pos).item()
                    count += int(data.targets[m].sum())
        finally:
            self.model.train(was_training)
        return total / max(1, count)

    # -- checkpoints ----------------------------------------------------------------

    def _checkpoint_root(self) -> Path:
        return Path(self.config.output_dir or ".") / "checkpoints"

    def _find_resume(self) -> Path | None:
        cfg = self.config
        if cfg.resume_from:
            path = Path(cfg.resume_from)
            if not (path / "meta.json").is_file():
                raise TrainingError(f"resume_from={str(path)!r} is not a kinfuse checkpoint (no meta.json)")
            return path
        if not cfg.resume:
            return None
        done = sorted(p for p in self._checkpoint_root().glob("step-*") if (p / "meta.json").is_file())
        return done[-1] if done else None  # nothing yet: a fresh start

    def _meta(self, data: "_Tensors", total: int) -> dict[str, Any]:
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
        }

    def save_checkpoint(self, run: "_RunState", optimizer: Any, scheduler: Any, data: "_Tensors", total: int) -> Path:
        """Adapter, optimizer, scheduler, RNG and data position, written atomically."""
        import torch

        root = self._checkpoint_root()
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"step-{run.step:07d}"
        tmp = root / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp / "adapter", safe_serialization=True)
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
             "run": asdict(run)},
            tmp / "state.pt",
        )
        # meta.json last: a checkpoint without it is incomplete and never resumed from.
        (tmp / "meta.json").write_text(json.dumps({**self._meta(data, total), "step": run.step}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.last_checkpoint = final
        return final

    def _load_checkpoint(self, path: Path, optimizer: Any, scheduler: Any, data: "_Tensors", total: int) -> "_RunState":
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        meta = json.loads((path / "meta.json").read_text())
        want = self._meta(data, total)
        meta.setdefault("full_modules", [])  # checkpoints from before trainable embeddings had none
        diffs = [f"{k}: checkpoint has {meta.get(k)!r}, this run {want[k]!r}" for k in want if meta.get(k) != want[k]]
        if diffs:
            raise TrainingError(f"checkpoint {path} does not match this run:\n  " + "\n  ".join(diffs)
                                + "\nresume with the same model, LoRA settings, blocks and schedule, or start afresh")
        try:
            weights = load_file(path / "adapter" / "adapter_model.safetensors")
            state = torch.load(path / "state.pt", weights_only=True)  # tensors and plain containers only: never runs code from the file
            result = set_peft_model_state_dict(self.model, weights)
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"unexpected adapter weights {result.unexpected_keys[:3]}")
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except Exception as e:  # a truncated or foreign file fails in many ways; all mean "corrupt"
            raise TrainingError(f"checkpoint {path} is corrupt or from another model: {type(e).__name__}: {e}") from e
        for p in self.model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.last_checkpoint = path
        return _RunState(**state["run"])

    def _tensorboard(self) -> Any:
        if not self.config.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrainingError("tensorboard=True needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(str(Path(self.config.output_dir or ".") / "tensorboard"))

    def _oom_advice(self, block_size: int, step: int) -> str:
        """What was in use when memory ran out, and which settings lower it (called while the
        failed step's tensors are still referenced by the traceback, so the numbers are real)."""
        import torch

        gib = 2**30
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            where = (f"CUDA out of memory at step {step} on {torch.cuda.get_device_name(self.device)}: "
                     f"{torch.cuda.memory_allocated(self.device) / gib:.2f} GiB allocated "
                     f"(peak {torch.cuda.max_memory_allocated(self.device) / gib:.2f}, reserved "
                     f"{torch.cuda.memory_reserved(self.device) / gib:.2f}, free {free / gib:.2f} of {total / gib:.2f} GiB)")
        else:
            rss, _ = peak_memory(self.device)
            where = f"out of memory at step {step} on {self.device}: peak resident memory {rss / gib:.2f} GiB"
        c = self.config
        fixes = [f"lower micro_batch_size (now {c.micro_batch_size}) and raise grad_accum (now {c.grad_accum}) "
                 "to keep the same step size",
                 f"use shorter blocks (now {block_size} tokens): Chunker(tokenizer, block_size={max(1, block_size // 2)})"]
        if not c.gradient_checkpointing:
            fixes.append("turn gradient_checkpointing on (now False)")
        if self.device.type == "cuda" and not c.offload_activations:
            fixes.append("set offload_activations=True (checkpointed activations kept in CPU memory)")
        if c.quantize != "nf4":
            fixes.append(f"quantize the base model: quantize='nf4' (now {c.quantize!r})")
        if c.train_embeddings or c.train_lm_head:
            fixes.append("set train_embeddings/train_lm_head False (full copies plus their optimizer state)")
        return where + "; to fit, " + "; or ".join(fixes)

    def save_adapter(self, path: str | os.PathLike) -> Path:
        """Write the adapter (adapter_config.json + adapter_model.safetensors) and the tokenizer."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        return path


@dataclass
class _RunState:
    """What a checkpoint needs besides weights and optimizer to continue exactly."""

    step: int = 0
    tokens: int = 0
    targets: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


class _Tensors:
    """Packed blocks as tensors, with a data order that is a pure function of (seed, epoch),
    so that a resumed run draws exactly the micro-batches the uninterrupted one would."""

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


class _StopOnSignal:
    """SIGINT/SIGTERM ask the loop to stop after the current step (and checkpoint); a second
    SIGINT interrupts at once. Handlers are installed only in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
