"""kinfuse.train.fsdp: FSDP-QLoRA (train.distributed = "fsdp") under `torchrun --nproc-per-node 2`
on the CPU (gloo): the NF4 weights really are sharded (each process holds half of every packed
weight, stored in the compute dtype), and the run is the single process with grad_accum=2 (adapter
to float tolerance, the same loss curve), anchor blocks (the adapter-off forward) included;
rank 0 alone writes; SIGTERM to one rank leaves a complete checkpoint that resumes, on 2
processes, to the uninterrupted run; the checkpoint is refused by one process, and FSDP mode
without torchrun or through `kinfuse infuse` is refused with the way on."""

import json

import pytest
import torch

import torchrun_run as tr
from kinfuse import ConfigError, TrainingError

# NF4 base (the QLoRA case), fp32 compute so that the comparison is at float precision
RUN = dict(max_steps=6, micro_batch_size=1, max_grad_norm=1.0, lora_dropout=0.0, learning_rate=5e-3,
           lr_schedule="constant", quantize="nf4", compute_dtype="float32", kernels="none")


def _launch(tmp_path, tiny_model, sample_text, out, **overrides):
    """Two processes of torchrun_run.WORKER in FSDP mode."""
    return tr.launch(tmp_path, tiny_model, sample_text, out, {**RUN, "distributed": "fsdp", **overrides})


def _finish(child):
    tr.finish(child, timeout=240)


def _single(make_trainer, blocks, out, **overrides):
    """The one-process run with grad_accum=2 that two processes must reproduce."""
    one = make_trainer(grad_accum=2, output_dir=str(out), **{**RUN, **overrides})
    result = one.train(blocks)
    one.save_adapter(out / "adapter")
    return result


def _assert_same_run(two_out, one_out, one_result):
    # The same loss curve: every step's loss is the whole global batch's, on every rank.
    for r in tr.results(two_out):
        assert r["world"] == 2 and r["steps"] == one_result.steps
        assert [h["loss"] for h in r["history"]] == pytest.approx([h["loss"] for h in one_result.history], rel=1e-5)
    a, b = tr.adapter(one_out / "adapter"), tr.adapter(two_out / "adapter")
    assert a.keys() == b.keys() and a
    # As for DDP: the two ranks' gradients are summed in another order than accumulation adds
    # them, and Adam divides by sqrt(v), so a near-zero gradient's rounding can move its weight
    # by up to the learning rate a step (seen: one element of 1,024 off by 5.6e-4 in six steps).
    # So: nearly every weight within rounding, none beyond the learning rate. The gradients
    # themselves are compared exactly (test_fsdp_shards_nf4_...), and a shard missing would
    # make the losses diverge above.
    for k in a:
        off = ~torch.isclose(b[k], a[k], rtol=1e-3, atol=2e-5)
        assert off.float().mean() <= 0.01, (k, int(off.sum()))
        assert (b[k] - a[k]).abs().max() <= RUN["learning_rate"], k


@pytest.fixture(scope="module")
def fsdp_run(tiny_model, sample_text, tmp_path_factory):
    """The uninterrupted 2-process FSDP run (save_every=3)."""
    tmp = tmp_path_factory.mktemp("fsdp")
    _finish(_launch(tmp, tiny_model, sample_text, tmp / "straight", save_every=3, grads=True))
    return tmp / "straight"


