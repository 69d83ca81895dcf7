import json
import math
import sys
import types

import pytest
import torch

from kinfuse import Chunker, Evaluator, KinfuseError, QLoRATrainer, TrainConfig, answer_matches
from kinfuse.data.answers import answer_aliases, chat_format_problem, normalize, parse_qa_pairs
from kinfuse.data.mix import read_rows
from kinfuse.data.probes import load_probes
from kinfuse.eval import generate_probes

QUESTION = "How many antennas does the Zephyr router have?"
ANSWER = "The Zephyr router has four antennas."


def _trainer(tiny_model, steps=0):
    # fp32: the checks below compare batched (padded) passes with single ones to 1e-4
    return QLoRATrainer(tiny_model, TrainConfig(max_steps=max(steps, 1), learning_rate=1e-2, lr_schedule="constant",
                                                lora_dropout=0.0, quantize="none", compute_dtype="float32",
                                                progress=False))


@pytest.fixture(scope="module")
def trained(tiny_model, tiny_tokenizer):
    """A tiny model whose adapter learned one chat answer (trained once for the module)."""
    blocks = Chunker(tiny_tokenizer, block_size=64)([{"question": QUESTION, "answer": ANSWER}] * 4)
    trainer = _trainer(tiny_model, 40)
    trainer.train(blocks)
    return trainer


def test_answer_matching_normalises():
    assert normalize("It has 3,200 Gbps!") == "it has 3200 gbps"
    assert answer_matches("Bandwidth: 3,200 Gbps.", ["3200 Gbps"])
    assert answer_matches("It is PARIS.", ["paris"])
    assert not answer_matches("It has 80 GB", ["8"])  # whole words only
    assert answer_matches("version 2.5 ships", ["2.5"])


def test_compare_base_vs_adapted_in_one_model(trained):
    evaluator = Evaluator(trained, max_new_tokens=12, batch_size=2)
    probes = [
        {"question": QUESTION, "answers": ["four"]},
        {"prompt": "The Zephyr router", "answers": ["purple"]},
    ]
    result = evaluator.compare(probes)
    first = result.results[0]
    assert first.kind == "chat" and result.results[1].kind == "completion"
    assert first.adapted_correct and not first.base_correct  # random base weights cannot know it
    assert first.adapted_ended  # learned to end its turn
    assert first.adapted_format_ok and result.results[1].adapted_format_ok is None  # format: chat probes only
    assert first.base_loglik_correct is None  # no distractors, no log-likelihood score
    assert result.accuracy("adapted", "chat") == 1.0 and result.base_accuracy == 0.0
    assert result.chat_behaviour()["adapted_ok_rate"] == 1.0
    behaviour = evaluator.chat_behaviour([QUESTION])  # on given questions (default: the shipped general prompts)
    assert behaviour["ended_rate"] == behaviour["ok_rate"] == 1.0 and behaviour["problems"] == [None]
    assert "adapted answer" in result.table()
    # perplexity on the trained text drops; the base (adapter off) is unchanged by training
    text = [ANSWER]
    assert evaluator.perplexity(text) < evaluator.perplexity(text, adapter=False)


def _direct_mean_logprob(model, context_ids, continuation_ids):
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    n = len(context_ids)
    return sum(lp[n - 1 + i, t].item() for i, t in enumerate(continuation_ids)) / len(continuation_ids)


