#!/usr/bin/env python
"""Training speed and memory: the 2023 QLoRA reference recipe against kinfuse's QLoRATrainer.

One run trains the same blocks with

  reference  transformers.Trainer + peft + bitsandbytes, as the 2023 QLoRA scripts set it up
             (qlora.py / run_clm.py): NF4 + double quantization, prepare_model_for_kbit_training,
             LoRA on every linear layer but lm_head, gradient checkpointing, paged_adamw_32bit
             (adamw_torch on CPU), bf16 where kinfuse's "auto" picks it (CUDA, CPUs with native
             bf16; else fp32), SDPA attention;
  kinfuse    kinfuse.QLoRATrainer with the same LoRA and optimizer settings (and, with
             --recipes, its variants: kinfuse-stock, kinfuse-nogc, kinfuse-offload);

each in its own subprocess (so peak memory is per recipe), and writes tokens/s, peak memory and
the ratios kinfuse/reference to benchmarks/results/<device>-<arch>-<timestamp>.json.

    python benchmarks/bench_train.py --model default --steps 6                  # CPU, SmolLM2-135M
    python benchmarks/bench_train.py --arch llama-2-7b --micro-batch 4 --max-block   # CUDA

Tokens/s counts the steps after the first --warmup steps only. Peak memory is CUDA's
max_memory_allocated (model load included) or, on CPU, the worker process's peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from provenance import cpu_name, git_commit, version, write_result  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
GENERAL_TEXT = REPO / "kinfuse" / "data" / "general.txt"
MARK = "BENCH-JSON "  # prefix of the worker's machine-readable stdout lines
# kinfuse's variants: TrainConfig fields over the benchmark's common settings. "kinfuse" is
# the library's defaults; the others are the paths a user can switch on.
KINFUSE_VARIANTS: dict[str, dict[str, Any]] = {
    "kinfuse": {},  # kernels "auto": the Triton ops on CUDA, stock modules on a CPU
    "kinfuse-stock": {"kernels": "none"},  # stock HF/peft modules (the fused loss stays)
    "kinfuse-nogc": {"gradient_checkpointing": False},  # speed for memory
    "kinfuse-offload": {"offload_activations": True},  # checkpointed layer inputs in host memory
}
RECIPES = ("reference", *KINFUSE_VARIANTS)
DEFAULT_RECIPES = ("reference", "kinfuse")
MAX_BLOCK_SIZES = (2048, 4096, 8192, 16384, 32768, 65536)
MAX_BLOCK_POSITIONS = 65536

# Real shapes; the weights are random (nothing can be downloaded), which is all a speed and
# memory test needs.
ARCHS: dict[str, dict[str, Any]] = {
    "llama-2-7b": dict(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_theta=10000.0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    ),
    "llama-3-8b": dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_theta=500000.0, bos_token_id=128000, eos_token_id=128001, tie_word_embeddings=False,
    ),
}

LORA = dict(r=64, alpha=16, dropout=0.1)
LEARNING_RATE = 2e-4


# -- small helpers -----------------------------------------------------------------------


def emit(kind: str, payload: dict[str, Any]) -> None:
    """One machine-readable line on stdout for the parent process."""
    print(MARK + json.dumps({"kind": kind, **payload}), flush=True)




def rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def has_tokenizer(path: str) -> bool:
    p = Path(path)
    return (p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file()


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA GPU is visible")
    return name


# -- data --------------------------------------------------------------------------------


def text_blocks(model_path: str, block_size: int, n_blocks: int) -> list[list[int]]:
    """Blocks cut from kinfuse's shipped general text, tokenized with the model's tokenizer
    and repeated until there are enough."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    ids = list(tok(GENERAL_TEXT.read_text(), add_special_tokens=False)["input_ids"])
    if tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    need = block_size * n_blocks
    stream = ids * (need // len(ids) + 1)
    return [stream[i * block_size : (i + 1) * block_size] for i in range(n_blocks)]


def random_blocks(vocab_size: int, block_size: int, n_blocks: int, seed: int = 0) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab_size, size=(n_blocks, block_size), dtype=np.int64).tolist()


def save_blocks(blocks: list[list[int]], path: Path) -> Path:
    import numpy as np

    np.save(path, np.asarray(blocks, dtype=np.int64))
    return path


def load_blocks(path: str) -> list[list[int]]:
    import numpy as np

    return np.load(path).tolist()


# -- checkpoints ---------------------------------------------------------------------------


