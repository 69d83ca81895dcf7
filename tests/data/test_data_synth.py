"""kinfuse.data.synth: clauses, questions by rule, document reading and the synthesis of rows."""

from __future__ import annotations

import json

import pytest

from kinfuse.data.answers import normalize
from kinfuse.data.synth import synthesize
from kinfuse.data.synth.document import read_document, topic_of
from kinfuse.data.synth.questions import questions_for
from kinfuse.data.synth.text import parse_clause, split_sentences


def asked(sentence: str, topic: str = "") -> dict[str, list[str]]:
    """answer span -> the questions asked for it."""
    clause = parse_clause(sentence)
    assert clause is not None, sentence
    out: dict[str, list[str]] = {}
    for span, questions in questions_for(clause, topic):
        for q in questions:
            out.setdefault(q.answer_span, []).append(q.question)
    return out


def test_clause_parts():
    c = parse_clause("Each P5 instance delivers 3,200 Gbps of aggregate network bandwidth.")
    assert (c.words(c.subject), c.words(c.verb), c.lemma, c.tag) == ("Each P5 instance", "delivers", "deliver", "VBZ")
    c = parse_clause("At the summit, AWS announced Agents for Amazon Bedrock in preview.")
    assert (c.words(c.intro), c.words(c.subject), c.lemma, c.tag) == ("At the summit", "AWS", "announce", "VBD")
    c = parse_clause("P5 instances use 3rd Gen AMD EPYC processors.")  # "instances" is the noun, "use" the verb
    assert (c.words(c.subject), c.words(c.verb)) == ("P5 instances", "use")
    c = parse_clause("Agents for Amazon Bedrock is launching in preview.")
    assert c.words(c.verb) == "is launching" and c.aux is not None and c.lemma == "launch"
    c = parse_clause("Each H100 has 80 GB of HBM3.")  # "has" as a main verb: do-support, not inversion
    assert c.aux is None and c.lemma == "have"
    assert parse_clause("When and where was the summit?") is None
    assert parse_clause("Key announcements at a glance") is None


# (sentence, answer span, a question the rules must write for that span)
QUESTIONS = [
    # auxiliary inversion, do-support, "Do you know", attributes, copulas, dates
    ("Each P5 instance delivers 3,200 Gbps of aggregate network bandwidth.",
     "3,200 Gbps", "How much aggregate network bandwidth does each P5 instance deliver?"),
    ("Each P5 instance delivers 3,200 Gbps of aggregate network bandwidth.",
     "3,200 Gbps", "Do you know how much aggregate network bandwidth each P5 instance delivers?"),
    ("Each P5 instance delivers 3,200 Gbps of aggregate network bandwidth.",
     "3,200 Gbps", "What is the aggregate network bandwidth of each P5 instance?"),
    ("Each H100 has 80 GB of HBM3.",
     "80 GB", "How much HBM3 does each H100 have?"),
    ("The host processors in P5 are 3rd Gen AMD EPYC chips.",
     "3rd Gen AMD EPYC chips", "What are the host processors in P5?"),
    ("Amazon Web Services announced Amazon EC2 P5 at AWS Summit New York on July 26, 2023.",
     "July 26, 2023", "When did Amazon Web Services announce Amazon EC2 P5 at AWS Summit New York?"),
    # the reverse question: the subject is the answer
    ("AWS Entity Resolution matches and links related records across applications.",
     "AWS Entity Resolution", "What matches and links related records across applications?"),
    ("Amazon EC2 P5 instances are powered by NVIDIA H100 GPUs.",
     "Amazon EC2 P5 instances", "Which instances are powered by NVIDIA H100 GPUs?"),
    ("Amazon EC2 P5 instances are powered by NVIDIA H100 GPUs.",
     "NVIDIA H100 GPUs", "What are Amazon EC2 P5 instances powered by?"),
    # another verb for the same act; coordinated verbs in the base form after do-support
    ("AWS Entity Resolution matches and links related records across applications.",
     "related records", "What does AWS Entity Resolution match and link across applications?"),
    ("AWS Entity Resolution matches and links related records across applications.",
     "AWS Entity Resolution", "I want to match and link related records across applications. What does that?"),
    ("Amazon EC2 P5 instances are powered by NVIDIA H100 GPUs.",
     "NVIDIA H100 GPUs", "What are Amazon EC2 P5 instances driven by?"),  # a synonym of "power"
    ("Amazon EC2 P5 instances are powered by NVIDIA H100 GPUs.",
     "Amazon EC2 P5 instances", "Which instances are driven by NVIDIA H100 GPUs?"),
    ("P5 instances use 3rd Gen AMD EPYC processors.",
     "3rd Gen AMD EPYC processors", "What do P5 instances employ?"),
    # a verb coordinated later in the clause takes the base form too; a noun after "and" does not
    ("The Cairnbox C3 watches the nutrient solution around the clock and corrects it.",
     "nutrient solution", "What does the Cairnbox C3 watch around the clock and correct it?"),
    ("The Hub sends alerts to phones and watches.",
     "alerts", "What does the Hub send to phones and watches?"),
]