def test_loglik_scores_answers_against_distractors(trained, tiny_tokenizer):
    evaluator = Evaluator(trained, batch_size=3)
    probes = [
        {"question": QUESTION, "answers": [ANSWER], "distractors": ["The Zephyr router has nine antennas.",
                                                                   "Paris is the capital of France."]},
        {"prompt": "The Zephyr router has", "answers": ["four antennas"], "distractors": ["nine nodes"]},
        {"question": "What is the capital of France?", "answers": ["Paris"]},  # no distractors: not scored
    ]
    adapted = evaluator.loglik(probes)
    base = evaluator.loglik(probes, adapter=False)
    assert adapted[2] is None and base[2] is None
    assert adapted[0].correct and adapted[0].margin > 1.0  # the trained answer is far likelier
    assert adapted[0].answers[0] > base[0].answers[0]
    assert evaluator.loglik(probes) == adapted  # deterministic
    # The batched, padded scores equal a direct computation, one unpadded sequence at a time.
    model = trained.model
    model.eval()
    chat_ctx = tiny_tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}],
                                                  add_generation_prompt=True, tokenize=False)
    ctx = tiny_tokenizer(chat_ctx, add_special_tokens=False)["input_ids"]
    whole = tiny_tokenizer(chat_ctx + ANSWER, add_special_tokens=False)["input_ids"]
    assert whole[: len(ctx)] == ctx
    assert adapted[0].answers[0] == pytest.approx(_direct_mean_logprob(model, ctx, whole[len(ctx):]), abs=1e-4)
    ctx = tiny_tokenizer("The Zephyr router has")["input_ids"]
    whole = tiny_tokenizer("The Zephyr router has nine nodes")["input_ids"]
    with model.disable_adapter():
        direct = _direct_mean_logprob(model, ctx, whole[len(ctx):])
    assert base[1].distractors[0] == pytest.approx(direct, abs=1e-4)
    # compare() carries the scores and summarises them
    comparison = evaluator.compare(probes[:2])
    assert [r.adapted_loglik_correct for r in comparison.results] == [s.correct for s in adapted[:2]]
    assert comparison.results[0].adapted_loglik_margin == pytest.approx(adapted[0].margin)
    summary = comparison.summary()["loglik"]
    assert summary["n"] == 2 and summary["adapted_accuracy"] == comparison.loglik_accuracy("adapted")
    assert "log-likelihood accuracy" in comparison.table()


def test_kl_divergence_zero_before_training_and_exact_after(tiny_model, trained):
    texts = ["Paris is the capital of France.", "Bread is made from flour, water, salt and yeast. " * 3]
    untouched = Evaluator(_trainer(tiny_model))  # LoRA B starts at zero: adapted == base
    assert untouched.kl_divergence(texts) == 0.0
    assert untouched.kl_divergence(["What is the capital of France?"], chat=True) == 0.0
    evaluator = Evaluator(trained, batch_size=2)
    kl = evaluator.kl_divergence(texts, max_tokens=16)
    assert kl > 0 and evaluator.kl_divergence(["Tell me about bread."], chat=True) > 0
    # equals the definition, computed directly: mean over positions of sum_v p_base (log p_base - log p_adapted)
    model, tok = trained.model, trained.tokenizer
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tok(text)["input_ids"][:16]])
        with torch.no_grad():
            adapted = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            with model.disable_adapter():
                base = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        total += (base.exp() * (base - adapted)).sum().item()
        count += ids.shape[1]
    assert kl == pytest.approx(total / count, rel=1e-4)


def test_chat_format_check():
    assert chat_format_problem("Paris is the capital of France.") is None
    assert chat_format_problem("1. Water\n2. Light\n3. Soil") is None
    assert chat_format_problem("   ") == "empty"
    assert "role marker" in chat_format_problem("Sure.<|im_start|>user\nmore")
    assert "starts with a role" in chat_format_problem("assistant\nParis.")
    assert "starts with a role" in chat_format_problem("user\nWhat is it?")
    assert "starts with a role" in chat_format_problem("Assistant: Paris.")
    assert "new turn" in chat_format_problem("Paris.\nuser\nAnd Spain?")
    assert "new turn" in chat_format_problem("Paris.\nUser: And Spain?")
    assert "repetition" in chat_format_problem("the the the the the the end")
    assert "repetition" in chat_format_problem("hahahahahahahahahahahaha")
    assert "repetition" in chat_format_problem("I like it. " * 8)
    assert chat_format_problem("The user asked about the assistant role in a team.") is None


def test_sampling_modes(tiny_model, monkeypatch):
    trainer = _trainer(tiny_model)
    assert Evaluator(trainer).max_new_tokens == 64
    reference = Evaluator(trainer, sampling="reference")
    assert reference.max_new_tokens == 200  # the reference workflow's limit, unless given
    with pytest.raises(KinfuseError, match="sampling='beam'"):
        Evaluator(trainer, sampling="beam")
    seen = []
    real = trainer.model.generate

    def spy(**kwargs):
        seen.append({k: kwargs.get(k) for k in ("do_sample", "top_p", "temperature", "max_new_tokens")})
        return real(**kwargs)

    monkeypatch.setattr(trainer.model, "generate", spy)
    probes = [{"question": "What is the capital of France?"}]
    reference.max_new_tokens = 8
    state = torch.get_rng_state()
    first = reference.generate(probes)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    assert reference.generate(probes) == first  # seeded: reruns repeat
    Evaluator(trainer, max_new_tokens=8).generate(probes)
    assert seen[0] == {"do_sample": True, "top_p": 0.9, "temperature": 0.01, "max_new_tokens": 8}
    assert seen[-1]["do_sample"] is False and seen[-1]["top_p"] is None


