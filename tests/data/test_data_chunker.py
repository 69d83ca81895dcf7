import pytest

from kinfuse import Chunker, Corpus, KinfuseError
from kinfuse.data.chunker import IGNORE


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


# -- tokenizer variants ----------------------------------------------------------------------


def _variant(tiny_tokenizer, template: str | None = None, **specials):
    """A copy of the tiny tokenizer whose post-processor adds `template`'s special tokens."""
    import copy

    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(tiny_tokenizer.backend_tokenizer)
    if template:
        backend.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[("<|im_start|>", tiny_tokenizer.bos_token_id),
                                             ("<|im_end|>", tiny_tokenizer.eos_token_id)])
    kw = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<pad>", **specials}
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **{k: v for k, v in kw.items() if v is not None})
    tok.chat_template = tiny_tokenizer.chat_template
    return tok


def _segments(block):
    """The real (non-padding) segments of a block as (ids, labels) lists."""
    out, start = [], 0
    for n in block["doc_lengths"]:
        if start < block["num_tokens"]:
            out.append((block["input_ids"][start : start + n], block["labels"][start : start + n]))
        start += n
    return out


def test_bos_as_the_tokenizer_adds_it_never_doubled(tiny_tokenizer):
    bos, eos = tiny_tokenizer.bos_token_id, tiny_tokenizer.eos_token_id
    docs = ["Bread is made from flour.", "<|im_start|>The moon orbits the earth.", "Paris is the capital.<|im_end|>"]
    # A tokenizer that adds no BOS (SmolLM2, GPT-2): none is added, EOS ends every document once.
    plain = Chunker(tiny_tokenizer, block_size=128)
    assert plain.bos_prefix is None
    segs = [s for b in plain([{"text": d} for d in docs]) for s in _segments(b)]
    assert sorted(ids[0] == bos for ids, _ in segs) == [False, False, True]  # only the text that wrote one
    assert all(ids[-1] == eos and ids.count(eos) == 1 for ids, _ in segs)
    assert plain.stats.eos_added == 2 and plain.stats.duplicate_bos_removed == 0  # the third ends with EOS
    # A tokenizer that adds BOS (Llama): one BOS per document, also where the text began with one.
    with_bos = Chunker(_variant(tiny_tokenizer, "<|im_start|> $A"), block_size=128)
    assert with_bos.bos_prefix == bos
    segs = [s for b in with_bos([{"text": d} for d in docs]) for s in _segments(b)]
    assert len(segs) == 3 and all(ids[0] == bos and ids[1] != bos and ids.count(eos) == 1 for ids, _ in segs)
    assert with_bos.stats.duplicate_bos_removed == 1 and with_bos.stats.eos_added == 2
    assert with_bos.stats.tokens_in == with_bos.stats.tokens_packed == sum(len(i) for i, _ in segs)
    # A tokenizer that appends EOS itself: no second EOS.
    with_eos = Chunker(_variant(tiny_tokenizer, "$A <|im_end|>"), block_size=128)
    segs = [s for b in with_eos([{"text": d} for d in docs[:2]]) for s in _segments(b)]
    assert with_eos.stats.eos_added == 0 and all(ids.count(eos) == 1 and ids[-1] == eos for ids, _ in segs)


def test_tokenizer_without_eos_or_pad(tiny_tokenizer):
    with pytest.raises(KinfuseError, match=r"no EOS token.*tokenizer.eos_token ="):
        Chunker(_variant(tiny_tokenizer, eos_token=None))
    tok = _variant(tiny_tokenizer, pad_token=None)
    assert tok.pad_token_id is None
    chunker = Chunker(tok, block_size=40)
    blocks = chunker([{"text": "Bread is made from flour."}])
    assert tok.pad_token_id is None  # the chunker falls back to EOS without changing the tokenizer
    block = blocks[0]
    real, n = block["num_tokens"], 40
    assert 0 < real < n and block["input_ids"][real:] == [tok.eos_token_id] * (n - real)
    assert block["labels"][real:] == [IGNORE] * (n - real)
    assert block["position_ids"][real:] == list(range(n - real)) and block["doc_lengths"] == [real, n - real]


def test_settings_are_checked_all_at_once(tiny_tokenizer):
    with pytest.raises(KinfuseError) as e:
        Chunker(tiny_tokenizer, block_size=16, stride=16, num_proc=0, batch_size=0)
    assert all(s in str(e.value) for s in ("stride=16", "num_proc=0", "batch_size=0"))


