"""kinfuse.train.checkpoint: a resumed run is bitwise the uninterrupted one; a checkpoint of
another run, a corrupt one, or one that would run code when unpickled is refused."""

import os

import pytest
import torch

from kinfuse import TrainingError


def _adapter_bytes(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_" in k or "modules_to_save" in k}


@pytest.mark.parametrize("full", [False, True], ids=["lora", "lora+tied-embeddings"])
def test_resume_is_bitwise_identical_on_cpu(make_trainer, tiny_model, tied_model, blocks, tmp_path, full):
    base = dict(max_steps=6, micro_batch_size=2, quantize="none", lora_dropout=0.1,
                learning_rate=5e-3, warmup_steps=2)
    if full:  # the embedding copy and its own optimizer group must resume exactly too
        tiny_model = tied_model
        base.update(train_embeddings=True, train_lm_head=True, embedding_learning_rate=1e-3)
    straight = make_trainer(tiny_model, output_dir=str(tmp_path / "a"), save_every=3, **base)
    full = straight.train(blocks)
    assert (tmp_path / "a/checkpoints/step-0000003/meta.json").is_file() and full.steps == 6

    # A run "interrupted" at step 3 continues from that checkpoint in a fresh process state.
    torch.manual_seed(1234)  # resume must restore RNG state, not depend on it
    resumed = make_trainer(tiny_model, output_dir=str(tmp_path / "b"),
                           resume_from=str(tmp_path / "a/checkpoints/step-0000003"), **base)
    result = resumed.train(blocks)
    assert result.steps == 6 and [r["step"] for r in result.history] == list(range(1, 7))
    a, b = _adapter_bytes(straight), _adapter_bytes(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_mismatched_or_corrupt_checkpoint(make_trainer, blocks, tmp_path):
    cfg = dict(max_steps=2, quantize="none", output_dir=str(tmp_path), save_every=2)
    make_trainer(**cfg).train(blocks)
    ckpt = tmp_path / "checkpoints/step-0000002"
    other = make_trainer(**cfg, lora_r=8, resume_from=str(ckpt))
    with pytest.raises(TrainingError, match=r"(?s)does not match.*'r': 16"):
        other.train(blocks)
    (ckpt / "state.pt").write_bytes(b"not a checkpoint")
    again = make_trainer(**cfg, resume_from=str(ckpt))
    with pytest.raises(TrainingError, match="corrupt"):
        again.train(blocks)
    with pytest.raises(TrainingError, match="not a kinfuse checkpoint"):
        make_trainer(**cfg, resume_from=str(tmp_path)).train(blocks)


class _RunsCode:
    """A pickled object whose loading runs code: what an untrusted state.pt could hold."""
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_resume_never_unpickles_code(make_trainer, blocks, tmp_path, monkeypatch):
    cfg = dict(max_steps=2, quantize="none", output_dir=str(tmp_path), save_every=2)
    make_trainer(**cfg).train(blocks)
    ckpt = tmp_path / "checkpoints/step-0000002"
    torch.save({"optimizer": _RunsCode()}, ckpt / "state.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingError, match="corrupt"):
        make_trainer(**cfg, resume_from=str(ckpt)).train(blocks)
    assert not (tmp_path / "pwned").exists()
