"""kinfuse.data.augment: paraphrases and Q&A written by a generator, checked, cached, kept with
provenance, never matching a probe. Most tests use a rule-based writer (a real function that
rewrites sentences by rule, and writes some bad pairs on purpose); one uses the tiny model."""

import json
import re

import pytest

from kinfuse import Chunker, KinfuseError
from kinfuse.data.augment import (
    PARAPHRASE_STYLES,
    QA_INSTRUCTION,
    augment,
    content_words,
    grounding,
    invented_names,
    split_sections,
)
from kinfuse.data.chunker import IGNORE
from kinfuse.data.probes import ProbeGuard
from kinfuse.config import DataConfig

DOC = ("The Zephyr router has four antennas. It supports a mesh of up to nine nodes.\n\n"
       "Bread is made from flour, water, salt and yeast. The moon orbits the earth every month.")
PROBE = "How many antennas does the Zephyr router have?"

# Pairs the writer adds after its good ones, and the reason each must be dropped for.
BAD_PAIRS = [
    ("Tell me about the bread", "Bread is made from flour.", "question does not end with '?'"),
    ("What colour is the router?", "The router is purple and weighs 7 kilos.", "invented numbers"),
    ("What is the moon made of?", "Green cheese from distant galaxies, obviously.", "not grounded"),
    ("Who makes the router?", "The router is made by Acme Networks.", "invented names"),
    ("What does the moon do each month?", "The moon orbits the following:", "answer is incomplete"),
    (PROBE.lower().replace("?", " ?"), "The Zephyr router has four antennas.", "matches probe"),
    ("How many antennas does the new Zephyr router have?", "It has four antennas.", "matches probe"),
    ("Which nodes?", "", "no pair"),  # parse_qa_pairs skips a question without an answer
]


def _sentences(text):
    return [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s]


def rule_writer(prompt: str) -> str:
    """Deterministic stand-in for a model: reads the instruction, rewrites by rule."""
    instruction, text = prompt.split("\n\nText:\n", 1)
    sentences = _sentences(text)
    if instruction.startswith("Read the text below and write"):
        n = int(re.search(r"write (\d+) questions", instruction).group(1))
        lines = []
        for s in sentences[: n + 1]:  # one grounded pair per sentence, one more than asked
            lines += [f"Q: What does the text say about {' '.join(s.split()[:3]).lower()}?", f"A: {s}"]
        lines.append(f"Q: What does the text say about {' '.join(sentences[0].split()[:3]).lower()}?")
        lines.append(f"A: {sentences[1]}")  # the first question again, another answer
        for q, a, _ in BAD_PAIRS:
            lines += [f"Q: {q}", f"A: {a}"]
        return "Sure! Here are the pairs:\n" + "\n".join(lines)
    style = next(name for name, t in PARAPHRASE_STYLES if t.split("{text}")[0] == instruction + "\n\nText:\n")
    if style == "rewrite":  # kept: clauses swapped around a new joint
        out = []
        for s in sentences:
            w = s.rstrip(".").split()
            out.append(f"According to the text, {' '.join(w[len(w) // 2:])}; this is said of {' '.join(w[:len(w) // 2])}.")
        return "Here is a rewritten version:\n" + " ".join(out)
    if style == "news":
        return text  # a verbatim copy
    if style == "explain":
        return "<|im_start|>user\nexplain more"  # a role marker: malformed
    if style == "facts":
        return "\n".join(s.replace("four", "forty-four 44") for s in sentences)  # an invented number
    return "In summary, " + " ".join(sentences)


def test_sections_split_at_paragraphs_then_sentences():
    text = "\n\n".join(["First paragraph. " * 10, "Second one is short.", "Third. " * 80])
    sections = split_sections(text, 300)
    assert all(len(s) <= 300 for s in sections[:-1])
    assert sections[0].startswith("First paragraph.") and "Second one is short." in sections[0]
    assert all(s.endswith(".") for s in sections)  # cut at sentence ends
    assert " ".join(" ".join(sections).split()) == " ".join(text.split())  # nothing lost
    assert split_sections("One short text.", 300) == ["One short text."]


def test_sections_two_with_a_short_last_one():
    # two sections, the last under a quarter of max_chars: it joins the first (it used to pop
    # the list down to one item before indexing [-2], an IndexError on ordinary four-page sites)
    text = "A first paragraph that is long enough. " * 6 + "\n\nShort end."
    assert split_sections(text, 240) == [" ".join(("A first paragraph that is long enough. " * 6).split())
                                         + "\nShort end."]


def test_grounding_and_probe_guard():
    share, invented = grounding("The router has 4 antennas and 12 ports.", "The router has four antennas and 12 ports.")
    assert invented == ["4"] and 0.5 < share < 1
    assert content_words("The routers have antennas") == ["router", "antenna"]
    source = "The Zephyr router from Acme has four antennas."
    assert invented_names("Acme sells the Zephyr router. The Orion router is new.", source) == ["Orion"]
    guard = ProbeGuard([PROBE, {"prompt": "The capital of France is"}], overlap=0.6)
    assert guard.match("how many ANTENNAS does the zephyr router have") == (PROBE, 1.0)
    assert guard.match("How many antennas does the new Zephyr router have?")[1] >= 0.6
    assert guard.match("What is the capital of France, as a city?") is None
    assert guard.match("What does the Zephyr router support?") is None  # same topic, different question