def make_random_checkpoint(arch: str, folder: Path) -> Path:
    """Random-weight checkpoint of `arch` (real shapes), built on the GPU in bf16, saved as
    safetensors. Reused when the folder already holds the same config."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = ARCHS[arch]
    meta = folder / "bench-meta.json"
    if meta.is_file() and json.loads(meta.read_text()) == spec and (folder / "config.json").is_file():
        return folder
    config = LlamaConfig(**spec)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # no fp32 copy of the weights at init
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
    finally:
        torch.set_default_dtype(old)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    meta.write_text(json.dumps(spec))
    return folder


def with_max_positions(src: str, dst: Path, positions: int) -> Path:
    """A copy of checkpoint `src` (files linked, not copied) whose config allows `positions`
    tokens, so RoPE and kinfuse's block-size check let the memory test go that long."""
    src_path = Path(src)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src_path.iterdir():
        if f.name == "config.json" or not f.is_file():
            continue
        link = dst / f.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(f.resolve())
    config = json.loads((src_path / "config.json").read_text())
    config["max_position_embeddings"] = max(positions, int(config.get("max_position_embeddings") or 0))
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


# -- the two recipes -----------------------------------------------------------------------


class _Tokenizer:
    """Stand-in for checkpoints without a tokenizer (random-weight archs): kinfuse's trainer
    only keeps it for save_adapter, which the bench never calls."""

    eos_token_id = 0
    pad_token_id = 0


def _memory_state(device: str) -> dict[str, int]:
    import torch

    if device == "cuda":
        return {
            "allocated_bytes": torch.cuda.memory_allocated(),
            "max_allocated_bytes": torch.cuda.max_memory_allocated(),
            "max_reserved_bytes": torch.cuda.max_memory_reserved(),
        }
    return {"rss_bytes": rss_bytes(), "peak_rss_bytes": peak_rss_bytes()}


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _bf16(device: str) -> bool:
    """bf16 where kinfuse's compute_dtype="auto" picks it (CUDA, and CPUs with native bf16),
    so that both recipes compute in the same dtype."""
    from kinfuse.train import cpu_has_bf16

    return device == "cuda" or cpu_has_bf16()


