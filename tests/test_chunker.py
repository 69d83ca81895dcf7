import pytest

from kinfuse import Chunker, Corpus, KinfuseError
from kinfuse.chunker import IGNORE


def test_blocks_keep_every_token_and_document_boundaries(tiny_tokenizer, sample_text):
    docs = [line for line in sample_text.splitlines()] * 3 + [""]
    chunker = Chunker(tiny_tokenizer, block_size=48)
    blocks = chunker([{"text": d} for d in docs])
    stats = chunker.stats
    expected = sum(len(tiny_tokenizer(d)["input_ids"]) + 1 for d in docs if d)  # + EOS each
    assert stats.skipped_empty == 1
    assert stats.tokens_in == expected == stats.tokens_packed == sum(blocks["num_tokens"])
    assert stats.blocks == len(blocks) and all(len(b) == 48 for b in blocks["input_ids"])
    eos = tiny_tokenizer.eos_token_id
    for ids, pos, lengths in zip(blocks["input_ids"], blocks["position_ids"], blocks["doc_lengths"]):
        assert sum(lengths) == 48
        start = 0
        for n in lengths:  # positions restart at 0 in every segment
            assert pos[start : start + n] == list(range(n))
            start += n
    assert sum(ids.count(eos) for ids in blocks["input_ids"]) >= len([d for d in docs if d])


def test_long_document_split_and_padding_masked(tiny_tokenizer, sample_text):
    chunker = Chunker(tiny_tokenizer, block_size=32)
    blocks = chunker([{"text": sample_text}])
    n = len(tiny_tokenizer(sample_text)["input_ids"]) + 1
    assert chunker.stats.split_documents == 1
    assert chunker.stats.tokens_packed == n
    assert chunker.stats.padding == len(blocks) * 32 - n
    last = blocks[-1]
    pad = 32 - last["num_tokens"]
    assert pad > 0 and last["labels"][-pad:] == [IGNORE] * pad


def test_chat_rows_train_on_answer_only(tiny_tokenizer):
    chunker = Chunker(tiny_tokenizer, block_size=128)
    blocks = chunker([{"question": "What is the capital of France?", "answer": "Paris is the capital."}])
    ids, labels = blocks[0]["input_ids"], blocks[0]["labels"]
    targets = [t for t, lab in zip(ids, labels) if lab != IGNORE]
    text = tiny_tokenizer.decode(targets)
    assert text.startswith("Paris is the capital.") and "<|im_end|>" in text
    assert "France" not in text  # the question is context, not a target


def test_corpus_input_and_default_block_size(tiny_tokenizer):
    corpus = Corpus.from_texts(["Bread is made from flour.", "The moon orbits the earth."])
    chunker = Chunker(tiny_tokenizer)
    assert chunker.block_size == min(2048, tiny_tokenizer.model_max_length)
    blocks = chunker(corpus)
    assert chunker.stats.documents == 2 and len(blocks) == 1


def test_bad_input(tiny_tokenizer):
    with pytest.raises(KinfuseError, match="nothing to train on"):
        Chunker(tiny_tokenizer, block_size=16)([{"text": "   "}])
    with pytest.raises(KinfuseError, match="none of the columns"):
        Chunker(tiny_tokenizer, block_size=16)([{"body": "x"}])


def test_packed_loss_equals_separate_documents(tiny_model, tiny_tokenizer):
    """Document boundaries hold: the packed block's summed loss equals each document's own."""
    import torch

    from kinfuse import QLoRATrainer, TrainConfig

    docs = ["The Zephyr router has four antennas.", "Bread is made from flour, water and salt.",
            "The moon orbits the earth every month."]
    trainer = QLoRATrainer(tiny_model, TrainConfig(quantize="none", compute_dtype="float32", progress=False))
    trainer.model.eval()

    def loss_of(blocks):
        t = {k: torch.tensor(blocks[k], device=trainer.device) for k in ("input_ids", "labels", "position_ids")}
        with torch.no_grad():
            return trainer.loss_sum(t["input_ids"], t["labels"], t["position_ids"]).item()

    packed = Chunker(tiny_tokenizer, block_size=64)([{"text": d} for d in docs])
    assert len(packed) == 1 and len(packed[0]["doc_lengths"]) == 4  # three documents and padding
    separate = sum(loss_of(Chunker(tiny_tokenizer, block_size=64)([{"text": d}])) for d in docs)
    assert abs(loss_of(packed) - separate) / separate < 1e-4
