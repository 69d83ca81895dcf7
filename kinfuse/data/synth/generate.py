"""From a corpus to training rows that make each fact answerable, by rules, without a writer model.

`synthesize(documents)` reads every document (kinfuse.data.synth.document), asks every answerable
span of every clause in several wordings (kinfuse.data.synth.questions), adds questions about
each named entity ("Tell me about X"), each table cell and each FAQ heading of the pages, and
writes document variants: the text with pronouns resolved, with its sentences and sections
shuffled, and each section on its own.

Questions are grouped by fact (one span of one sentence, one table cell, one entity): a
group holds every wording of it. `Synthesis.rows(round)` gives each group's wordings in
turn, a different one each round (epoch), so training sees each fact asked several ways
without repeating one wording until it is memorised.

Every row carries its provenance (`source`, `kind`, `template`, `span`), every dropped
question its reason, and generated questions that come near an evaluation probe are
dropped (kinfuse.data.probes.ProbeGuard), so the probes stay unseen.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import io
from ...corpus import texts_with_sources
from ..answers import normalize
from ..probes import ProbeGuard
from .document import ReadDocument, name_kinds, read_document
from .questions import questions_for
from .text import is_plural_noun, known_names

MAX_ANSWER_WORDS = 60  # longer source sentences are cut to the clause that holds the answer
# Longer questions are nearly all misreadings of a long sentence: dropped (with the reason).
MAX_QUESTION_WORDS = 25


@dataclass
class Group:
    """One fact and every wording of a question about it."""

    kind: str  # "clause", "entity", "table", "faq"
    source: str
    answer: str  # the answer row: a full sentence (or a few) stating the fact
    span: str  # the key words of the answer
    span_kind: str  # date, quantity, name, term, subject, entity, table, faq
    questions: list[tuple[str, str]] = field(default_factory=list)  # (question, template)


@dataclass
class Synthesis:
    groups: list[Group] = field(default_factory=list)
    read: list[ReadDocument] = field(default_factory=list)  # the documents as the rules read them
    dropped: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    documents: int = 0
    sentences: int = 0
    clauses: int = 0

    def rows(self, round: int = 0, per_group: int = 1) -> list[dict[str, Any]]:
        """`per_group` questions of every group for this round: wordings k*per_group... in turn."""
        out = []
        for g in self.groups:
            n = len(g.questions)
            for j in range(min(per_group, n)):
                question, template = g.questions[(round * per_group + j) % n]
                out.append({"question": question, "answer": g.answer, "kind": f"rule-{g.kind}",
                            "template": template, "span": g.span, "source": g.source})
        return out

    def texts(self, round: int = 0, per_document: int = 1) -> list[dict[str, Any]]:
        """`per_document` rewritten variants of every document for this round (VARIANTS in turn;
        the shuffled one is shuffled anew each round)."""
        out = []
        for d, doc in enumerate(self.read):
            for j in range(per_document):
                kind = VARIANTS[(round * per_document + j) % len(VARIANTS)]
                out += variant(doc, kind, random.Random(f"{self.seed}/{round}/{j}/{d}"))
        return out

    def all_rows(self) -> list[dict[str, Any]]:
        return [{"question": q, "answer": g.answer, "kind": f"rule-{g.kind}", "template": t, "span": g.span,
                 "source": g.source} for g in self.groups for q, t in g.questions]

    def to_dict(self) -> dict[str, Any]:
        per_doc: dict[str, Counter] = defaultdict(Counter)
        for g in self.groups:
            per_doc[g.source][g.kind] += 1
            per_doc[g.source]["questions"] += len(g.questions)
        return {
            "documents": self.documents, "sentences": self.sentences, "clauses": self.clauses,
            "facts": len(self.groups), "questions": sum(len(g.questions) for g in self.groups),
            "facts_by_kind": dict(Counter(g.kind for g in self.groups)),
            "questions_by_template": dict(Counter(t for g in self.groups for _, t in g.questions)),
            "document_variants": dict(Counter(t["kind"] for t in self.texts(0, len(VARIANTS)))),
            "per_document": {s: dict(c) for s, c in per_doc.items()},
            "dropped": dict(Counter(d["reason"].split(":")[0] for d in self.dropped)),
        }

    def report(self) -> str:
        d = self.to_dict()
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(d["facts_by_kind"].items()))
        dropped = ", ".join(f"{n} {r}" for r, n in sorted(d["dropped"].items(), key=lambda x: -x[1]))
        variants = ", ".join(f"{n} {k}" for k, n in sorted(d["document_variants"].items()))
        return (f"questions by rule: {d['questions']} questions about {d['facts']} facts ({kinds}) from "
                f"{d['sentences']} sentences of {d['documents']} documents; document variants: {variants or 'none'}"
                + (f"; dropped {len(self.dropped)} ({dropped})" if self.dropped else ""))

    def save(self, path: str | Path) -> Path:
        """Every generated question (all wordings), its answer and provenance, one JSON per line,
        then the dropped ones with their reason: what the model was taught, readable."""
        path = Path(path)
        lines = [json.dumps(r, ensure_ascii=False) for r in self.all_rows()]
        lines += [json.dumps({**d, "dropped": True}, ensure_ascii=False) for d in self.dropped]
        return io.write_text(path, "\n".join(lines) + "\n")


def _sentence(text: str) -> str:
    """One line ending in a full stop, capitalised unless it starts with an identifier (listen_port)."""
    text = " ".join(text.split())
    if text and text[-1] not in ".!?":
        text += "."
    first = text.split(" ", 1)[0] if text else ""
    return text if re.search(r"[_/.]\w|\d", first.rstrip(".")) else text[:1].upper() + text[1:]


def _clause_groups(doc: ReadDocument, kinds: dict[str, str], answers: str) -> list[Group]:
    groups = []
    for sentence in doc.sentences:
        for clause in sentence.clauses:
            answer = _sentence(clause.text if len(sentence.text.split()) > MAX_ANSWER_WORDS or
                               len(sentence.clauses) > 1 else sentence.text)
            for span, questions in questions_for(clause, sentence.topic or doc.topic, kinds):
                if not questions:
                    continue
                key = " ".join(clause.tokens[k].text for k in range(*span.core))
                core = clause.text[clause.tokens[span.core[0]].start : clause.tokens[span.core[1] - 1].end]
                said = answer
                if answers == "span-first" and span.kind != "subject":  # the fact's words first, then the sentence
                    said = _sentence(core) + " " + answer
                elif answers == "span":  # the fact's words alone: shorter rows, more of them in a step
                    said = _sentence(core)
                groups.append(Group(kind="clause", source=doc.source, answer=said, span=core or key,
                                    span_kind=span.kind, questions=[(q.question, q.template) for q in questions]))
    return groups


def _entity_groups(docs: list[ReadDocument]) -> list[Group]:
    """"Tell me about X" for each name that is the subject of sentences: answered with up to
    three of them (a definition "X is ..." first), from different documents where possible."""
    about: dict[str, list[tuple[bool, str, str]]] = defaultdict(list)  # name -> (is definition, sentence, source)
    for doc in docs:
        for sentence in doc.sentences:
            for clause in sentence.clauses[:1]:
                s0, s1 = clause.subject
                words = clause.tokens[s0:s1]
                if not words:
                    continue
                from .text import is_name_token

                if not all(is_name_token(t, k == 0) or t.lower in ("for", "of", "the") for k, t in enumerate(words)):
                    continue
                name = clause.words(clause.subject)
                name = re.sub(r"^(?:The|the)\s+", "", name)
                text = _sentence(clause.text if len(sentence.clauses) > 1 else sentence.text)
                if len(text.split()) > MAX_ANSWER_WORDS:
                    continue
                about[name].append((clause.lemma == "be", text, doc.source))
    groups = []
    for name, facts in about.items():
        facts.sort(key=lambda f: not f[0])  # definitions first, then document order
        chosen, seen_sources = [], set()
        for f in facts:
            if f[2] not in seen_sources or len(chosen) < 2:
                if normalize(f[1]) not in {normalize(c[1]) for c in chosen}:
                    chosen.append(f)
                    seen_sources.add(f[2])
            if len(chosen) == 3:
                break
        answer = " ".join(c[1] for c in chosen)
        plural = is_plural_noun(name.split()[-1])
        qs = [(f"Tell me about {name}.", "entity-tell"), (f"What do you know about {name}?", "entity-know")]
        if chosen[0][0]:
            qs.append((f"What {'are' if plural else 'is'} {name}?", "entity-what"))
        groups.append(Group(kind="entity", source=chosen[0][2], answer=answer, span=name, span_kind="entity",
                            questions=qs))
    return groups


def _table_groups(doc: ReadDocument) -> list[Group]:
    groups = []
    for fact in doc.tables:
        first = fact.attribute.split(" ", 1)[0]
        attr = fact.attribute if any(c.isupper() for c in first[1:]) else fact.attribute[:1].lower() + fact.attribute[1:]
        subject = fact.subject
        plural = is_plural_noun(attr.split()[-1]) if attr.split() else False
        be = "are" if plural else "is"
        if re.match(r"(?:what|how|when|where|which|why)\b", attr, re.I):  # a column "What to do"
            groups.append(Group(kind="table", source=doc.source, answer=_sentence(f"{subject}: {fact.value}"),
                                span=fact.value, span_kind="table",
                                questions=[(f"{subject}: {attr.lower()}?", "table-wh"),
                                           (f"{attr[:1].upper() + attr[1:]} for {subject}?", "table-wh-for")]))
            continue
        answer = _sentence(f"The {attr} of {subject} {be} {fact.value}")
        qs = [(f"What {be} the {attr} of {subject}?", "table-of"), (f"{subject}: what {be} the {attr}?", "table-colon")]
        if re.match(r"[$€£]?\d", fact.value):
            qs.append((f"How much {attr} does {subject} have?" if not plural else f"How many {attr} does {subject} have?",
                       "table-how"))
        else:
            qs.append((f"Which {attr} does {subject} have?", "table-which"))
        groups.append(Group(kind="table", source=doc.source, answer=answer, span=fact.value, span_kind="table",
                            questions=qs))
    return groups


def _faq_groups(doc: ReadDocument) -> list[Group]:
    from .text import split_sentences

    groups = []
    for question, paragraph in doc.faq:
        answer = " ".join(split_sentences(paragraph)[:2])
        if not answer:
            continue
        context = f" ({doc.topic})" if doc.topic and doc.topic.lower() not in question.lower() else ""
        groups.append(Group(kind="faq", source=doc.source, answer=answer, span="", span_kind="faq",
                            questions=[(question[:-1] + context + "?", "faq")]))
    return groups


VARIANTS = ("resolved", "shuffled", "sections")


def variant(doc: ReadDocument, kind: str, rng: random.Random) -> list[dict[str, Any]]:
    """The document rewritten as `kind`, as training rows of its own: "resolved" (pronouns
    replaced by what they stand for), "shuffled" (sections in another order, and the sentences
    of each paragraph), "sections" (each section alone, under the document's title). The same
    facts in other contexts; a row never holds two variants (PoLM 3.1: variants in one context
    teach little)."""
    by_block: dict[int, list[str]] = defaultdict(list)
    for s in doc.sentences:
        by_block[s.block].append(s.text)
    sections: list[list[str]] = [[]]
    for b, (kind_, line) in enumerate(doc.blocks):
        if kind_ == "heading" and sections[-1]:
            sections.append([])
        if b in by_block:
            sections[-1].append(" ".join(by_block[b]))
        elif kind_ in ("heading", "row"):
            sections[-1].append(line)
    sections = [s for s in sections if s]
    if kind == "shuffled":
        shuffled = []
        for section in sections:  # a heading is one "sentence": it stays first
            lines = []
            for line in section:
                parts = re.split(r"(?<=[.!?])\s+", line)
                if len(parts) > 1 and " | " not in line:
                    rng.shuffle(parts)
                lines.append(" ".join(parts))
            shuffled.append(lines)
        rng.shuffle(shuffled)
        sections = shuffled
    if kind == "sections" and len(sections) > 1:
        head = doc.title.split(" | ")[0] if doc.title else doc.topic
        return [{"text": (f"{head}\n\n" if head else "") + "\n".join(s), "kind": "section", "source": doc.source}
                for s in sections if len(" ".join(s).split()) >= 20]
    return [{"text": "\n\n".join("\n".join(s) for s in sections), "kind": kind, "source": doc.source}]


def synthesize(documents: Any, *, probes: Iterable[Any] = (), seed: int = 0, probe_overlap: float = 0.6,
               answers: str = "span-first") -> Synthesis:
    """Questions about every fact of `documents` (a Corpus, Documents, dicts with "text", or
    strings) and document variants; questions near any of `probes` are dropped. `answers`:
    "span-first" answers give the fact's words, then the sentence stating it ("3,200 Gbps.
    Each P5 instance delivers ..."); "sentence" answers are the sentence alone."""
    guard = ProbeGuard(probes, overlap=probe_overlap)
    result = Synthesis(seed=seed)
    read = result.read
    pairs = texts_with_sources(documents)
    with known_names([text for text, _ in pairs]):
        groups = _read_and_ask(pairs, documents, result, read, answers)
    seen: Counter = Counter()
    for g in groups:
        kept = []
        for question, template in g.questions:
            item = {"question": question, "answer": g.answer, "source": g.source, "template": template}
            match = guard.match(question)
            key = normalize(question)
            if match:
                result.dropped.append({**item, "reason": f"near a probe (overlap {match[1]:.2f}): {match[0]}"})
            elif g.span and normalize(g.span) not in normalize(g.answer):
                result.dropped.append({**item, "reason": "answer does not contain the span"})
            elif seen[key] >= 2:
                result.dropped.append({**item, "reason": "asked twice already"})
            elif len(question.split()) > MAX_QUESTION_WORDS:
                result.dropped.append({**item, "reason": f"question over {MAX_QUESTION_WORDS} words"})
            else:
                seen[key] += 1
                kept.append((question, template))
        if kept:
            g.questions = kept
            result.groups.append(g)
    return result


def _read_and_ask(pairs: list[tuple[str, str]], documents: Any, result: Synthesis,
                  read: list[ReadDocument], answers: str) -> list[Group]:
    titles = _titles(documents)
    for text, source in pairs:
        doc = read_document(text, source=source, title=titles.get(source, ""))
        read.append(doc)
        result.documents += 1
        result.sentences += len(doc.sentences)
        result.clauses += sum(len(s.clauses) for s in doc.sentences)
    kinds = name_kinds([s.text for doc in read for s in doc.sentences])
    groups: list[Group] = []
    for doc in read:
        groups += _clause_groups(doc, kinds, answers) + _table_groups(doc) + _faq_groups(doc)
    return groups + _entity_groups(read)


def _titles(documents: Any) -> dict[str, str]:
    out = {}
    for d in documents if not isinstance(documents, (str, bytes)) else []:
        source, title = getattr(d, "source", None), getattr(d, "title", None)
        if isinstance(source, str) and isinstance(title, str):
            out[source] = title
    return out
