"""kinfuse.generate: batched answers are the answers each prompt gets alone (`kinfuse ask`)."""

import pytest

from kinfuse import load_run
from kinfuse import generate
from kinfuse.generate import TextGenerator, padded_length, rows

# Questions of many token lengths, some sharing one, and plain completions.
QUESTIONS = ["Which port?", "Which port does Quillstore listen on?", "How often does the compactor run?",
             "What is Quillstore written in?", "Which port does Quillstore listen on by default?",
             "Where does Quillstore keep each value, and in what size of page?", "Is it fast?",
             "How often does the compactor of Quillstore run, and what does it do to the pages?"]
COMPLETIONS = ["Quillstore stores every value in", "The compactor runs every", "Quillstore listens on port",
               "Quillstore is"]


def test_batches_group_prompts_of_one_padded_length_up_to_the_batch_size(tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(generate, "PAD_MULTIPLE", 16)
    gen = TextGenerator(object(), tiny_tokenizer, batch_size=2)
    assert [padded_length(n) for n in (0, 1, 15, 16, 17, 31, 32)] == [16, 16, 16, 32, 32, 32, 48]
    seqs = [[1] * 3, [2] * 20, [3] * 15, [4] * 16, [5] * 40, [6] * 31]
    got = gen.batches(seqs)
    assert [[i for i, _ in b] for b in got] == [[4], [1, 3], [5], [0, 2]]
    assert sorted(i for b in got for i, _ in b) == list(range(len(seqs)))
    assert rows([[1, 2]]) == [[1, 2], [1, 2]] and rows([[1], [2]]) == [[1], [2]]


def test_a_prompt_is_padded_the_same_alone_and_in_a_batch(tiny_tokenizer, monkeypatch):
    """Left pads to the prompt's padded length, never to the batch's longest prompt; a lone
    prompt is two rows; every row has at least one pad, masked."""
    import torch

    monkeypatch.setattr(generate, "PAD_MULTIPLE", 16)
    gen = TextGenerator(object(), tiny_tokenizer)
    pad = tiny_tokenizer.pad_token_id
    ids, mask = gen.padded([[7] * 5], torch.device("cpu"))
    assert ids.tolist() == [[pad] * 11 + [7] * 5] * 2 and mask.tolist() == [[0] * 11 + [1] * 5] * 2
    ids, mask = gen.padded([[7] * 5, [8] * 15], torch.device("cpu"))
    assert ids.tolist() == [[pad] * 11 + [7] * 5, [pad] + [8] * 15]
    assert mask.tolist() == [[0] * 11 + [1] * 5, [0] + [1] * 15]


@pytest.mark.parametrize("adapter", [False, True])
def test_batched_answers_are_the_answers_asked_alone(tiny_run, adapter):
    """Every probe in one evaluation call (up to 32 decoded together) answers as it does alone:
    each prompt is padded to its own padded length, never to its batch's longest, so a row
    attends over the same keys in any batch; finished rows in a batch do not change the others."""
    run_dir, _, _ = tiny_run
    run = load_run(run_dir)
    # each question also thrice over: pads of dozens of tokens in a padded batch, where the
    # batching before this test's fix answered 16 of these 20 as alone (base; 18 adapted)
    probes = [{"question": q * k} for q in QUESTIONS for k in (1, 3)] + [{"prompt": p} for p in COMPLETIONS]
    evaluator = run.evaluator(max_new_tokens=24)
    assert len({len(evaluator.encode(p)[1]) for p in probes}) > 5  # really of many lengths
    batched = evaluator.generate(probes, adapter=adapter)
    alone = [evaluator.generate([p], adapter=adapter)[0] for p in probes]
    assert batched == alone
    assert [a for a, _ in batched[:4]] == [run.ask(p["question"], adapter=adapter, max_new_tokens=24)
                                           for p in probes[:4]]
