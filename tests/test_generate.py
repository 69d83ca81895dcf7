"""kinfuse.generate: batched answers are the answers each prompt gets alone (`kinfuse ask`)."""

import pytest

from kinfuse import load_run
from kinfuse.generate import TextGenerator, rows

# Questions of many token lengths, some sharing one, and plain completions.
QUESTIONS = ["Which port?", "Which port does Quillstore listen on?", "How often does the compactor run?",
             "What is Quillstore written in?", "Which port does Quillstore listen on by default?",
             "Where does Quillstore keep each value, and in what size of page?", "Is it fast?",
             "How often does the compactor of Quillstore run, and what does it do to the pages?"]
COMPLETIONS = ["Quillstore stores every value in", "The compactor runs every", "Quillstore listens on port",
               "Quillstore is"]


def test_batches_group_prompts_of_one_length_up_to_the_batch_size(tiny_tokenizer):
    gen = TextGenerator(object(), tiny_tokenizer, batch_size=2)
    seqs = [[1, 2], [3], [4, 5], [6, 7], [8], [9, 10, 11]]
    got = gen.batches(seqs)
    assert got == [[(5, [9, 10, 11])], [(0, [1, 2]), (2, [4, 5])], [(3, [6, 7])], [(1, [3]), (4, [8])]]
    assert sorted(i for b in got for i, _ in b) == list(range(len(seqs)))
    assert rows([[1, 2]]) == [[1, 2], [1, 2]] and rows([[1], [2]]) == [[1], [2]]


@pytest.mark.parametrize("adapter", [False, True])
def test_batched_answers_are_the_answers_asked_alone(tiny_run, adapter):
    """Every probe in one evaluation call (up to 32 decoded together) answers as it does alone:
    prompts of different lengths are not padded into one batch, so no row attends over pads
    or shifts its sums; finished rows in a batch do not change the others."""
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