def _reference_model(model_path: str, device: str) -> Any:
    """The 2023 QLoRA model set-up (qlora.py get_accelerate_model, with run_clm's data)."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    bf16 = _bf16(device)
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        model_path,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        ),
        dtype=dtype,
        attn_implementation="sdpa",
        device_map={"": 0} if device == "cuda" else None,
    )
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    lora = LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
        target_modules="all-linear", bias="none", task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    for name, module in model.named_modules():  # qlora.py's dtype pass after adding LoRA
        if isinstance(module, LoraLayer) and bf16:
            module.to(torch.bfloat16)
        if "norm" in name:
            module.to(torch.float32)
        if ("lm_head" in name or "embed_tokens" in name) and hasattr(module, "weight"):
            if bf16 and module.weight.dtype == torch.float32:
                module.to(torch.bfloat16)
    return model


def _reference_trainer(model: Any, blocks: list[list[int]], *, device: str, micro_batch: int, steps: int,
                       workdir: str, callbacks: list[Any]) -> Any:
    import datasets
    from transformers import Trainer, TrainingArguments, default_data_collator

    cuda = device == "cuda"
    args = TrainingArguments(
        output_dir=str(Path(workdir) / "reference-trainer"),
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="cosine",  # kinfuse's default schedule; irrelevant to speed
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,  # kinfuse's default clipping
        optim="paged_adamw_32bit" if cuda else "adamw_torch",
        bf16=_bf16(device),  # on a CPU, Trainer runs bf16 as CPU autocast
        gradient_checkpointing=True,
        use_cpu=not cuda,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        logging_strategy="steps",
        logging_steps=max(1, steps),  # one log at the end: no per-step sync from logging
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    data = datasets.Dataset.from_dict({"input_ids": blocks, "labels": blocks})
    return Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator,
                   callbacks=callbacks)


def _step_clock(device: str) -> Any:
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """Wall-clock time at the start of training and at the end of every optimizer step."""

        def __init__(self) -> None:
            self.begin: float | None = None
            self.ends: list[float] = []

        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            if self.begin is None:
                _sync(device)
                self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            _sync(device)
            self.ends.append(time.perf_counter())

    return StepClock()


def _throughput(ends: list[float], begin: float, tokens: list[int], warmup: int) -> dict[str, Any]:
    """tokens/s over the steps after `warmup`, from step-end times and cumulative tokens."""
    steps = len(ends)
    w = min(warmup, steps - 1) if steps else 0
    t0 = ends[w - 1] if w > 0 else begin
    tok0 = tokens[w - 1] if w > 0 else 0
    timed = ends[-1] - t0
    step_seconds = [round(b - a, 4) for a, b in zip([begin] + ends[:-1], ends)]
    return {
        "tokens_per_second": (tokens[-1] - tok0) / timed if timed > 0 else None,
        "timed_steps": steps - w,
        "timed_seconds": timed,
        "tokens_per_second_all_steps": tokens[-1] / (ends[-1] - begin) if ends and ends[-1] > begin else None,
        "step_seconds": step_seconds,
    }


def _device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
                            "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        info["device_total_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    return info


def _setup_reference(model_path: str, device: str) -> Any:
    return _reference_model(model_path, device)


def _setup_kinfuse(recipe: str, model_path: str, device: str, micro_batch: int, steps: int, attention: str) -> Any:
    from kinfuse import QLoRATrainer, TrainConfig

    cfg = TrainConfig(
        lora_r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], learning_rate=LEARNING_RATE,
        max_steps=steps, micro_batch_size=micro_batch, progress=False, device=device, attention=attention,
        **KINFUSE_VARIANTS[recipe],
    )
    tokenizer = None if has_tokenizer(model_path) else _Tokenizer()
    return QLoRATrainer(model_path, cfg, tokenizer=tokenizer)


def _kinfuse_blocks(blocks: list[list[int]]) -> Any:
    import datasets

    n = len(blocks[0])
    return datasets.Dataset.from_dict({
        "input_ids": blocks,
        "labels": blocks,
        "position_ids": [list(range(n))] * len(blocks),
        "num_tokens": [n] * len(blocks),
    })


def _attention_of(model: Any) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "_attn_implementation", None)


def run_worker(recipe: str, model_path: str, blocks: list[list[int]], *, device: str = "auto",
               micro_batch: int = 1, steps: int = 6, warmup: int = 2, workdir: str = "/tmp/kinfuse-bench",
               kinfuse_attention: str = "auto", profile: bool = False) -> dict[str, Any]:
    """Train `blocks` for `steps` optimizer steps with one recipe; return speed and memory.
    With `profile` (kinfuse recipes), one more step runs under torch.profiler afterwards."""
    import torch

    device = resolve_device(device)
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}")
    torch.manual_seed(0)
    block_size = len(blocks[0])
    out: dict[str, Any] = {"recipe": recipe, **_device_info(device), "block_size": block_size,
                           "micro_batch": micro_batch, "steps": steps, "warmup": warmup}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    if recipe == "reference":
        model = _setup_reference(model_path, device)
    else:
        trainer = _setup_kinfuse(recipe, model_path, device, micro_batch, steps, kinfuse_attention)
        model = trainer.model
    _sync(device)
    out["load_seconds"] = time.perf_counter() - t
    out["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out["attention"] = _attention_of(model)
    load = _memory_state(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()  # the train peak separately; the load peak is kept in `load`

    if recipe == "reference":
        clock = _step_clock(device)
        hf = _reference_trainer(model, blocks, device=device, micro_batch=micro_batch, steps=steps,
                                workdir=workdir, callbacks=[clock])
        output = hf.train()
        per_step = micro_batch * block_size
        tokens = [per_step * (i + 1) for i in range(len(clock.ends))]
        out.update(_throughput(clock.ends, clock.begin, tokens, warmup))
        out["mean_loss"] = float(output.training_loss)
        out["optimizer"] = hf.args.optim.value if hasattr(hf.args.optim, "value") else str(hf.args.optim)
        out["recipe_notes"] = ("transformers.Trainer; prepare_model_for_kbit_training; LoRA all-linear (no lm_head) "
                               "r=64 alpha=16 dropout=0.1; qlora.py dtype pass (LoRA/embeddings/lm_head bf16 and "
                               "norms fp32 where bf16); bf16 autocast where bf16; SDPA; non-reentrant checkpointing")
    else:
        result = trainer.train(_kinfuse_blocks(blocks))
        hist = result.history
        # kinfuse logs cumulative tokens and cumulative tokens/s per step, so each step's end time
        # since the loop's start is tokens / tokens_per_second.
        ends = [r["tokens"] / r["tokens_per_second"] for r in hist]
        tokens = [int(r["tokens"]) for r in hist]
        out.update(_throughput(ends, 0.0, tokens, warmup))
        out["mean_loss"] = sum(r["loss"] for r in hist) / len(hist)
        out["first_loss"], out["final_loss"] = result.first_loss, result.final_loss
        out["kinfuse_reported"] = {"tokens_per_second": result.tokens_per_second, "seconds": result.seconds,
                                   "peak_memory_bytes": result.peak_memory_bytes,
                                   "peak_memory_kind": result.peak_memory_kind}
        out["optimizer"] = trainer.config.optimizer
        out["compute_dtype"] = str(trainer.compute_dtype)
        out["cpu_mmap_threshold"] = trainer.config.cpu_mmap_threshold if device == "cpu" else None
        out["config_overrides"] = KINFUSE_VARIANTS[recipe]
    _sync(device)
    train = _memory_state(device)
    if device == "cuda":
        out["load_memory_bytes"] = load["allocated_bytes"]
        out["load_peak_memory_bytes"] = load["max_allocated_bytes"]
        out["train_peak_memory_bytes"] = train["max_allocated_bytes"]
        out["peak_memory_bytes"] = max(load["max_allocated_bytes"], train["max_allocated_bytes"])
        out["peak_reserved_bytes"] = max(load["max_reserved_bytes"], train["max_reserved_bytes"])
        out["peak_memory_kind"] = "cuda_max_allocated"
    else:
        out["load_memory_bytes"] = load["rss_bytes"]
        out["load_peak_memory_bytes"] = load["peak_rss_bytes"]
        out["peak_memory_bytes"] = train["peak_rss_bytes"]
        out["peak_memory_kind"] = "cpu_peak_rss"
    out["tokens"] = tokens[-1]
    if profile and recipe != "reference":
        out["profile"] = _profile_step(trainer, blocks[:micro_batch], device)
    return out


def _profile_step(trainer: Any, blocks: list[list[int]], device: str, rows: int = 60) -> dict[str, Any]:
    """One more optimizer step under torch.profiler (after the timed ones, so nothing is cold but
    the new optimizer's state): where the device time and memory go, op by op and kernel by kernel."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    trainer.config.max_steps = 1
    _sync(device)
    t = time.perf_counter()
    with profile(activities=acts, profile_memory=True) as prof:
        trainer.train(_kinfuse_blocks(blocks))
        _sync(device)
    wall = time.perf_counter() - t

    def dev(e: Any, what: str) -> float:  # torch renamed cuda_* to device_* in 2.4; read either
        return float(getattr(e, f"self_device_{what}", None) or getattr(e, f"self_cuda_{what}", 0) or 0)

    events = prof.key_averages()
    table = sorted(({"name": e.key[:160], "count": e.count, "self_device_us": dev(e, "time_total"),
                     "self_cpu_us": float(e.self_cpu_time_total),
                     "self_device_memory_bytes": int(dev(e, "memory_usage"))} for e in events),
                   key=lambda r: (r["self_device_us"], r["self_cpu_us"]), reverse=True)
    return {"wall_seconds": wall, "self_device_us_total": sum(r["self_device_us"] for r in table),
            "self_cpu_us_total": sum(r["self_cpu_us"] for r in table), "top": table[:rows]}


def _is_oom(error: BaseException) -> bool:
    import torch

    e: BaseException | None = error
    while e is not None:
        if isinstance(e, torch.OutOfMemoryError):
            return True
        e = e.__cause__ or e.__context__
    return False


def run_max_block(recipe: str, model_path: str, *, sizes: tuple[int, ...] = MAX_BLOCK_SIZES, vocab_size: int,
                  device: str = "auto", steps: int = 2, workdir: str = "/tmp/kinfuse-bench",
                  kinfuse_attention: str = "auto", memory_gib: float | None = None) -> dict[str, Any]:
    """Load the model once and train `steps` steps at micro-batch 1 on ever longer blocks, up to
    the first out-of-memory error; emit one progress line per size. `memory_gib` caps what
    torch's allocator may take (a smaller card on a large one: short blocks, quick to test)."""
    import torch

    device = resolve_device(device)
    cap = None
    if memory_gib and device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        cap = min(int(memory_gib * 2**30), total)
        torch.cuda.set_per_process_memory_fraction(cap / total)
    if recipe == "reference":
        model = _setup_reference(model_path, device)
        trainer = None
    else:
        trainer = _setup_kinfuse(recipe, model_path, device, 1, steps, kinfuse_attention)
        model = trainer.model
    tried: list[dict[str, Any]] = []
    largest = None
    for size in sizes:
        blocks = random_blocks(vocab_size, size, steps, seed=size)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        row: dict[str, Any] = {"block_size": size}
        error: BaseException | None = None
        hf = None
        t = time.perf_counter()
        try:
            if trainer is None:
                hf = _reference_trainer(model, blocks, device=device, micro_batch=1, steps=steps, workdir=workdir,
                                        callbacks=[])
                hf.train()
            else:
                trainer.train(_kinfuse_blocks(blocks))
            _sync(device)
            row.update(ok=True, seconds=time.perf_counter() - t, tokens_per_second=steps * size / (time.perf_counter() - t))
        except Exception as e:  # noqa: BLE001  OOM (or kinfuse's TrainingError wrapping it) ends the search
            error = e
            row.update(ok=False, oom=_is_oom(e), error=f"{type(e).__name__}: {str(e)[:300]}")
        if device == "cuda":
            row["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        # free everything the failed (or finished) attempt holds before the next size
        del blocks, hf
        error_kept = error is not None
        error = None
        for p in model.parameters():
            p.grad = None
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        tried.append(row)
        emit("progress", {"recipe": recipe, **row})
        if error_kept:
            break
        largest = size
    return {"recipe": recipe, "largest_block": largest, "tried": tried, "steps_per_size": steps,
            "micro_batch": 1, "memory_cap_bytes": cap, **_device_info(device)}


# -- the parent: run the workers, write the report -----------------------------------------


def _worker_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench_train.py --worker")
    p.add_argument("--worker", required=True, choices=(*RECIPES, "checkpoint"))
    p.add_argument("--model-path")
    p.add_argument("--blocks")
    p.add_argument("--device", default="auto")
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/kinfuse-bench")
    p.add_argument("--kinfuse-attention", default="auto")
    p.add_argument("--max-block", action="store_true")
    p.add_argument("--max-block-sizes", default=",".join(map(str, MAX_BLOCK_SIZES)))
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--arch")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--memory-gib", type=float)
    a = p.parse_args(argv)
    try:
        if a.worker == "checkpoint":
            path = make_random_checkpoint(a.arch, Path(a.model_path))
            emit("result", {"path": str(path)})
        elif a.max_block:
            sizes = tuple(int(x) for x in a.max_block_sizes.split(","))
            emit("result", run_max_block(a.worker, a.model_path, sizes=sizes, vocab_size=a.vocab_size,
                                         device=a.device, steps=a.steps, workdir=a.workdir,
                                         kinfuse_attention=a.kinfuse_attention, memory_gib=a.memory_gib))
        else:
            emit("result", run_worker(a.worker, a.model_path, load_blocks(a.blocks), device=a.device,
                                      micro_batch=a.micro_batch, steps=a.steps, warmup=a.warmup,
                                      workdir=a.workdir, kinfuse_attention=a.kinfuse_attention, profile=a.profile))
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        emit("error", {"error": f"{type(e).__name__}: {e}"[:2000]})
        return 1
    return 0


def _parse_marked(stdout: str) -> list[dict[str, Any]]:
    rows = []
    for line in (stdout or "").splitlines():
        if line.startswith(MARK):
            try:
                rows.append(json.loads(line[len(MARK):]))
            except json.JSONDecodeError:
                pass
    return rows


def spawn(args: list[str], timeout: float) -> dict[str, Any]:
    """Run a worker subprocess; its result, or an error record with the stderr tail."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        stdout, stderr, rc, timed_out = proc.stdout, proc.stderr, proc.returncode, False
    except subprocess.TimeoutExpired as e:
        def text(x: Any) -> str:
            return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")

        stdout, stderr, rc, timed_out = text(e.stdout), text(e.stderr), None, True
    rows = _parse_marked(stdout)
    results = [r for r in rows if r["kind"] == "result"]
    wall = time.perf_counter() - t
    if results and rc == 0:
        out = {k: v for k, v in results[-1].items() if k != "kind"}
        out["ok"], out["worker_seconds"] = True, wall
        return out
    errors = [r["error"] for r in rows if r["kind"] == "error"]
    out = {
        "ok": False,
        "error": f"timed out after {timeout:.0f} s" if timed_out else (errors[-1] if errors else f"exit code {rc}"),
        "returncode": rc,
        "stderr_tail": (stderr or "")[-3000:],
        "worker_seconds": wall,
    }
    progress = [{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == "progress"]
    if progress:
        out["progress"] = progress
    return out


def _in_process(fn: Any, *args: Any, **kw: Any) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        out = fn(*args, **kw)
        out["ok"] = True
    except Exception as e:  # noqa: BLE001
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000], "stderr_tail": traceback.format_exc()[-3000:]}
    out["worker_seconds"] = time.perf_counter() - t
    return out


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def combine_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One recipe's result over rounds: its median-tokens/s round (the upper one of an even
    count), with the peak memory raised to the largest of any round and every round listed."""
    if len(runs) == 1:
        return runs[0]
    ok = [r for r in runs if r.get("ok")]
    if len(ok) < len(runs):
        return next(r for r in runs if not r.get("ok"))
    ranked = sorted(ok, key=lambda r: r["tokens_per_second"])
    out = dict(ranked[len(ranked) // 2])
    out["peak_memory_bytes"] = max(r["peak_memory_bytes"] for r in runs)
    out["rounds"] = [{k: r.get(k) for k in ("tokens_per_second", "peak_memory_bytes", "step_seconds")}
                     for r in runs]
    return out


def build_report(meta: dict[str, Any], results: dict[str, dict[str, Any]],
                 max_block: dict[str, Any] | None) -> dict[str, Any]:
    ref, kin = results.get("reference", {}), results.get("kinfuse", {})
    device = next((r["device"] for r in [*results.values(), *(max_block or {}).values()]
                   if isinstance(r, dict) and r.get("device")), meta.get("device"))
    # every kinfuse variant against the reference of the same run
    by_recipe = {name: {"tokens_per_second": _ratio(r.get("tokens_per_second"), ref.get("tokens_per_second")),
                        "peak_memory": _ratio(r.get("peak_memory_bytes"), ref.get("peak_memory_bytes"))}
                 for name, r in results.items() if name != "reference"}
    report = {
        **meta,
        "device": device,
        "torch": version("torch"),
        "transformers": version("transformers"),
        "peft": version("peft"),
        "bitsandbytes": version("bitsandbytes"),
        "accelerate": version("accelerate"),
        "datasets": version("datasets"),
        "kinfuse": version("kinfuse"),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "results": results,
        "ratios": {
            "tokens_per_second": _ratio(kin.get("tokens_per_second"), ref.get("tokens_per_second")),
            "peak_memory": _ratio(kin.get("peak_memory_bytes"), ref.get("peak_memory_bytes")),
            "by_recipe": by_recipe,
        },
    }
    if max_block is not None:
        report["max_block"] = max_block
    return report


def table(report: dict[str, Any]) -> str:
    gib = 2**30
    lines = [f"{report['device']}  {report['arch']}  block {report['block_size']} x micro-batch "
             f"{report['micro_batch']}, {report['steps']} steps ({report['warmup']} warm-up)",
             f"{'recipe':<16} {'tokens/s':>10} {'peak GiB':>9} {'load GiB':>9} {'mean loss':>9}  status"]

    def fmt(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, float) else "-"

    by_recipe = report["ratios"].get("by_recipe", {})
    for name in report["results"]:
        r = report["results"][name]
        if r.get("ok"):
            tps = r.get("tokens_per_second")
            vs = by_recipe.get(name) if "reference" in report["results"] else None
            lines.append(f"{name:<16} {tps or float('nan'):>10.1f} {r['peak_memory_bytes'] / gib:>9.2f} "
                         f"{r['load_memory_bytes'] / gib:>9.2f} {r.get('mean_loss', float('nan')):>9.3f}  ok"
                         + (f"  vs reference: tokens/s {fmt(vs['tokens_per_second'])} (>1 faster), peak memory "
                            f"{fmt(vs['peak_memory'])} (<1 smaller)" if vs else ""))
        else:
            lines.append(f"{name:<16} {'-':>10} {'-':>9} {'-':>9} {'-':>9}  FAILED: {str(r.get('error'))[:80]}")
    mb = report.get("max_block") or {}
    for name in RECIPES:
        if name in mb:
            r = mb[name]
            lines.append(f"max block ({name}): {r.get('largest_block')} tokens at micro-batch 1"
                         + ("" if r.get("ok", True) else f" (worker failed: {str(r.get('error'))[:60]})"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help="'default' (embedded SmolLM2-135M-Instruct) or a local checkpoint folder")
    g.add_argument("--arch", choices=sorted(ARCHS), help="random-weight model with real shapes (CUDA only)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--block-size", type=int, help="tokens per block (default 2048 on CUDA, 512 on CPU)")
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per recipe, warm-up included")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of tokens/s")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the recipes this many times, alternating; report each one's median-speed round")
    p.add_argument("--max-block", action="store_true",
                   help="also find the longest block each recipe trains at micro-batch 1 (CUDA)")
    p.add_argument("--max-block-sizes", default=",".join(map(str, MAX_BLOCK_SIZES)))
    p.add_argument("--max-block-steps", type=int, default=2, help="steps trained at each size")
    p.add_argument("--max-block-memory-gib", type=float,
                   help="cap each recipe's CUDA memory at this many GiB for --max-block (a smaller card)")
    p.add_argument("--max-block-recipes", default=",".join(DEFAULT_RECIPES),
                   help="recipes for --max-block (kinfuse-offload: checkpointed activations in host memory)")
    p.add_argument("--recipes", default=",".join(DEFAULT_RECIPES),
                   help=f"comma-separated, from {', '.join(RECIPES)}; kinfuse variants are TrainConfig switches")
    p.add_argument("--profile", action="store_true",
                   help="profile one more step of each kinfuse recipe (torch.profiler; top ops in the JSON)")
    p.add_argument("--workdir", default="/tmp/kinfuse-bench")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per worker process")
    p.add_argument("--kinfuse-attention", default="auto",
                   help="TrainConfig.attention for kinfuse (auto: flash-attn when importable on CUDA, else sdpa)")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--in-process", action="store_true",
                   help="run the recipes in this process (tests/debugging: peak memory is then not per recipe)")
    a = p.parse_args(argv)
    if a.model is None and a.arch is None:
        a.model = "default"
    if a.steps <= a.warmup:
        p.error(f"--steps ({a.steps}) must be larger than --warmup ({a.warmup})")
    if a.rounds < 1:
        p.error(f"--rounds ({a.rounds}) must be 1 or more")
    recipes, max_block_recipes = (tuple(x.strip() for x in arg.split(",") if x.strip())
                                  for arg in (a.recipes, a.max_block_recipes))
    unknown = sorted(set(recipes + max_block_recipes) - set(RECIPES))
    if unknown or not (recipes or a.max_block):
        p.error(f"--recipes / --max-block-recipes: unknown or none {unknown}; choose from {', '.join(RECIPES)} "
                "(--recipes '' with --max-block runs only the longest-block search)")

    device = resolve_device(a.device)
    if a.arch and device != "cuda":
        p.error("--arch builds a multi-GB random model: it needs a CUDA GPU")
    block_size = a.block_size or (2048 if device == "cuda" else 512)
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    # the checkpoint and the blocks, shared by both recipes
    if a.arch:
        arch = a.arch
        model_path = workdir / arch
        made = spawn(["--worker", "checkpoint", "--arch", arch, "--model-path", str(model_path)], a.timeout)
        if not made.get("ok"):
            raise SystemExit(f"could not build the {arch} checkpoint: {made.get('error')}\n{made.get('stderr_tail')}")
        model_path = str(model_path)
        vocab = ARCHS[arch]["vocab_size"]
        blocks = random_blocks(vocab, block_size, a.steps * a.micro_batch, seed=0)
        data_desc = "random token ids (seed 0)"
    else:
        if a.model in ("default", "SmolLM2-135M-Instruct"):
            import kinfuse

            model_path, arch = kinfuse.default_model(), "smollm2-135m"
        else:
            model_path, arch = str(Path(a.model).resolve()), Path(a.model).resolve().name.lower()
        vocab = json.loads((Path(model_path) / "config.json").read_text())["vocab_size"]
        blocks = text_blocks(model_path, block_size, a.steps * a.micro_batch)
        data_desc = "kinfuse/data/general.txt tokenized, repeated"
    blocks_file = save_blocks(blocks, workdir / f"blocks-{arch}-{block_size}x{len(blocks)}.npy")

    common = dict(device=device, micro_batch=a.micro_batch, steps=a.steps, warmup=a.warmup, workdir=str(workdir),
                  kinfuse_attention=a.kinfuse_attention, profile=a.profile)
    load_before = os.getloadavg()
    by_round: dict[str, list[dict[str, Any]]] = {}
    for rnd in range(a.rounds):  # recipes alternate, so a slow spell of a shared machine hits both
        for recipe in recipes:
            print(f"[bench] {recipe} (round {rnd + 1}/{a.rounds}): {a.steps} steps of {a.micro_batch} x {block_size} "
                  f"tokens on {device} ...", file=sys.stderr, flush=True)
            if a.in_process:
                r = _in_process(run_worker, recipe, model_path, blocks, **common)
            else:
                r = spawn(
                    ["--worker", recipe, "--model-path", model_path, "--blocks", str(blocks_file),
                     "--device", device, "--micro-batch", str(a.micro_batch), "--steps", str(a.steps),
                     "--warmup", str(a.warmup), "--workdir", str(workdir), "--kinfuse-attention", a.kinfuse_attention,
                     *(["--profile"] if a.profile else [])],
                    a.timeout,
                )
            by_round.setdefault(recipe, []).append(r)
    results = {key: combine_rounds(rs) for key, rs in by_round.items()}
    load_after = os.getloadavg()

    max_block = None
    if a.max_block:
        if device != "cuda":
            notes.append("--max-block skipped: it measures GPU memory and needs CUDA")
        else:
            positions = max(MAX_BLOCK_POSITIONS, *(int(x) for x in a.max_block_sizes.split(",")))
            long_path = with_max_positions(model_path, workdir / f"{arch}-maxpos{positions}", positions)
            max_block = {"max_position_embeddings_raised_to": positions, "steps_per_size": a.max_block_steps,
                         "memory_cap_gib": a.max_block_memory_gib,
                         "note": "the checkpoint's config.json max_position_embeddings was raised for this test "
                                 "so RoPE and kinfuse's block-size check allow long blocks"}
            for recipe in max_block_recipes:
                print(f"[bench] {recipe}: longest block at micro-batch 1 ...", file=sys.stderr, flush=True)
                if a.in_process:
                    sizes = tuple(int(x) for x in a.max_block_sizes.split(","))
                    max_block[recipe] = _in_process(run_max_block, recipe, str(long_path), sizes=sizes,
                                                    vocab_size=vocab, device=device, steps=a.max_block_steps,
                                                    memory_gib=a.max_block_memory_gib, workdir=str(workdir),
                                                    kinfuse_attention=a.kinfuse_attention)
                else:
                    r = spawn(["--worker", recipe, "--max-block", "--model-path", str(long_path), "--device", device,
                               "--vocab-size", str(vocab), "--max-block-sizes", a.max_block_sizes,
                               "--steps", str(a.max_block_steps),
                               *(["--memory-gib", str(a.max_block_memory_gib)] if a.max_block_memory_gib else []),
                               "--workdir", str(workdir), "--kinfuse-attention", a.kinfuse_attention], a.timeout)
                    if not r.get("ok") and r.get("progress"):  # a timeout or crash: keep the sizes that finished
                        ok = [x["block_size"] for x in r["progress"] if x.get("ok")]
                        r["largest_block"] = max(ok) if ok else None
                        r["tried"] = r.pop("progress")
                    max_block[recipe] = r

    meta = {
        "device_kind": device,
        "arch": arch,
        "model_path": model_path,
        "data": data_desc,
        "block_size": block_size,
        "micro_batch": a.micro_batch,
        "steps": a.steps,
        "warmup": a.warmup,
        "rounds": a.rounds,
        "lora": LORA,
        "learning_rate": LEARNING_RATE,
        "isolation": "in-process" if a.in_process else "one subprocess per recipe",
        # Other processes on the machine slow both recipes, not always alike: CPU numbers taken
        # under a load average above the core count are noisy.
        "load_average_1_5_15": {"before": [round(x, 2) for x in load_before],
                                "after": [round(x, 2) for x in load_after]},
        "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": shlex.join(["python", "benchmarks/bench_train.py", *argv]),
        "notes": notes + [
            "tokens_per_second: tokens of the steps after the first `warmup` steps / their wall time "
            "(reference: TrainerCallback step-end times, synchronized on CUDA; kinfuse: step-end times "
            "from TrainResult.history, tokens / cumulative tokens_per_second, not synchronized)",
            "peak_memory_bytes: CUDA max_memory_allocated over load and training; CPU peak RSS of the "
            "worker process. Paged optimizer state (CUDA managed memory) is in neither.",
        ],
    }
    report = build_report(meta, results, max_block)
    path = write_result(report, a.results_dir, f"{device}-{arch}")
    report["_path"] = str(path)
    print(table(report))
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        sys.exit(_worker_cli(sys.argv[1:]))
    main()
