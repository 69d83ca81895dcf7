"""How training fails without leaving anything that looks good: weights that overflow (a huge
learning rate), a disk that fills while checkpointing or saving the adapter, a damaged
checkpoint meta.json; each a TrainingError naming the step or path and the fix."""

from __future__ import annotations

import errno
import json
import re
import subprocess
from pathlib import Path

import pytest

from kinfuse import TrainingError


@pytest.mark.parametrize("lr", [float("inf"), 1e300])
def test_weights_that_overflow_stop_training_naming_the_step_and_learning_rate(make_trainer, blocks, lr):
    # The loss of step 1 is finite; the update it makes overflows the weights (inf/NaN), or the
    # rate does not fit the optimizer's float32. With one step nothing would look at the loss
    # again, so the adapter would be saved as if it were good. The config is changed after its
    # validation (which may refuse such a rate itself): this is the loop's own guard.
    trainer = make_trainer(max_steps=1, quantize="none")
    trainer.config.learning_rate = lr
    rate = re.escape(str(lr))
    with pytest.raises(TrainingError, match=rf"(?s)learning_rate {rate} is too large.*step 1\b.*lower it|"
                                            rf"step 1\b.*learning_rate {rate} is too large; lower it"):
        trainer.train(blocks)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A folder on a real 1 MiB tmpfs (needs mount rights); without them, safetensors' save_file
    writes half a file and raises ENOSPC for more than 256 KiB of tensors there, as a full disk
    makes it (state.pt is written by Python, through the same failing write)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                 capture_output=True).returncode == 0
    except OSError:  # no mount command
        mounted = False
    if not mounted:
        import peft.peft_model

        real = peft.peft_model.safe_save_file

        def full(tensors, path, *args, **kwargs):
            if str(path).startswith(str(mnt)) and sum(t.numel() * t.element_size() for t in tensors.values()) > 2**18:
                Path(path).write_bytes(b"\0" * 100)
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real(tensors, path, *args, **kwargs)

        monkeypatch.setattr(peft.peft_model, "safe_save_file", full)
    yield mnt
    if mounted:
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)


def test_full_disk_while_checkpointing_names_the_checkpoint_and_leaves_nothing_partial(make_trainer, blocks,
                                                                                       small_disk):
    trainer = make_trainer(max_steps=2, quantize="none", output_dir=str(small_disk), save_every=1,
                           lora_r=64, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"])
    with pytest.raises(TrainingError, match=r"(?s)could not write checkpoint .*step-0000001 at step 1: the disk "
                                            r"is full; free some space.*nothing partial was left") as caught:
        trainer.train(blocks)
    assert str(small_disk) in str(caught.value)
    assert not [p for p in (small_disk / "checkpoints").iterdir()]  # no step folder, no staging folder


def test_full_disk_while_saving_the_adapter_keeps_the_old_one(make_trainer, blocks, tmp_path, small_disk):
    trainer = make_trainer(max_steps=1, quantize="none", lora_r=256)  # over 1 MiB of LoRA weights
    trainer.train(blocks)
    # an adapter saved before (a smaller one, so it fits), then a save that fills the disk
    small = make_trainer(max_steps=1, quantize="none", lora_r=1, target_modules=["q_proj"])
    small.save_adapter(small_disk / "adapter")
    before = {p.name: p.read_bytes() for p in (small_disk / "adapter").iterdir()}
    with pytest.raises(TrainingError, match=r"could not save the adapter to .*adapter: the disk is full"):
        trainer.save_adapter(small_disk / "adapter")
    assert {p.name: p.read_bytes() for p in (small_disk / "adapter").iterdir()} == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["adapter"]  # no staging folder left


@pytest.mark.parametrize("text", ["", '{"model": "x", "ste', "[1, 2]"])
def test_damaged_checkpoint_meta_names_the_file_and_the_way_on(make_trainer, blocks, tmp_path, text):
    make_trainer(max_steps=1, quantize="none", output_dir=str(tmp_path), save_every=1).train(blocks)
    ckpt = tmp_path / "checkpoints" / "step-0000001"
    (ckpt / "meta.json").write_text(text)
    trainer = make_trainer(max_steps=1, quantize="none", output_dir=str(tmp_path), resume=True)
    with pytest.raises(TrainingError, match=rf"(?s)checkpoint {ckpt} is damaged: {ckpt / 'meta.json'} does not "
                                            rf"read.*delete {ckpt} to resume from the checkpoint before it"):
        trainer.train(blocks)


def test_resume_keeps_the_log_up_to_the_checkpoint_and_drops_the_steps_after_it(make_trainer, blocks, tmp_path):
    log = tmp_path / "log.jsonl"
    make_trainer(max_steps=4, quantize="none", output_dir=str(tmp_path), save_every=2).train(blocks, log_path=log)
    first = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in first] == [1, 2, 3, 4]
    with log.open("a") as f:
        f.write('{"step": 5, "lo')  # the half line of a process killed mid-write
    ckpt = tmp_path / "checkpoints" / "step-0000002"
    make_trainer(max_steps=4, quantize="none", output_dir=str(tmp_path), resume_from=str(ckpt)).train(
        blocks, log_path=log)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[:2] == first[:2]
    # a fresh run (no resume) starts its own log
    make_trainer(max_steps=1, quantize="none").train(blocks, log_path=log)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1]