def test_fsdp_shards_nf4_and_equals_one_process_with_grad_accum_2(fsdp_run, make_trainer, blocks, tmp_path):
    results = tr.results(fsdp_run)
    for r in results:
        # The packed NF4 bytes, stored as float32 (the compute dtype) so that FSDP splits them:
        # each process holds half.
        held = r["held"]
        assert held["sharded"] and held["dtype"] == "torch.float32" and held["local"] * 2 == held["whole"]
    # The first step's gradients, as FSDP left them (reduce-scattered, gathered whole), are the
    # single process's accumulated over both micro-batches: summed over the ranks, not averaged.
    # (Adam and clipping would hide a factor of 2 in the weights; the gradients show it.)
    from kinfuse.train.blocks import BlockTensors
    from kinfuse.train.loop import forward_backward

    one = make_trainer(grad_accum=2, **RUN)
    data = BlockTensors(blocks)
    forward_backward(one, data, [data.micro_batch(k, one.config) for k in range(2)])
    fsdp_grads = torch.load(fsdp_run / "grads.pt", weights_only=True)
    single_grads = {n: p.grad for n, p in one.model.named_parameters() if p.requires_grad}
    assert fsdp_grads.keys() == single_grads.keys()
    for n, g in single_grads.items():
        torch.testing.assert_close(fsdp_grads[n], g, rtol=1e-4, atol=1e-7)
    _assert_same_run(fsdp_run, tmp_path, _single(make_trainer, blocks, tmp_path))
    # rank 0 alone logs and checkpoints; the checkpoint records the world size
    assert (fsdp_run / "log-0.jsonl").is_file() and not (fsdp_run / "log-1.jsonl").exists()
    assert len((fsdp_run / "log-0.jsonl").read_text().splitlines()) == 6
    meta = json.loads((fsdp_run / "checkpoints/step-0000003/meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == 3


def test_fsdp_checkpoint_is_whole_and_one_process_refuses_it(fsdp_run, make_trainer, blocks, tmp_path):
    ckpt = fsdp_run / "checkpoints/step-0000003"
    # Gathered whole: the adapter has every LoRA weight at full size, the optimizer state one
    # process's layout (integer keys, whole moments), as a single process writes them.
    adapter = tr.adapter(ckpt / "adapter")
    a_q = adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert a_q.shape == (16, 64)
    state = torch.load(ckpt / "state.pt", weights_only=True)["optimizer"]["state"]
    assert len(state) == len(adapter) and all(type(s["exp_avg"]) is torch.Tensor for s in state.values())
    assert sorted(tuple(s["exp_avg"].shape) for s in state.values()) == sorted(tuple(t.shape) for t in adapter.values())
    trainer = make_trainer(grad_accum=1, output_dir=str(tmp_path), resume_from=str(ckpt), **RUN)
    with pytest.raises(TrainingError, match=r"written by 2 training process\(es\), this run has 1.*"
                                            r"torchrun --nproc-per-node 2"):
        trainer.train(blocks)


def test_sigterm_on_one_rank_checkpoints_and_fsdp_resume_is_uninterrupted(fsdp_run, tiny_model, sample_text,
                                                                          tmp_path):
    # Known flake, not understood yet (about 1 run in 4 on the 2-core CI machine): rank 0 aborts
    # with "terminate called without an active exception" after the signal. One fresh retry on
    # exactly that abort; any other failure, or the abort twice, fails the test.
    for attempt in (1, 2):
        out = tmp_path / f"run-{attempt}"
        child = _launch(tmp_path, tiny_model, sample_text, out, slow=0.4)
        tr.sigterm_rank_1_after_first_step(child, out, timeout=150)
        stdout, stderr = child.communicate(timeout=240)
        if child.returncode == 0 or attempt == 2 or "terminate called without an active exception" not in stderr:
            break
    assert child.returncode == 0, (stdout + stderr)[-3000:]
    results = tr.results(out)
    steps = results[0]["steps"]
    assert 1 <= steps < 6, "the signal came too late to interrupt the run"
    assert all(r["interrupted"] and r["signal"] == "SIGTERM" and r["steps"] == steps for r in results)
    ckpt = out / "checkpoints" / f"step-{steps:07d}"
    assert results[0]["checkpoint"] == results[1]["checkpoint"] == str(ckpt) and (ckpt / "meta.json").is_file()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # nothing half-written

    _finish(_launch(tmp_path, tiny_model, sample_text, out, resume=True))
    resumed, straight = tr.results(out)[0], tr.results(fsdp_run)[0]
    assert resumed["steps"] == 6 and [h["loss"] for h in resumed["history"]] == [h["loss"] for h in
                                                                                  straight["history"]]
    a, b = tr.adapter(fsdp_run / "adapter"), tr.adapter(out / "adapter")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(line)["step"] for line in (out / "log-0.jsonl").read_text().splitlines()] == list(range(1, 7))


def test_fsdp_anchor_blocks_equal_one_process(make_trainer, blocks, tiny_model, sample_text, tmp_path):
    # Anchor blocks (KL to the adapter-off model: two forwards) on one rank and plain blocks on
    # the other in the same step: the passes are aligned, and the numbers are the single run's.
    child = _launch(tmp_path, tiny_model, sample_text, tmp_path / "two", anchors=True, max_steps=4)
    marked = blocks.add_column("anchor", [i % 3 == 0 for i in range(len(blocks))])
    one = _single(make_trainer, marked, tmp_path / "one", max_steps=4)
    _finish(child)
    # a step whose two micro-batches (one per rank) were an anchor block and a plain one
    assert any("anchor_kl" in h and "ce" in h for h in one.history)
    _assert_same_run(tmp_path / "two", tmp_path / "one", one)
    for r in tr.results(tmp_path / "two"):
        assert [h.get("anchor_kl", -1.0) for h in r["history"]] == pytest.approx(
            [h.get("anchor_kl", -1.0) for h in one.history], rel=1e-5)


def test_fsdp_without_torchrun_or_with_what_it_cannot_shard_is_refused(make_trainer, monkeypatch):
    from kinfuse.train.distributed import Dist

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match=r'distributed = "fsdp" shards the model.*one process.*'
                                          r"torchrun --nproc-per-node N"):
        make_trainer(distributed="fsdp", **RUN)
    with pytest.raises(ConfigError, match=r"distributed='bogus': .*ddp.*fsdp"):
        make_trainer(distributed="bogus")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr("kinfuse.train.distributed.init", lambda device: Dist(0, 2, 0))  # a launch, not joined
    with pytest.raises(ConfigError, match=r'kernels = "triton" with distributed = "fsdp".*set kernels = "auto"'):
        make_trainer(distributed="fsdp", **{**RUN, "kernels": "triton"})
    with pytest.raises(ConfigError, match=r"train_embeddings / train_lm_head .* set both False"):
        make_trainer(distributed="fsdp", train_lm_head=True, **RUN)
    with pytest.raises(ConfigError, match=r'optimizer = "paged_adamw_32bit" with distributed = "fsdp".*"adamw"'):
        make_trainer(distributed="fsdp", optimizer="paged_adamw_32bit", **RUN)
    with pytest.raises(ConfigError, match=r'kernels = "torch" with distributed = "fsdp".*set kernels = "auto"'):
        make_trainer(distributed="fsdp", **{**RUN, "kernels": "torch"})


