#!/usr/bin/env python
"""FSDP-QLoRA model loading: each process's memory with whole-model loading against shard by shard.

One run:

  1. writes a Llama checkpoint with random weights (a safetensors file of a few hundred MB in
     fp32 by default; cached under --work) and its tokenizer (the tests' tiny one);
  2. for fsdp_loading = "whole" and then "sharded", launches `torchrun --standalone
     --nproc-per-node 2` of this script's worker (gloo on a CPU, NCCL with 2 GPUs), which
     builds a QLoRATrainer (NF4, distributed = "fsdp") and trains --steps steps; each rank
     reports its RSS after imports, its peak RSS (ru_maxrss) after building and after training,
     the weight bytes it held at its peak while loading (every weight and buffer's storage,
     sharded ones by their local piece: before FSDP cuts the model for "whole", at each tensor
     read plus that tensor for "sharded") and after, its losses, and on CUDA its peak allocated
     memory;
  3. writes benchmarks/results/fsdp-load-<timestamp>.json (machine, versions, commit).

    python benchmarks/bench_fsdp_load.py                     # 12 layers, hidden 1024: ~560 MB fp32
    python benchmarks/bench_fsdp_load.py --layers 2 --steps 1  # a quick check

The bound for "sharded", per process: its 1/N of the sharded weights (the NF4 decoder layers
and the embeddings) + the output layer whole (not sharded) + the quantization states and the
adapter + one tensor being loaded (read in the file's dtype, and its NF4 form).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from provenance import cpu_name, git_commit, version, write_result  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_model(path: Path, layers: int, hidden: int, intermediate: int, vocab: int) -> Path:
    """A random-weight Llama checkpoint with the tests' tiny tokenizer (ids above its vocab unused)."""
    if (path / "model.safetensors").is_file():
        return path
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_model

    build_tiny_model(path)  # the tokenizer files (and a tiny model, replaced below)
    tok = json.loads((path / "config.json").read_text())
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64,
                         num_key_value_heads=max(1, hidden // 256), max_position_embeddings=512,
                         bos_token_id=tok["bos_token_id"], eos_token_id=tok["eos_token_id"],
                         pad_token_id=tok["pad_token_id"], tie_word_embeddings=False, initializer_range=0.02)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def worker(model: str, out: Path, mode: str, steps: int, text: str, mmap_threshold: int) -> None:
    """One rank: build the trainer with fsdp_loading=mode, train `steps` steps, report."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import bitsandbytes  # noqa: F401  (imported before the baseline RSS is taken, as the rest)
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    from kinfuse import Chunker, QLoRATrainer, TrainConfig
    from kinfuse.train import fsdp, fsdp_load

    rank = int(os.environ["RANK"])
    report: dict = {"rank": rank, "rss_after_imports_mb": rss_mb()}
    built, shard, read = [], fsdp.shard, fsdp_load.Loader.read
    load = {"peak_weight_bytes": 0, "largest_read_bytes": 0}

    def tracked_shard(m, *a):
        built.append(m)
        load["peak_weight_bytes"] = max(load["peak_weight_bytes"], fsdp_load.held_bytes(m))
        return shard(m, *a)

    def tracked_read(self, key):
        t = read(self, key)
        n = t.numel() * t.element_size()
        load["peak_weight_bytes"] = max(load["peak_weight_bytes"], fsdp_load.held_bytes(built[0]) + n)
        load["largest_read_bytes"] = max(load["largest_read_bytes"], n)
        return t

    if not os.environ.get("BENCH_NO_TRACK"):  # the tracking walks every weight at each read: a cost of its own
        fsdp.shard, fsdp_load.Loader.read = tracked_shard, tracked_read
    device = "cuda" if torch.cuda.is_available() and torch.cuda.device_count() >= 2 else "cpu"
    config = TrainConfig(progress=False, distributed="fsdp", fsdp_loading=mode, quantize="nf4", device=device,
                         compute_dtype="bfloat16" if device == "cuda" else "float32", kernels="none",
                         max_steps=max(1, steps), micro_batch_size=1, lora_dropout=0.0, learning_rate=5e-3,
                         lr_schedule="constant", output_dir=str(out),
                         cpu_mmap_threshold=mmap_threshold or None)
    start = time.perf_counter()
    trainer = QLoRATrainer(model, config)
    report["build_s"] = round(time.perf_counter() - start, 2)
    report["peak_rss_after_build_mb"] = peak_rss_mb()
    report["weight_bytes_peak_loading"] = load["peak_weight_bytes"]
    report["largest_read_bytes"] = load["largest_read_bytes"]
    report["weight_bytes_after_build"] = fsdp_load.held_bytes(trainer.model)
    if device == "cuda":
        report["cuda_peak_allocated_after_build_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if steps:
        blocks = Chunker(trainer.tokenizer, block_size=64)([{"text": t} for t in text.splitlines() if t.strip()])
        result = trainer.train(blocks)
        report["losses"] = [h["loss"] for h in result.history]
        report["peak_rss_after_train_mb"] = peak_rss_mb()
        if device == "cuda":
            report["cuda_peak_allocated_after_train_mb"] = torch.cuda.max_memory_allocated() / 2**20
    report["device"] = device
    (out / f"rank-{rank}.json").write_text(json.dumps(report))


def launch(model: Path, out: Path, mode: str, steps: int, text: Path, mmap_threshold: int) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__,
           "--worker", str(model), str(out), mode, str(steps), str(text), str(mmap_threshold)]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{mode}: torchrun failed\n{(done.stdout + done.stderr)[-4000:]}")
    wall = time.perf_counter() - start
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    return [{**r, "launch_wall_s": round(wall, 1)} for r in ranks]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, model, out, mode, steps, text, threshold = sys.argv
        worker(model, Path(out), mode, int(steps), Path(text).read_text(), int(threshold))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=2, help="training steps after loading (0: load only)")
    ap.add_argument("--modes", default="whole,sharded", help="fsdp_loading values to run, in order")
    ap.add_argument("--mmap-threshold", type=int, default=0,
                    help="TrainConfig.cpu_mmap_threshold (bytes; 0: unset, glibc's default)")
    ap.add_argument("--work", default="/tmp/kinfuse-bench-fsdp-load", help="model cache and run folders")
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args()

    work = Path(args.work)
    model = make_model(work / f"llama-{args.layers}x{args.hidden}-{args.intermediate}-{args.vocab}", args.layers,
                       args.hidden, args.intermediate, args.vocab)
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import TEXT

    text = work / "text.txt"
    text.write_text(TEXT)
    file_mb = (model / "model.safetensors").stat().st_size / 2**20
    runs = {}
    for mode in args.modes.split(","):
        runs[mode] = launch(model, work / f"run-{mode}-{time.time_ns()}", mode, args.steps, text, args.mmap_threshold)
        for r in runs[mode]:
            print(f"{mode:8s} rank {r['rank']}: peak RSS {r['peak_rss_after_build_mb']:.0f} MB after build "
                  f"(imports {r['rss_after_imports_mb']:.0f} MB); weights held at the loading peak "
                  f"{r['weight_bytes_peak_loading'] / 2**20:.1f} MB, after {r['weight_bytes_after_build'] / 2**20:.1f} MB; "
                  f"build {r['build_s']} s", flush=True)
    same = None
    if args.steps and {"whole", "sharded"} <= runs.keys():
        same = [r["losses"] for r in runs["whole"]] == [r["losses"] for r in runs["sharded"]]
    report = {
        "benchmark": "fsdp-load",
        "model": {"layers": args.layers, "hidden": args.hidden, "intermediate": args.intermediate,
                  "vocab": args.vocab, "safetensors_mb": round(file_mb, 1), "dtype_in_file": "float32"},
        "processes": 2,
        "cpu_mmap_threshold": args.mmap_threshold or None,
        "steps": args.steps,
        "runs": runs,
        "same_losses": same,
        "machine": {"cpu": cpu_name(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {k: version(k) for k in ("torch", "transformers", "peft", "bitsandbytes", "safetensors")},
        "commit": git_commit(),
    }
    print(f"same losses: {same}; written to {write_result(report, args.results, 'fsdp-load')}")


if __name__ == "__main__":
    main()
