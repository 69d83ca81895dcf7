"""kinfuse.train.distributed: QLoRATrainer under `torchrun --nproc-per-node 2` (gloo, CPU) is
the single process with grad_accum=2 (adapter to float tolerance, the same loss curve); rank 0
alone logs and writes; SIGTERM to one rank stops both with a complete checkpoint, and the run
resumed from it on 2 processes is the uninterrupted one; another world size is refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchrun_run as tr
from kinfuse import TrainingError

ROOT = tr.ROOT
# conftest's FAST and EXACT (steady fp32 runs), 6 steps of 2 blocks each
RUN = dict(max_steps=6, micro_batch_size=1, max_grad_norm=1.0, lora_dropout=0.0, learning_rate=5e-3,
           lr_schedule="constant", quantize="none", compute_dtype="float32", kernels="none")

def _launch(tmp_path, tiny_model, sample_text, out, **overrides):
    """Two processes of torchrun_run.WORKER (DDP: the default `train.distributed`)."""
    return tr.launch(tmp_path, tiny_model, sample_text, out, {**RUN, **overrides})


def _finish(child):
    tr.finish(child, timeout=180)


@pytest.fixture(scope="module")
def two_process_run(tiny_model, sample_text, tmp_path_factory):
    """The uninterrupted 2-process run (save_every=3), started while the tests set up."""
    tmp = tmp_path_factory.mktemp("ddp")
    _finish(_launch(tmp, tiny_model, sample_text, tmp / "straight", save_every=3))
    return tmp / "straight"


def test_two_processes_equal_one_with_grad_accum_2(two_process_run, make_trainer, blocks, tmp_path):
    one = make_trainer(grad_accum=2, output_dir=str(tmp_path), **RUN)
    single = one.train(blocks)
    one.save_adapter(tmp_path / "adapter")
    results = [json.loads((two_process_run / f"result-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in results] == [2, 2] and all(r["steps"] == 6 for r in results)
    # the same loss curve: every step's loss is the whole global batch's, on every rank
    expected = [r["loss"] for r in single.history]
    for r in results:
        assert r["losses"] == pytest.approx(expected, rel=1e-5)
    a, b = tr.adapter(tmp_path / "adapter"), tr.adapter(two_process_run / "adapter")
    assert a.keys() == b.keys() and a
    # The all-reduce adds the two ranks' gradients in another order than accumulation does, and
    # Adam divides by sqrt(v): a near-zero gradient's rounding can move its weight by ~1e-5 over
    # six steps. A missing all-reduce moves every weight by far more (the losses diverge above).
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=2e-5)
    # rank 0 alone logs and checkpoints; the checkpoint records the world size
    assert (two_process_run / "log-0.jsonl").is_file() and not (two_process_run / "log-1.jsonl").exists()
    assert len((two_process_run / "log-0.jsonl").read_text().splitlines()) == 6
    meta = json.loads((two_process_run / "checkpoints/step-0000003/meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == 3


def test_accelerate_launch_trains_as_torchrun_does(two_process_run, tiny_model, sample_text, tmp_path):
    """`accelerate launch` sets the same process-group variables torchrun does: the same run."""
    out = tmp_path / "accelerate"
    _finish(tr.launch(tmp_path, tiny_model, sample_text, out, {**RUN, "save_every": 3}, launcher="accelerate"))
    got, want = tr.results(out), tr.results(two_process_run)
    assert [r["world"] for r in got] == [2, 2]
    assert [r["losses"] for r in got] == [r["losses"] for r in want]
    a, b = tr.adapter(out / "adapter"), tr.adapter(two_process_run / "adapter")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_world_size(two_process_run, make_trainer, blocks, tmp_path):
    ckpt = two_process_run / "checkpoints/step-0000003"
    trainer = make_trainer(grad_accum=1, output_dir=str(tmp_path), resume_from=str(ckpt), **RUN)
    with pytest.raises(TrainingError, match=r"written by 2 training process\(es\), this run has 1.*"
                                            r"torchrun --nproc-per-node 2"):
        trainer.train(blocks)


def test_sigterm_on_one_rank_checkpoints_both_and_resume_is_uninterrupted(two_process_run, tiny_model, sample_text,
                                                                           tmp_path):
    out = tmp_path / "run"
    child = _launch(tmp_path, tiny_model, sample_text, out, slow=0.4)
    tr.sigterm_rank_1_after_first_step(child, out, timeout=120)
    _finish(child)
    results = tr.results(out)
    steps = results[0]["steps"]
    assert 1 <= steps < 6, "the signal came too late to interrupt the run"
    assert all(r["interrupted"] and r["signal"] == "SIGTERM" and r["steps"] == steps for r in results)
    ckpt = out / "checkpoints" / f"step-{steps:07d}"
    assert results[0]["checkpoint"] == results[1]["checkpoint"] == str(ckpt) and (ckpt / "meta.json").is_file()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # nothing half-written

    _finish(_launch(tmp_path, tiny_model, sample_text, out, resume=True))
    resumed = json.loads((out / "result-0.json").read_text())
    straight = json.loads((two_process_run / "result-0.json").read_text())
    assert resumed["steps"] == 6 and resumed["losses"] == straight["losses"]
    a, b = tr.adapter(two_process_run / "adapter"), tr.adapter(out / "adapter")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(line)["step"] for line in (out / "log-0.jsonl").read_text().splitlines()] == list(range(1, 7))


def test_infuse_cli_unchanged_under_torchrun(tiny_model, tmp_path):
    # `torchrun -m kinfuse.cli infuse CONFIG`: rank 0 builds the mix (a model writing anchors
    # among it), both train, rank 0 alone writes, evaluates and prints.
    page = tmp_path / "zephyr.txt"
    page.write_text("The Zephyr router has four antennas. It was released in 2021 by Northwind.\n" * 4)
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"question": "How many antennas does the Zephyr router have?", "answers": ["four"]}))
    out, config = tmp_path / "out", tmp_path / "infuse.toml"
    config.write_text(f'model = "{tiny_model}"\nout_dir = "{out}"\n[corpus]\npaths = ["{page}"]\n'
                      '[data]\nblock_size = 64\nquestions = 1\nself_distill = 4\n'
                      '[train]\nmax_steps = 3\nsave_every = 2\nquantize = "none"\nprogress = false\n'
                      f'[eval]\nprobes = ["{probes}"]\nperplexity = false\nmax_new_tokens = 4\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "kinfuse.cli", "infuse", str(config)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.count("trained 3 steps") == 1 and done.stdout.count("accuracy: base") == 1
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["steps"] == 3 and run["metrics"] == "metrics.json"
    assert (out / "adapter/adapter_model.safetensors").is_file() and (out / "report.html").is_file()
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "checkpoints/step-0000002/meta.json").read_text())["world_size"] == 2


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL)")
def test_two_gpus_equal_one_with_grad_accum_2(make_trainer, blocks, tiny_model, sample_text, tmp_path):
    child = _launch(tmp_path, tiny_model, sample_text, tmp_path / "two", device="cuda")
    one = make_trainer(grad_accum=2, device="cuda", output_dir=str(tmp_path / "one"), **RUN)
    single = one.train(blocks)
    one.save_adapter(tmp_path / "one/adapter")
    _finish(child)
    two = json.loads((tmp_path / "two/result-0.json").read_text())
    assert two["world"] == 2 and two["losses"] == pytest.approx([r["loss"] for r in single.history], rel=1e-4)
    a, b = tr.adapter(tmp_path / "one/adapter"), tr.adapter(tmp_path / "two/adapter")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-5)


def test_world_size_without_torchrun_says_how_to_launch(monkeypatch):
    from kinfuse import KinfuseError
    from kinfuse.train import distributed

    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(KinfuseError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT unset.*torchrun"):
        distributed.init("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init("cpu") == distributed.Dist()  # one process: nothing joined