def test_infuse_refuses_fsdp_with_the_way_on(tmp_path):
    from kinfuse import InfuseConfig, infuse

    page = tmp_path / "page.txt"
    page.write_text("The Zephyr router has four antennas.\n")
    raw = {"model": "default", "out_dir": str(tmp_path / "out"), "corpus": {"paths": [str(page)]},
           "train": {"distributed": "fsdp"}}
    # Refused by the config's own validation (so `kinfuse sagemaker-job` refuses it before a launch)
    with pytest.raises(ConfigError, match=r"kinfuse infuse builds the training mix .* rank 0 alone.*"
                                          r'QLoRATrainer\(model, TrainConfig\(distributed="fsdp"\)\)'):
        InfuseConfig.from_dict(raw)
    # ... and by infuse() for a config changed after validation
    config = InfuseConfig.from_dict({**raw, "train": {}})
    config.train.distributed = "fsdp"
    with pytest.raises(ConfigError, match=r"kinfuse infuse builds the training mix .* rank 0 alone.*"
                                          r'QLoRATrainer\(model, TrainConfig\(distributed="fsdp"\)\)'):
        infuse(config)
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL): FSDP-QLoRA on GPUs")
def test_two_gpus_fsdp_qlora_equals_one_with_grad_accum_2(make_trainer, blocks, tiny_model, sample_text, tmp_path):
    # bf16 compute on the GPUs (NF4 stored as bf16): the comparison is at bf16 precision.
    gpu = dict(device="cuda", compute_dtype="bfloat16")
    child = _launch(tmp_path, tiny_model, sample_text, tmp_path / "two", **gpu)
    one = _single(make_trainer, blocks, tmp_path / "one", **gpu)
    _finish(child)
    two = tr.results(tmp_path / "two")[0]
    assert two["held"]["sharded"] and two["held"]["dtype"] == "torch.bfloat16"
    assert [h["loss"] for h in two["history"]] == pytest.approx([h["loss"] for h in one.history], rel=2e-2)