@pytest.mark.parametrize("sentence,span,question", QUESTIONS)
def test_questions_written_for_a_span(sentence, span, question):
    assert question in asked(sentence)[span]


def test_questions_open_ended_by_span():
    assert any(x.startswith("How many vCPUs do the H100 GPUs have")
               for x in asked("The H100 GPUs have 192 vCPUs beside them.")["192 vCPUs"])
    assert any(x.startswith("Where did Amazon Web Services announce Amazon EC2 P5") for x in asked(
        "Amazon Web Services announced Amazon EC2 P5 at AWS Summit New York on July 26, 2023.")["AWS Summit New York"])


def test_instructions_conditions_and_durations():
    from kinfuse.data.synth.document import read_document

    doc = read_document("Press and hold the Sprig button for three seconds.\n"
                        "If the Hub cannot be reached, a controller holds 21 days of readings.")
    asked_for = {}
    for sentence in doc.sentences:
        for clause in sentence.clauses:
            for span, questions in questions_for(clause):
                asked_for.setdefault(" ".join(clause.tokens[k].text for k in range(*span.core)), []).extend(
                    q.question for q in questions)
    assert "What do you press and hold for three seconds?" in asked_for["Sprig button"]
    assert "How long do you press and hold the Sprig button?" in asked_for["three seconds"]
    assert "If the Hub cannot be reached, how many days of readings does a controller hold?" in asked_for["21 days"]


def test_no_questions_about_pronouns_or_negations():
    assert asked("It stores vector embeddings.") == {}
    assert asked("We go through the hardware, number by number.") == {}
    assert asked("AWS did not pair the NVIDIA parts with Intel silicon.") == {}


def test_topic_added_when_the_clause_names_nothing():
    q = asked("The default port is 7718.", topic="Cairnbox Hub")
    assert all(x.startswith("For Cairnbox Hub, ") for qs in q.values() for x in qs)
    assert "For Cairnbox Hub, what is the default port?" in q["7718"]


def test_sentences_keep_abbreviations_and_decimals():
    assert split_sentences("Version 2.5 ships in Jan. 2024 with Dr. Smith's fix. It is free.") == [
        "Version 2.5 ships in Jan. 2024 with Dr. Smith's fix.", "It is free."]


def test_reading_lists_tables_faq_and_pronouns():
    text = "\n".join([
        "The Cairnbox C3 is a grow controller made by Fernhollow Devices. It measures pH and conductivity.",
        "Each controller provides:",
        "- 6 relays rated at 2 A",
        "- 4 LoomLink buses",
        "Parts",
        "- Rootlet – a sensor probe for the LoomLink bus",
        "Cairnbox C3 at a glance",
        "Weight | 410 g",
        "Power input | 12 V DC",
        "Hub settings",
        "Setting | Default",
        "listen_port | 7718",
        "How do I pair the app?",
        "Hold the Sprig button for 5 seconds. The LED turns blue.",
    ])
    doc = read_document(text, source="docs", title="Cairnbox C3 overview | Fernhollow")
    sentences = [s.text for s in doc.sentences]
    assert "The Cairnbox C3 measures pH and conductivity." in sentences  # "It" resolved
    assert "Each controller provides 6 relays rated at 2 A." in sentences  # lead-in joined to its items
    assert "Each controller provides 4 LoomLink buses." in sentences
    assert "Rootlet is a sensor probe for the LoomLink bus." in sentences
    facts = {(t.subject, t.attribute, t.value) for t in doc.tables}
    assert ("Cairnbox C3", "Weight", "410 g") in facts and ("listen_port", "Default", "7718") in facts
    assert doc.faq == [("How do I pair the app?", "Hold the Sprig button for 5 seconds. The LED turns blue.")]
    assert doc.topic == "Cairnbox C3"
    assert topic_of("", "July came. July went.") == ""  # a month is not a topic