def test_paraphrases_and_qa_checked_with_provenance(tmp_path):
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"question": PROBE, "answers": ["four"]}) + "\n")
    result = augment([{"text": DOC, "source": "zephyr.html"}], rule_writer, paraphrases=4, qa_pairs=3,
                     probes=[str(probes)], cache=tmp_path / "augment.json")
    assert result.generator == "rule_writer" and result.sections == 1
    para = [r for r in result.rows if r["kind"] == "paraphrase"]
    assert len(para) == 1 and para[0]["style"] == "rewrite" and para[0]["source"] == "zephyr.html"
    assert para[0]["text"].startswith("According to the text")  # the preamble line was removed
    assert para[0]["generator"] == "rule_writer" and para[0]["section"] == 0
    reasons = result.drop_reasons("paraphrase")
    assert reasons == {"copies the section": 1, "malformed": 1, "invented numbers": 1}
    qa = [r for r in result.rows if r["kind"] == "qa"]
    assert [r["answer"] for r in qa] == _sentences(DOC)[:3]
    assert all(r["question"].endswith("?") and r["source"] == "zephyr.html" for r in qa)
    dropped = {d["item"]["question"]: d["reason"] for d in result.dropped if d["kind"] == "qa"}
    for q, _, reason in BAD_PAIRS[:-1]:
        assert dropped[q].startswith(reason), (q, dropped[q])
    assert "Which nodes?" not in dropped  # never parsed as a pair: not counted as written
    assert result.drop_reasons("qa")["duplicate question"] == 1
    assert result.drop_reasons("qa")["over the 3 pairs asked"] == 1
    assert result.generated["qa"] == len(qa) + sum(result.drop_reasons("qa").values())
    assert not any(ProbeGuard([PROBE]).match(r["question"]) for r in qa)
    report = result.report()
    assert "paraphrases: 1 kept of 4 written" in report and "Q&A pairs: 3 kept of 12 written" in report
    summary = result.to_dict()
    assert summary["qa"]["kept"] == 3 and summary["paraphrase"]["dropped"]["malformed"] == 1
    # The rows train as they are: paraphrases as text, Q&A on the answer tokens only.
    tok_rows = [{"question": r["question"], "answer": r["answer"]} for r in qa]
    assert tok_rows  # the chunker takes the rows with their provenance keys too (see the model test)


def test_cache_reused_and_checks_rerun(tmp_path):
    calls = []

    def counting_writer(prompt: str) -> str:
        calls.append(prompt)
        return rule_writer(prompt)

    cache = tmp_path / "augment.json"
    river = " ".join(f"On day {i} the river flows from the mountains to the sea." for i in range(30))
    docs = [DOC, river, DOC]  # the second has several sections; the third repeats the first (one prompt each)
    first = augment(docs, counting_writer, paraphrases=1, qa_pairs=2, cache=cache, section_chars=400)
    unique = 1 + len(split_sections(river, 400))
    assert first.sections == unique + 1 and unique > 2
    assert len(calls) == first.replies_generated == 2 * unique and first.replies_cached == 0
    saved = json.loads(cache.read_text())
    assert len(saved["replies"]) == len(calls)
    # A rerun reads every reply from the cache, and the checks run again: a new probe drops a pair.
    second = augment(docs, counting_writer, paraphrases=1, qa_pairs=2, cache=cache, section_chars=400,
                     probes=["What does the text say about the zephyr router?"])
    assert len(calls) == 2 * unique and second.replies_cached == len(calls)
    asked = "What does the text say about the zephyr router?"
    assert any(r.get("question") == asked for r in first.rows)
    assert not any(r.get("question") == asked for r in second.rows)
    assert any(d["reason"].startswith("matches probe") and "zephyr router" in d["item"]["question"]
               for d in second.dropped)
    # Other settings are other prompts: only the changed ones are generated.
    augment(docs, counting_writer, paraphrases=2, qa_pairs=2, cache=cache, section_chars=400)
    assert len(calls) == 3 * unique


def test_messy_replies_parsed(tmp_path):
    def messy(prompt: str) -> str:
        return ("1. **Question 1:** How many antennas does the router in the text have?\n"
                "**Answer:** The Zephyr router has four antennas.\n\n"
                "2. **Question 2:** What is bread made from?\n   **Answer:** flour, water, salt and yeast\n"
                "Q: What does the moon orbit? A: The earth, every month.\nSome trailing chatter.")

    result = augment([DOC], messy, qa_pairs=3, probes=[PROBE], probe_overlap=0.9)
    assert [(r["question"], r["answer"]) for r in result.rows] == [
        ("How many antennas does the router in the text have?", "The Zephyr router has four antennas."),
        ("What is bread made from?", "flour, water, salt and yeast"),
        ("What does the moon orbit?", "The earth, every month."),
    ]
    assert result.rows[0]["source"] == "document 1"


