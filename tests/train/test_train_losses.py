"""kinfuse.train.losses: the KL of anchor blocks is the KL to the adapter-off model, and anchor
blocks train on it instead of cross-entropy."""

import pytest
import torch

from kinfuse.train.blocks import BlockTensors


def test_kl_sum_is_kl_to_the_adapter_off_model(make_trainer, blocks):
    import torch.nn.functional as F

    trainer = make_trainer(exact=True, fast=True)
    data = BlockTensors(blocks.select(range(2)))
    ids, labels, pos = (t.to(trainer.device) for t in (data.ids, data.labels, data.pos))
    trainer.model.train()
    assert trainer.kl_sum(ids, labels, pos).item() == pytest.approx(0.0, abs=1e-6)  # LoRA B starts at zero
    with torch.no_grad():
        for n, p in trainer.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    kl = trainer.kl_sum(ids, labels, pos)
    # the same number from full logits of the two models
    keep = labels[:, 1:] != -100
    with torch.no_grad():
        adapted = trainer.model(input_ids=ids, position_ids=pos).logits[:, :-1][keep].float()
        with trainer.model.disable_adapter():
            base = trainer.model(input_ids=ids, position_ids=pos).logits[:, :-1][keep].float()
    want = (F.softmax(base, -1) * (F.log_softmax(base, -1) - F.log_softmax(adapted, -1))).sum()
    assert kl.item() > 1e-3 and kl.item() == pytest.approx(want.item(), rel=1e-4)
    kl.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in trainer.model.named_parameters()
               if p.requires_grad and "lora_B" in n)


def test_anchor_blocks_train_on_kl_not_cross_entropy(make_trainer, blocks):
    two = blocks.select(range(2))
    marked = two.add_column("anchor", [False, True])
    targets = [int((torch.tensor(r)[1:] != -100).sum()) for r in two["labels"]]  # per block
    # No clipping: Adam's update is then blind to the loss scale, so runs normalised by
    # different target counts follow the same path.
    cfg = dict(max_steps=5, micro_batch_size=2, max_grad_norm=None)

    def run(data, **kw):
        return make_trainer(exact=True, fast=True, **cfg, **kw).train(data).history

    first_only, anchored, zero = run(two.select([0])), run(marked), run(marked, anchor_kl_weight=0.0)
    assert "anchor_kl" not in first_only[0]
    kls = [r["anchor_kl"] for r in anchored]
    assert kls[0] == pytest.approx(0.0, abs=1e-7) and kls[-1] > 1e-4  # the adapter moves off the base
    # the plain block's cross-entropy, over both blocks' targets; the anchor block adds no CE
    scale = sum(targets) / targets[0]
    assert [r["loss"] * scale for r in zero] == pytest.approx([r["loss"] for r in first_only], rel=1e-4)
    assert anchored[0]["loss"] * scale == pytest.approx(first_only[0]["loss"], rel=1e-4)  # KL is 0 at step 1
    # "ce" is the text part of a mixed step: the plain block's own cross-entropy per target
    assert [r["ce"] for r in zero] == pytest.approx([r["loss"] for r in first_only], rel=1e-4)
    # with weight 1 the KL counts (and pulls the adapter back towards the base)
    assert abs(anchored[-1]["loss"] * scale - first_only[-1]["loss"]) > 1e-3