def test_synthesize_groups_rounds_guard_and_report(tmp_path):
    docs = [
        {"text": "Quillstore is a key-value database written in Rust. It listens on port 9410 by default.\n"
                 "Quillstore stores every value in 4 KB pages. The compactor runs every 30 minutes.",
         "source": "quill.html"},
        {"text": "Release notes\nVersion 2.1 was released on March 3, 2025. It added streaming backups.",
         "source": "notes.html"},
    ]
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"question": "Which port does Quillstore listen on by default?",
                                  "answers": ["9410"]}) + "\n")
    s = synthesize(docs, probes=[str(probes)])
    spans = {g.span for g in s.groups}
    assert {"port 9410", "30 minutes", "March 3, 2025", "Quillstore"} <= spans
    assert "default" not in spans  # "by default" is wording, not an answer
    asked_for = {g.span: [q for q, _ in g.questions] for g in s.groups}
    assert "For Quillstore, how often does the compactor run?" in asked_for["30 minutes"]
    assert "What port does Quillstore listen on?" in asked_for["port 9410"]
    # this wording is the probe's, nearly: dropped with its reason, never trained on
    assert {"question": "What port does Quillstore listen on by default?", "template": "wh0"}.items() <= next(
        d for d in s.dropped if d["question"].startswith("What port")).items()
    for g in s.groups:  # every answer is a sentence that holds the answer span
        assert normalize(g.span) in normalize(g.answer) and g.answer.endswith((".", "!", "?"))
    # the probe's question (nearly) was generated and dropped, with its reason
    assert any("near a probe" in d["reason"] and "9410" in d["answer"] for d in s.dropped)
    asked_for = {g.span: [q for q, _ in g.questions] for g in s.groups}
    assert not any(normalize(q) == normalize("Which port does Quillstore listen on by default?")
                   for g in s.groups for q, _ in g.questions)
    # each round asks each fact in another wording, until the wordings run out
    first, second = s.rows(0), s.rows(1)
    assert len(first) == len(s.groups) == len(second)
    many = [i for i, g in enumerate(s.groups) if len(g.questions) > 1]
    assert many and all(first[i]["question"] != second[i]["question"] for i in many)
    assert all(r["kind"].startswith("rule-") and r["source"] in ("quill.html", "notes.html") for r in first)
    # document variants: each round another kind, every one a row of its own
    kinds = [{t["kind"] for t in s.texts(r)} for r in range(3)]
    assert kinds[0] == {"resolved"} and kinds[1] == {"shuffled"} and "section" in kinds[2] | {"section"}
    resolved = s.texts(0)[0]["text"]
    assert "Quillstore listens on port 9410 by default." in resolved
    assert "questions by rule:" in s.report() and s.to_dict()["facts"] == len(s.groups)
    saved = [json.loads(line) for line in s.save(tmp_path / "generated.jsonl").read_text().splitlines()]
    assert sum("dropped" in r for r in saved) == len(s.dropped)
    assert sum("dropped" not in r for r in saved) == sum(len(g.questions) for g in s.groups)


@pytest.mark.parametrize("text", [
    "", " \n \n", "Heading only", "| | |\n| a |", "- \n- -", "???", "It. They. Its.", "a" * 5000,
    "Ünïcödé – ẞtraße ist 5 km lang. 東京は大きい。", "x = 1; y = 2;\nfor i in range(3): print(i)",
    "Price | $5\nPrice | $6\n" * 50, "The. The. The the the.", "1. 2. 3.", "- Foo – \n- – bar",
    ("Word " * 300) + ".",
])
def test_synthesize_never_crashes(text):
    s = synthesize([{"text": text, "source": "odd"}])
    for g in s.groups:
        assert g.questions and g.answer
    for r in range(3):
        s.texts(r)


def test_answer_styles():
    sentence = "Each P5 instance delivers 3,200 Gbps of aggregate network bandwidth."

    def answers(style):
        return {r["answer"] for r in synthesize([sentence], answers=style).all_rows() if r["span"] == "3,200 Gbps"}

    assert answers("span-first") == {"3,200 Gbps. " + sentence}  # the fact's words, then the sentence
    assert answers("sentence") == {sentence}
    assert answers("span") == {"3,200 Gbps."}
