"""Two-process torchrun launches of a tiny training run, shared by the DDP and FSDP tests."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# One rank of a torchrun launch: trains the tiny model on the sample blocks with the TrainConfig
# fields in argv[3] (plus "anchors", "slow", "grads", "track_load", "build_only" switches); every rank reports what its train() returned and how the first
# quantized projection is held (sharded or not, its local and whole sizes, its dtype).
WORKER = """
import json, os, sys, time
from pathlib import Path
from kinfuse import Chunker, QLoRATrainer, TrainConfig
from transformers import AutoTokenizer
model, out, overrides = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
rank = int(os.environ["RANK"])
(out / f"pid-{rank}").write_text(str(os.getpid()))
tok = AutoTokenizer.from_pretrained(model)
blocks = Chunker(tok, block_size=64)([{"text": t} for t in Path(sys.argv[4]).read_text().splitlines()])
if overrides.pop("anchors", False):  # every third block an anchor: the processes' passes differ
    blocks = blocks.add_column("anchor", [i % 3 == 0 for i in range(len(blocks))])
slow = overrides.pop("slow", 0)
overrides_grads = overrides.pop("grads", False)
build_only = overrides.pop("build_only", False)
load = {}
if overrides.pop("track_load", False):  # the weight bytes this process holds while the model is built
    from kinfuse.train import fsdp, fsdp_load
    built, shard, read = [], fsdp.shard, fsdp_load.Loader.read
    def tracked_shard(m, *a):  # whole-model loading: everything is loaded before this
        built.append(m)
        load["before_shard"] = fsdp_load.held_bytes(m)
        return shard(m, *a)
    def tracked_read(self, key):  # sharded loading: the shards allocated so far plus the tensor just read
        t = read(self, key)
        n = t.numel() * t.element_size()
        load["peak"] = max(load.get("peak", 0), fsdp_load.held_bytes(built[0]) + n)
        load["largest_read"] = max(load.get("largest_read", 0), n)
        return t
    fsdp.shard, fsdp_load.Loader.read = tracked_shard, tracked_read
trainer = QLoRATrainer(model, TrainConfig(progress=False, output_dir=str(out), **overrides))
if load:
    from kinfuse.train.fsdp_load import held_bytes
    load["after"] = held_bytes(trainer.model)
if build_only:
    (out / f"result-{rank}.json").write_text(json.dumps({"load": load}))
    raise SystemExit(0)
if slow:  # time to signal a run mid-way; the numbers are unchanged
    loss_sum = trainer.loss_sum
    trainer.loss_sum = lambda *a: (time.sleep(slow), loss_sum(*a))[1]
if overrides_grads:  # the first step's gradients, gathered whole, before training
    import torch
    from kinfuse.train.blocks import BlockTensors
    from kinfuse.train.loop import forward_backward
    data = BlockTensors(blocks)
    micro = [data.micro_batch(k, trainer.config) for k in range(2)]
    forward_backward(trainer, data, [micro[rank]], step_targets=int(sum(data.targets[m].sum() for m in micro)))
    grads = {n: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).cpu()
             for n, p in trainer.model.named_parameters() if p.requires_grad}
    if rank == 0:
        torch.save(grads, out / "grads.pt")
    for p in trainer.model.parameters():
        p.grad = None
w = trainer.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
held = {"sharded": type(w).__name__ == "DTensor", "dtype": str(w.dtype),
        "local": (w.to_local() if hasattr(w, "to_local") else w).numel(), "whole": w.numel()}
result = trainer.train(blocks, log_path=out / f"log-{rank}.jsonl")
trainer.save_adapter(out / "adapter")
(out / f"result-{rank}.json").write_text(json.dumps(
    {"world": trainer.dist.world_size, "load": load, "steps": result.steps, "interrupted": result.interrupted, "held": held,
     "signal": result.stop_signal, "checkpoint": result.checkpoint, "history": result.history,
     "losses": [r["loss"] for r in result.history]}))
"""



def launch(tmp_path, tiny_model, sample_text, out, config, launcher="torchrun"):
    """Start `torchrun --standalone --nproc-per-node 2` (or `accelerate launch --multi_gpu
    --num_processes 2`, which runs torchrun's launcher; on a machine without GPUs the processes
    join over gloo) of WORKER with `config`, writing to `out`. (accelerate's `--cpu` with several
    processes means MPI, which kinfuse does not use.)"""
    out.mkdir(parents=True, exist_ok=True)
    script, text = tmp_path / "worker.py", tmp_path / "text.txt"
    script.write_text(WORKER)
    text.write_text(sample_text)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = {"torchrun": ["torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
             "accelerate": ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                            "--main_process_port", "0"]}[launcher]
    cmd = [sys.executable, "-m", *start, str(script), tiny_model, str(out), json.dumps(config), str(text)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(child, timeout):
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, (out + err)[-3000:]


def results(out):
    return [json.loads((out / f"result-{r}.json").read_text()) for r in (0, 1)]


def adapter(path):
    from safetensors.torch import load_file

    return load_file(Path(path) / "adapter_model.safetensors")


def sigterm_rank_1_after_first_step(child, out, timeout):
    """SIGTERM to rank 1 alone once rank 0 has logged a step: the stop decision is collective."""
    log = out / "log-0.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 1):
        if child.poll() is not None:
            break
        time.sleep(0.1)
    os.kill(int((out / "pid-1").read_text()), signal.SIGTERM)