def test_settings_and_config_validation():
    with pytest.raises(KinfuseError) as e:
        augment([DOC], rule_writer, paraphrases=9, qa_pairs=-1, section_chars=10, probe_overlap=2.0)
    assert all(s in str(e.value) for s in ("paraphrases=9", "qa_pairs=-1", "section_chars=10", "probe_overlap=2.0"))
    with pytest.raises(KinfuseError, match="a callable fn"):
        augment([DOC], 42, qa_pairs=1)
    with pytest.raises(KinfuseError, match="not str"):
        augment([DOC], lambda p: None, qa_pairs=1)
    assert augment([DOC], rule_writer).rows == []  # both counts 0: off, the writer is never called
    problems = DataConfig(paraphrases=len(PARAPHRASE_STYLES) + 1, generated_qa=21, augment_model="",
                          augment_section_chars=100).problems()
    assert len(problems) == 4 and problems[0].startswith("paraphrases=6")
    assert DataConfig(paraphrases=2, generated_qa=3).problems() == []


# -- the tiny model as generator -----------------------------------------------------------------


QA_REPLY = ("Q: What does the Zephyr router support?\nA: It supports a mesh of up to nine nodes.\n"
            "Q: How many antennas does the Zephyr router have?\nA: The Zephyr router has four antennas.\n"
            "Q: Tell me about bread\nA: Bread is made from flour.")
PARA_REPLY = "A mesh of up to nine nodes is supported by the Zephyr router, which has four antennas."
SECTION = "The Zephyr router has four antennas. It supports a mesh of up to nine nodes."


@pytest.fixture(scope="module")
def writer_model(tiny_model, tmp_path_factory):
    """The tiny model, fully fine-tuned to answer the Q&A and rewrite prompts for SECTION with
    fixed replies (its base weights: augmentation reads the model with the adapter off)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    rows = [{"messages": [{"role": "user", "content": QA_INSTRUCTION.format(n=2, text=SECTION)},
                          {"role": "assistant", "content": QA_REPLY}]},
            {"messages": [{"role": "user", "content": PARAPHRASE_STYLES[0][1].format(text=SECTION)},
                          {"role": "assistant", "content": PARA_REPLY}]}]
    chunker = Chunker(tok, block_size=512)
    encoded = chunker.encode(rows)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(300):
        loss = 0
        for ids, labels in encoded:
            loss = loss + model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    assert loss.item() < 0.05, f"the tiny writer did not learn its replies (loss {loss.item():.3f})"
    path = tmp_path_factory.mktemp("tiny-writer")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_model_generator_plumbing(writer_model, tmp_path):
    from kinfuse import InfuseConfig, QLoRATrainer, TrainConfig
    from kinfuse.data.augment import augment_for_infusion

    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"question": PROBE, "answers": ["four"]}) + "\n")
    config = InfuseConfig(model=writer_model)
    config.data.paraphrases, config.data.generated_qa = 2, 2
    config.eval.probes = [str(probes)]
    trainer = QLoRATrainer(writer_model, TrainConfig(quantize="none", compute_dtype="float32", progress=False))
    cache = tmp_path / "augment.json"
    lines = []
    result = augment_for_infusion(config, [{"text": SECTION, "source": "zephyr.html"}], trainer, cache, lines.append)
    assert result.generator == writer_model and result.replies_generated == 3 and result.replies_cached == 0
    qa = [r for r in result.rows if r["kind"] == "qa"]
    assert [(r["question"], r["answer"]) for r in qa] == [
        ("What does the Zephyr router support?", "It supports a mesh of up to nine nodes.")]
    assert qa[0]["source"] == "zephyr.html" and qa[0]["generator"] == writer_model
    reasons = {d["item"]["question"]: d["reason"] for d in result.dropped if d["kind"] == "qa"}
    assert reasons[PROBE].startswith("matches probe (overlap 1.00)")
    assert reasons["Tell me about bread"] == "question does not end with '?'"
    para = [r for r in result.rows if r["kind"] == "paraphrase"]
    assert [p["text"] for p in para] == [PARA_REPLY] and para[0]["style"] == "rewrite"
    assert len(result.dropped) == 3  # the two pairs above, and the "news" style's reply (untrained: noise)
    assert "Q&A pairs: 1 kept of 3 written" in lines[0]
    # The rerun generates nothing; the rows chunk as training data.
    trainer_model_generate = trainer.model.generate
    trainer.model.generate = lambda *a, **k: pytest.fail("cached replies were generated again")
    again = augment_for_infusion(config, [{"text": SECTION, "source": "zephyr.html"}], trainer, cache, lines.append)
    trainer.model.generate = trainer_model_generate
    assert again.replies_generated == 0 and again.replies_cached == 3 and again.rows == result.rows
    blocks = Chunker(trainer.tokenizer, block_size=128)(result.rows)
    targets = [t for b in blocks for t, lab in zip(b["input_ids"], b["labels"]) if lab != IGNORE]
    assert "nine nodes" in trainer.tokenizer.decode(targets)