# -- stride ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [0, 5])
def test_stride_overlap_is_context_only(tiny_tokenizer, sample_text, stride):
    n = 32
    chunker = Chunker(tiny_tokenizer, block_size=n, stride=stride)
    blocks = chunker([{"text": sample_text}])
    ids = tiny_tokenizer(sample_text)["input_ids"] + [tiny_tokenizer.eos_token_id]
    st = chunker.stats
    pieces = 1 + -(-(len(ids) - n) // (n - stride))
    assert st.blocks == len(blocks) == pieces and st.split_documents == 1
    assert st.overlap_tokens == stride * (pieces - 1)
    assert st.tokens_in == len(ids) and st.tokens_packed == st.tokens_in + st.overlap_tokens
    # Full pieces come first in document order, the shorter last piece after them.
    rebuilt = list(blocks[0]["input_ids"])
    for b in range(1, pieces):
        block = blocks[b]
        piece = block["input_ids"][: block["num_tokens"]]
        assert piece[:stride] == rebuilt[len(rebuilt) - stride :]  # the overlap repeats the piece before
        assert set(block["labels"][: max(stride, 1)]) == {IGNORE}  # ... and is never a target
        rebuilt += piece[stride:]
    assert rebuilt == ids
    targets = [t for b in blocks for t in b["labels"] if t != IGNORE]
    if stride:  # every token but the document's first is trained exactly once
        assert targets == ids[1:] and st.target_tokens == len(ids) - 1
    else:  # each piece's first token has no context in its block
        assert len(targets) == len(ids) - pieces == st.target_tokens


def test_packing_invariants_random(tiny_tokenizer, sample_text):
    """Random documents, block sizes and strides: every token is accounted for."""
    import random
    from collections import Counter

    rng = random.Random(0)
    words = sample_text.split()
    for _ in range(6):
        n = rng.choice([16, 24, 64])
        stride = rng.choice([0, 1, n // 4])
        docs = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 90))) for _ in range(rng.randint(1, 30))]
        chunker = Chunker(tiny_tokenizer, block_size=n, stride=stride)
        blocks = chunker([{"text": d} for d in docs])
        st = chunker.stats
        encoded = [tiny_tokenizer(d)["input_ids"] + [tiny_tokenizer.eos_token_id] for d in docs]
        assert st.tokens_in == sum(map(len, encoded))
        assert st.tokens_packed == st.tokens_in + st.overlap_tokens == sum(blocks["num_tokens"])
        assert st.padding == len(blocks) * n - st.tokens_packed
        real = Counter(t for b in blocks for t in b["input_ids"][: b["num_tokens"]])
        assert sum(real.values()) == st.tokens_packed and set(real) <= set(t for e in encoded for t in e)
        assert st.target_tokens == sum(t != IGNORE for b in blocks for t in b["labels"])
        for b in blocks:
            assert sum(b["doc_lengths"]) == n and all(x > 0 for x in b["doc_lengths"])
            start = 0
            for length in b["doc_lengths"]:
                assert b["position_ids"][start : start + length] == list(range(length))
                assert b["labels"][start] == IGNORE  # a segment's first token is never a target
                start += length


# -- chat rows, inputs, determinism, save/load ---------------------------------------------------


def test_multi_turn_chat_batched_matches_template(tiny_tokenizer):
    messages = [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "An apple."},
                {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "A pear."}]
    chunker = Chunker(tiny_tokenizer, block_size=128)
    ids, labels = chunker.encode([{"messages": messages}, {"text": "Bread is made from flour."}])[1]
    rendered = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert tiny_tokenizer.decode(ids) == rendered
    targets = tiny_tokenizer.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])
    assert targets == "An apple.<|im_end|>\nA pear.<|im_end|>\n"
    with pytest.raises(KinfuseError, match="without an assistant answer"):
        chunker([{"messages": [{"role": "user", "content": "Hi"}]}])


def test_dataset_input_and_deterministic(tiny_tokenizer, sample_text):
    import datasets

    rows = [{"text": line} for line in sample_text.splitlines()] * 4
    a = Chunker(tiny_tokenizer, block_size=40, stride=4)(datasets.Dataset.from_list(rows))
    b = Chunker(tiny_tokenizer, block_size=40, stride=4)(rows)
    assert a.to_dict() == b.to_dict()  # no randomness: the same input gives the same blocks


def test_num_proc_gives_the_same_blocks(tiny_tokenizer, sample_text, monkeypatch):
    from kinfuse.data import chunker as chunker_mod

    rows = [{"text": f"{i}: {line}"} for i, line in enumerate(sample_text.splitlines() * 20)]
    simple = Chunker(tiny_tokenizer, block_size=64)
    expected = simple(rows)
    monkeypatch.setattr(chunker_mod, "PARALLEL_MIN_DOCS", 10)
    monkeypatch.setattr(chunker_mod, "PARALLEL_MIN_CHARS", 100)
    parallel = Chunker(tiny_tokenizer, block_size=64, num_proc=2, batch_size=16)
    assert parallel._uses_processes([r["text"] for r in rows])
    assert parallel(rows).to_dict() == expected.to_dict()
    assert parallel.stats == simple.stats


def test_save_and_load(tiny_tokenizer, sample_text, tmp_path):
    chunker = Chunker(tiny_tokenizer, block_size=48, stride=8)
    blocks = chunker([{"text": sample_text}, {"question": "What is bread made from?", "answer": "Flour."}])
    path = chunker.save(blocks, tmp_path / "chunks")
    loaded, stats = Chunker.load(path, tokenizer=tiny_tokenizer)
    assert loaded.to_dict() == blocks.to_dict() and stats == chunker.stats
    chunker.save(blocks, path)  # saving again replaces the folder
    assert Chunker.load(path)[1] == chunker.stats
    with pytest.raises(KinfuseError, match="another tokenizer"):
        Chunker.load(path, tokenizer=_variant(tiny_tokenizer, "<|im_start|> $A"))
    with pytest.raises(KinfuseError, match="not a kinfuse chunk folder"):
        Chunker.load(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(KinfuseError, match="not a kinfuse chunk folder; choose another path"):
        chunker.save(blocks, tmp_path / "other")
    with pytest.raises(KinfuseError, match="save right after chunking"):
        chunker.save(blocks.select(range(1)), tmp_path / "x")


def test_chunk_stats_add_every_count():
    from kinfuse import ChunkStats

    a, b = ChunkStats(documents=2, tokens_packed=90, padding=10, blocks=1), ChunkStats(documents=1, tokens_packed=30,
                                                                                      padding=70, blocks=1)
    total = a + b
    assert (total.documents, total.tokens_packed, total.padding, total.blocks) == (3, 120, 80, 2)
    assert total.padding_fraction == 0.4 and a.documents == 2  # the parts are left as they were