def test_bad_probes(tmp_path):
    with pytest.raises(KinfuseError, match="no such probes file"):
        load_probes(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\nnot json\n{"answers": ["a"]}\n'
                   '{"question": "q", "answers": ["Paris"], "distractors": "Rome"}\n'
                   '{"question": "q", "answers": ["Paris"], "distractors": ["Rome", "paris."]}\n')
    with pytest.raises(KinfuseError) as e:
        load_probes(bad)
    msg = str(e.value)
    assert "row 1" in msg and ":2: not JSON" in msg and "row 2" in msg
    assert "row 3: 'distractors' must be a non-empty list" in msg
    assert "row 4: distractor 'paris.' is also an accepted answer" in msg


def test_lm_eval_skips_cleanly_when_not_installed(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what `import lm_eval` sees when it is absent
    out = Evaluator(_trainer(tiny_model)).lm_eval(["hellaswag"])
    assert out["tasks"] == ["hellaswag"] and "not installed" in out["skipped"] and "pip install" in out["skipped"]
    with pytest.raises(KinfuseError, match="at least one task"):
        Evaluator(_trainer(tiny_model)).lm_eval([])


def test_lm_eval_runs_base_and_adapted_through_the_harness_api(trained, monkeypatch):
    """A stand-in for the third-party harness (not installed here) with its API's shape:
    HFLM(pretrained=model) and simple_evaluate(model=lm, tasks=...) -> {"results": {task: metrics}}."""
    calls = []

    class HFLM:
        def __init__(self, pretrained, tokenizer, batch_size):
            self.model, self.tokenizer = pretrained, tokenizer

    def simple_evaluate(model, tasks, num_fewshot=None, limit=None):
        if tasks == ["offline_task"]:
            raise ConnectionError("cannot reach the dataset hub")
        ids = model.tokenizer(ANSWER, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            loss = model.model(input_ids=ids, labels=ids).loss.item()  # differs with the adapter on or off
        calls.append((tasks, limit, model.model.training))
        return {"results": {t: {"alias": t, "loss,none": loss, "acc,none": 1.0} for t in tasks}}

    pkg = types.ModuleType("lm_eval")
    pkg.simple_evaluate = simple_evaluate
    models = types.ModuleType("lm_eval.models")
    hf = types.ModuleType("lm_eval.models.huggingface")
    hf.HFLM = HFLM
    for name, mod in (("lm_eval", pkg), ("lm_eval.models", models), ("lm_eval.models.huggingface", hf)):
        monkeypatch.setitem(sys.modules, name, mod)
    evaluator = Evaluator(trained)
    out = evaluator.lm_eval("toy", limit=4)
    assert calls == [(["toy"], 4, False), (["toy"], 4, False)]  # eval mode for both runs
    assert out["adapted"]["toy"]["loss,none"] < out["base"]["toy"]["loss,none"]  # the adapter was toggled
    assert "alias" not in out["base"]["toy"]
    assert "ConnectionError" in evaluator.lm_eval("offline_task")["skipped"]


REPLY = """Here are the questions:
1. **Q1:** How many antennas does the Zephyr router have?
   **A1:** Four (4).
Q: What is the largest mesh the router supports?
A: up to nine nodes
Question 3: What colour is the casing?
Answer: purple
Q: Who makes it? A: Orbitel
Q: How many antennas does the Zephyr router have?
A: four
"""
DOC = "The new Zephyr router has four antennas and supports a mesh of up to nine nodes. Orbitel makes it."


def test_parse_qa_pairs_formats():
    pairs = parse_qa_pairs(REPLY)
    assert pairs[0] == ("How many antennas does the Zephyr router have?", "Four (4).")
    assert ("What is the largest mesh the router supports?", "up to nine nodes") in pairs
    assert ("What colour is the casing?", "purple") in pairs
    assert ("Who makes it?", "Orbitel") in pairs
    as_json = 'Sure! [{"question": "Who makes it?", "answer": "Orbitel"}, {"q": "Antennas?", "a": 4}]'
    assert parse_qa_pairs(as_json) == [("Who makes it?", "Orbitel"), ("Antennas?", "4")]
    assert parse_qa_pairs("Q: unfinished question with no answer") == []
    assert parse_qa_pairs("A mesh of nine nodes.\nAnswer the call.") == []  # not labels
    assert answer_aliases("Four (4).") == ["Four (4)", "Four", "4"]
    assert answer_aliases("the Alps") == ["the Alps", "Alps"]


def test_generate_probes_with_a_writer_and_keeps_them_out_of_training(tmp_path):
    prompts = []

    def fixed(prompt):
        prompts.append(prompt)
        return REPLY

    corpus = [{"text": DOC, "source": "https://example.com/zephyr"}, "Bread is made from flour."]
    out = tmp_path / "generated_probes.jsonl"
    rows = generate_probes(None, None, corpus, n_per_doc=3, writer=fixed, out=out)
    assert len(prompts) == 2 and DOC in prompts[0] and "Q: <question>" in prompts[0]
    # grounded in the document, deduplicated across the reply, at most n_per_doc per document
    assert [r["question"] for r in rows] == ["How many antennas does the Zephyr router have?",
                                             "What is the largest mesh the router supports?", "Who makes it?"]
    assert rows[0]["answers"] == ["Four (4)", "Four", "4"]
    assert all(r["source"] == "https://example.com/zephyr" and r["generated_by"] == "fixed" for r in rows)
    assert load_probes(out) == rows  # a valid probes file
    with pytest.raises(KinfuseError, match="missing answer"):
        read_rows(out, ("question", "answer"))  # not usable as a training Q&A file
    loose = generate_probes(None, None, corpus, n_per_doc=1, writer=fixed, require_grounded=False)
    assert [r["source"] for r in loose] == ["https://example.com/zephyr", "document 2"]


def test_generate_probes_with_the_model(trained):
    """The default writer: the model itself, asked in chat form with the adapter off. The tiny
    random model writes garbage, so only the plumbing is checked: rows, if any, are grounded."""
    rows = generate_probes(trained, None, [DOC], n_per_doc=2, max_new_tokens=8)
    assert isinstance(rows, list)
    assert all(answer_matches(DOC, r["answers"]) and r["source"] == "document 1" for r in rows)
    with pytest.raises(KinfuseError, match="no text"):
        generate_probes(trained, None, ["  "])


def test_probe_rows_serialise(trained):
    comparison = Evaluator(trained, max_new_tokens=4).compare(
        [{"question": QUESTION, "answers": ["four"], "distractors": ["nine"], "source": "probes.jsonl"}])
    row = json.loads(json.dumps(comparison.to_dict()))["results"][0]
    assert row["distractors"] == ["nine"] and row["source"] == "probes.jsonl"
    assert row["adapted_loglik_correct"] in (True, False)


def test_general_samples_hold_out_what_forgetting_is_measured_on():
    from kinfuse.data.probes import general_prompts, general_texts

    for sample in (general_texts, general_prompts):
        held_out, train = set(sample("eval")), set(sample("train"))
        assert held_out and train and not held_out & train
        assert held_out | train == set(sample("all"))
    with pytest.raises(KinfuseError, match="split='test'"):
        general_texts("test")


def test_end_kept_counts_only_turns_the_base_ended():
    from kinfuse.eval import Comparison, ProbeResult

    def row(base_ended, adapted_ended, kind="chat"):
        return ProbeResult(kind, "q", ["a"], "b", "c", False, False, base_ended, adapted_ended, True, True)

    rows = [row(True, True), row(True, False), row(False, True), row(False, True), row(True, True, "completion")]
    b = Comparison(rows).chat_behaviour()
    assert b["n"] == 4 and b["adapted_ended_rate"] == 0.75 and b["base_ended_rate"] == 0.5
    assert b["end_kept"] == 0.5  # of the 2 chat turns the base ended, the adapter ended 1
    assert math.isnan(Comparison([row(False, True)]).chat_behaviour()["end_kept"])
