"""A document as the question rules read it: blocks, sentences with their pronouns resolved,
list items turned into sentences, tables into key/value facts, and the document's topic.

Extracted pages (kinfuse.corpus.extract_text) put one paragraph, heading, list item or table
row per line: list items start with "- ", table cells are joined by " | ". The reading here:

- a line ending with ":" followed by list items is a lead-in: "Each instance provides:" +
  "- 2 TB of system memory" reads "Each instance provides 2 TB of system memory.";
- an item "Name – description" or "Name: description" reads "Name is description." (or
  "Name enables ..." when the description starts with a verb);
- a heading that is a question, followed by a paragraph, is a FAQ pair;
- a sentence starting with "It"/"They"/"Its"/"Their" gets the previous sentence's subject
  in their place when that subject was a name, so a sentence read alone still says what it
  is about (Physics of Language Models 3.1: a fact must be retrievable from its entity).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .text import (
    AUXILIARIES,
    DETERMINERS,
    PREPOSITIONS,
    lemmas,
    Clause,
    is_name_token,
    is_plural_noun,
    join,
    parse_clause,
    split_sentences,
    tokenize,
    verb_forms,
)

_BULLET = re.compile(r"^\s*(?:[-*•·▪‣]|\d{1,2}[.)])\s+")
_DEFINITION = re.compile(r"^(?P<term>[^–—:]{2,80}?)\s+[–—-]\s+(?P<desc>.+)$|^(?P<term2>[^:]{2,60}):\s+(?P<desc2>.+)$")
# A heading: short, no end punctuation, not a table row.
_MAX_HEADING_WORDS = 12
REPORTING_VERBS = frozenset("say claim note report explain add state argue expect believe think confirm stress "
                            "write estimate predict warn suggest insist".split())


@dataclass
class Sentence:
    text: str  # as read: pronouns resolved, list lead-ins joined
    original: str  # as written in the document
    block: int  # index of the block it came from
    clauses: list[Clause] = field(default_factory=list)
    topic: str = ""  # what its section is about: the section heading's subject, else the document's topic


@dataclass
class TableFact:
    """One cell of a table, with what it is about: "<row> | <column>" = value."""

    subject: str  # the row's key, or the table's topic for a two-column table
    attribute: str  # the column header, or the row key of a two-column table
    value: str
    line: str  # the row as written


@dataclass
class ReadDocument:
    source: str
    title: str
    topic: str  # the name the document is mostly about ("" when none stands out)
    blocks: list[tuple[str, str]]  # (kind, text): heading, paragraph, item, row, code
    sentences: list[Sentence]
    tables: list[TableFact]
    faq: list[tuple[str, str]]  # (question heading, answer paragraph)


def _kind(line: str) -> str:
    if " | " in line:
        return "row"
    if _BULLET.match(line):
        return "item"
    words = line.split()
    if len(words) <= _MAX_HEADING_WORDS and not re.search(r"[.!;,]$", line) and not line.endswith(":"):
        return "heading"
    return "paragraph"


def names_in(text: str) -> list[str]:
    """Runs of name tokens (with "for"/"of" between names): "Agents for Amazon Bedrock", "H100"."""
    tokens = tokenize(text)
    out, run = [], []
    for i, tok in enumerate(tokens):
        first = i == 0 or tokens[i - 1].text in ".!?:\"“"
        if is_name_token(tok, first):
            run.append(tok)
        elif run and tok.lower in ("for", "of", "de") and i + 1 < len(tokens) and is_name_token(tokens[i + 1], False):
            run.append(tok)
        else:
            if run:
                out.append(join(run, text))
            run = []
    if run:
        out.append(join(run, text))
    return out


def topic_of(title: str, text: str) -> str:
    """The name a document is mostly about: the commonest name in it, the title's names counted
    three times (a documentation site's product, a news story's launch); not a date."""
    counts: Counter = Counter()
    for name in names_in(text):
        counts[name] += 1
    for name in names_in(re.split(r"\s[|·–—-]\s", title)[0] if title else ""):
        counts[name] += 3
    for name in list(counts):
        if name.lower() in _DATE_WORDS or len(name) < 2:
            del counts[name]
    if not counts:
        return ""
    name, n = counts.most_common(1)[0]
    if n < 2:
        return ""
    # "Hub" most often, "Cairnbox Hub" in full: the full name says more
    fuller = [m for m in counts if m != name and re.search(rf"\b{re.escape(name)}\b", m) and len(m.split()) <= 4
              and 2 * counts[m] >= n]
    return max(fuller, key=lambda m: (counts[m], -len(m))) if fuller else name


_KIND_AFTER = re.compile(r"^(?:,\s*|\s+(?:is|are|was|were)\s+)(?:a|an|the)\s+((?:[\w-]+\s+){0,4}?)([a-z][a-z-]+)"
                         r"(?=\s+(?:that|which|who|for|to|of|designed|built|from|with|in|on)\b|[,.;:]|$)")


def name_kinds(sentences: list[str]) -> dict[str, str]:
    """What names are, from "X is a new service ..." and "X, a capability that ...": the head noun
    (with a noun before it: "instance family"), so reverse questions can ask "Which service ...?"."""
    kinds: dict[str, str] = {}
    for sentence in sentences:
        for name in names_in(sentence):
            at = sentence.find(name)
            m = _KIND_AFTER.match(sentence[at + len(name):]) if at >= 0 else None
            if not m or name in kinds:
                continue
            head = m.group(2)
            before = m.group(1).split()
            if "NOUN" not in lemmas(head) or head in ("one", "way", "part", "kind", "sort", "lot"):
                continue
            if before and before[-1].islower() and "NOUN" in lemmas(before[-1]) and "ADJ" not in lemmas(before[-1]):
                head = f"{before[-1]} {head}"
            kinds[name] = head
    return kinds


def _clauses(sentence: str) -> list[Clause]:
    """The sentence's clauses: split at semicolons and at ", and/but/so/while ..." where what
    follows reads as a clause of its own; "AWS says P5 can ..." is read as "P5 can ..."."""
    parts = [p.strip() for p in re.split(r";\s+", sentence) if p.strip()]
    out: list[Clause] = []
    for part in parts:
        pieces = [part]
        for m in re.finditer(r",\s+(?:and|but|so|while|whereas|although|because)\s+", part):
            tail = part[m.end():]
            if parse_clause(tail) is not None:
                pieces = [part[: m.start()] + ".", tail]
                break
        for k, piece in enumerate(pieces):
            if k and out and re.match(r"(?:it|they)\b", piece, re.I):  # "..., and it costs $389": the same subject
                piece = out[-1].words(out[-1].subject) + piece[piece.index(" "):]
            if _imperative(piece):  # "Press and hold the Sprig button ...": asked as "What do you press ...?"
                piece = "You " + piece[:1].lower() + piece[1:]
            clause = parse_clause(piece)
            if clause is None:
                continue
            if clause.lemma in REPORTING_VERBS and clause.aux is None:
                said = clause.words(clause.rest)
                said = re.sub(r"^that\s+", "", said)
                inner = parse_clause(said[:1].upper() + said[1:] + ".") if said else None
                if inner is not None:
                    out.append(inner)
                continue
            out.append(clause)
    return out


def _imperative(sentence: str) -> bool:
    """An instruction: it opens with a verb in its bare form ("Press", "Run", "Allow")."""
    tokens = tokenize(sentence)
    if len(tokens) < 3 or not tokens[0].text[:1].isupper() or is_name_token(tokens[0], True):
        return False
    first, second = tokens[0].lower, tokens[1].lower
    if not any(t == "VBP" for _, t in verb_forms(first)) or is_plural_noun(tokens[0].text):
        return False
    if second in AUXILIARIES or second in PREPOSITIONS - {"and"} or any(
            t in ("VBZ", "VBD") for _, t in verb_forms(second)) and "NOUN" not in lemmas(second):
        return False  # "Records are ...", "Data in ...": a noun subject, not an instruction
    return "NOUN" not in lemmas(first) or second in DETERMINERS | {"and", "it", "them", "your", "this", "that"} \
        or is_name_token(tokens[1], False)


def _as_sentence(item: str) -> str | None:
    """A list item "Term – description" as a sentence, or None when it is not one."""
    m = _DEFINITION.match(item)
    if not m:
        return None
    term = (m.group("term") or m.group("term2") or "").strip()
    desc = (m.group("desc") or m.group("desc2") or "").strip().rstrip(".")
    if not term or not desc or len(term.split()) > 8:
        return None
    first = desc.split()[0].lower()
    verb_first = any(t in ("VBZ",) for _, t in verb_forms(first))
    if verb_first:
        return f"{term} {desc}."
    be = "are" if is_plural_noun(term.split()[-1]) else "is"
    return f"{term} {be} {desc[:1].lower() + desc[1:] if not is_name_token(tokenize(desc)[0], True) else desc}."


def read_document(text: str, source: str = "", title: str = "") -> ReadDocument:
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    blocks = [(_kind(ln), ln) for ln in lines]
    for b, (kind, line) in enumerate(blocks):  # "1. Agents for Amazon Bedrock" over a paragraph: a heading
        item = _BULLET.sub("", line)
        if kind == "item" and b + 1 < len(blocks) and blocks[b + 1][0] == "paragraph" and \
                (b == 0 or blocks[b - 1][0] != "item") and _kind(item) == "heading":
            blocks[b] = ("heading", item)
    topic = topic_of(title, text)
    sentences: list[Sentence] = []
    tables: list[TableFact] = []
    faq: list[tuple[str, str]] = []
    lead = term = heading_name = ""
    section_topic = topic
    last_subject = ("", False)  # (text, plural) of the previous sentence's name subject
    header: list[str] | None = None
    caption = ""
    for b, (kind, line) in enumerate(blocks):
        if kind == "row":
            cells = [c.strip() for c in line.split(" | ")]
            prev_kind = blocks[b - 1][0] if b else ""
            if prev_kind != "row":  # a new table: the line before names it
                caption = blocks[b - 1][1] if b and prev_kind in ("heading", "paragraph") else ""
                nxt = blocks[b + 1] if b + 1 < len(blocks) else ("", "")
                header = cells if (len(cells) > 2 and nxt[0] == "row") or _looks_like_header(cells, nxt) else None
                if header is not None:
                    continue
            tables.extend(_table_facts(cells, header, caption, topic, line))
            continue
        if kind == "heading":
            lead = ""
            section_topic = _heading_topic(line) or topic
            nxt = blocks[b + 1] if b + 1 < len(blocks) else ("", "")
            if line.endswith("?") and nxt[0] == "paragraph":
                faq.append((line, nxt[1]))
            elif nxt[0] == "paragraph" and len(line.split()) <= 4 and _is_definition(line, nxt[1]):
                term = line  # a definition list: "listen_port" over "The TCP port ... Default: 7718."
                continue
            dated = _DATED_HEADING.match(line)
            if dated:  # "Firmware 3.4.0 — 11 March 2024": a release and its date
                texts = [f"{dated.group('name')} came out on {dated.group('date')}."]
                heading_name = dated.group("name")
            else:
                heading_name = " ".join(names_in(line)) if names_in(line) == [line] else ""
                term = ""
                continue
        elif kind == "item":
            item = _BULLET.sub("", line).strip()
            as_sentence = _as_sentence(item)
            fragment = len(item.split()) <= 12 and not re.search(r"[.!?](?:\s|$)", item)  # no sentence of its own
            if lead and not as_sentence and fragment:
                body = lead.rstrip(":").rstrip()
                joined = f"{body} {item[:1].lower() + item[1:] if not is_name_token(tokenize(item)[0], True) else item}"
                texts = [joined.rstrip(".") + "."]
            elif as_sentence:
                texts = [as_sentence]
            else:
                texts = split_sentences(item)
        elif kind == "paragraph":
            texts = split_sentences(line)
            lead = texts.pop() if texts and texts[-1].endswith(":") else ""  # "Each instance provides:"
            if term:  # the description of a defined term: its first fragment says what it is
                texts = _define(term, texts, tables)
                term = ""
            if heading_name and texts and re.match(r"This (?:is|was)\b", texts[0]):
                texts[0] = heading_name + texts[0][4:]  # "This is the current firmware" under its heading
            heading_name = ""
        if kind != "item" or (b and blocks[b - 1][0] != "item"):
            last_subject = ("", False)  # "It" is resolved within a paragraph (or a list) only
        for original in texts:
            resolved, last_subject = _resolve(_DATELINE.sub("", original), last_subject)
            resolved = _resolve_definite(resolved, section_topic)
            sentence = Sentence(text=resolved, original=original, block=b, clauses=_clauses(resolved),
                                topic=section_topic)
            sentences.append(sentence)
            subj = _name_subject(sentence.clauses)
            if subj:
                last_subject = subj
    return ReadDocument(source=source, title=title, topic=topic, blocks=blocks, sentences=sentences, tables=tables,
                        faq=faq)


_DATED_HEADING = re.compile(
    r"^(?P<name>.{2,60}?)\s*(?:[—–-]|,|\()\s*(?P<date>(?:\d{1,2} )?(?:January|February|March|April|May|June|July|"
    r"August|September|October|November|December)(?: \d{1,2},?)? \d{4})\)?$")
_LABELLED = re.compile(r"^(?P<label>[A-Z][\w ]{1,30}):\s+(?P<value>[^.;]{1,60})\.?$")


def _is_definition(term: str, paragraph: str) -> bool:
    """A term over its description: an identifier (listen_port, E-104), or a paragraph opening
    with a noun phrase that has no verb ("The TCP port for ...") or a labelled value."""
    first = (split_sentences(paragraph) or [""])[0]
    if not first:
        return False
    if _LABELLED.match(first) or re.fullmatch(r"[\w./-]*[_\d/.-][\w./-]*", term):
        return True
    return first.split()[0].lower() in ("a", "an", "the") and parse_clause(first) is None


def _define(term: str, sentences: list[str], tables: list[TableFact]) -> list[str]:
    """The sentences of a term's description: a leading fragment becomes "<term> is <fragment>",
    "Default: 7718." a table fact about the term, the rest stay as they are."""
    out = []
    for k, sentence in enumerate(sentences):
        labelled = _LABELLED.match(sentence)
        if labelled:
            tables.append(TableFact(subject=term, attribute=labelled.group("label"), value=labelled.group("value"),
                                    line=sentence))
            out.append(f"The {labelled.group('label').lower()} of {term} is {labelled.group('value')}.")
        elif k == 0 and parse_clause(sentence) is None:
            body = sentence.rstrip(".")
            body = body[:1].lower() + body[1:] if body.split()[0].lower() in ("a", "an", "the") else body
            out.append(f"{term} is {body}." if body.split()[0].lower() in ("a", "an", "the") else f"{term}: {body}.")
        else:
            out.append(sentence)
    return out


def _looks_like_header(cells: list[str], nxt: tuple[str, str]) -> bool:
    """A first row of short labels with no digits over rows that hold values ("Setting | Default")."""
    return nxt[0] == "row" and all(len(c.split()) <= 4 and not re.search(r"\d", c) for c in cells) and \
        any(re.search(r"\d", c) for c in nxt[1].split(" | "))


_GENERIC_HEADERS = frozenset("value values details description spec specification specifications notes info "
                             "information".split())


def _table_facts(cells: list[str], header: list[str] | None, caption: str, topic: str, line: str) -> list[TableFact]:
    if len(cells) < 2 or not cells[0]:
        return []
    if header and len(header) == 2 and header[1].lower() in _GENERIC_HEADERS:
        header = None  # "Specification | Value": the rows are key/value facts about the table's subject
    if header is None or len(header) != len(cells):
        if len(cells) != 2:
            return []
        subject = re.sub(r"\s+(?:at a glance|specifications?|specs|overview|summary)$", "", caption, flags=re.I)
        subject = subject if subject and len(subject.split()) <= 8 else topic
        return [TableFact(subject=subject, attribute=cells[0], value=cells[1], line=line)] if subject else []
    return [TableFact(subject=cells[0], attribute=header[j], value=cells[j], line=line)
            for j in range(1, len(cells)) if cells[j] and cells[j] not in ("-", "—")]


_DATE_WORDS = frozenset("january february march april may june july august september october november december "
                        "monday tuesday wednesday thursday friday saturday sunday".split())
# A dateline before the first sentence of a news story: "NEW YORK — ", "NEW YORK, July 26, 2023 /Wire/ -- ".
_DATELINE = re.compile(r"^[A-Z][A-Z .'-]{2,40}(?:,[^—–/]{0,40})?\s*(?:/[^/]{1,40}/)?\s*(?:—|–|--)\s+")
_HEADING_LEAD = re.compile(r"^(?:\d{1,2}[.)]\s*|(?:The|A|An)\s+)+")


def _heading_topic(heading: str) -> str:
    """The subject of a section heading that names something: "3. A vector engine for Amazon
    OpenSearch Serverless" -> "vector engine for Amazon OpenSearch Serverless"; "" otherwise."""
    text = _HEADING_LEAD.sub("", heading).strip().rstrip(":")
    if heading.endswith("?") or len(text.split()) > 8 or not names_in(text):
        return ""
    if parse_clause(text + ".") is not None:  # "P5 instances are enormous": a statement, about its name
        return max(names_in(text), key=len)
    return text


def _resolve_definite(sentence: str, topic: str) -> str:
    """"The engine inherits ..." in a section about the "vector engine for Amazon OpenSearch
    Serverless": the section's subject in full, so the sentence says what it is about."""
    m = re.match(r"^The ([a-z]+)\b", sentence)
    if not m or not topic or not re.search(rf"\b{m.group(1)}\b", topic, re.I) or topic.lower().startswith("the "):
        return sentence
    named = topic if topic[:1].isupper() and topic.split()[0] not in ("For", "In", "On") else "the " + topic
    return _cap(named) + sentence[m.end():]


_PRONOUN_START = re.compile(r"^(It|They|Its|Their)\b(?!['’])")


def _resolve(sentence: str, last: tuple[str, bool]) -> tuple[str, tuple[str, bool]]:
    """`sentence` with a leading It/They/Its/Their replaced by the previous name subject."""
    name, plural = last
    m = _PRONOUN_START.match(sentence)
    if not m or not name:
        return sentence, last
    word = m.group(1)
    if (word in ("It", "Its")) == plural:  # number disagrees: leave it
        return sentence, last
    if word in ("Its", "Their"):
        owner = name + ("'" if name.endswith("s") else "'s")
        return _cap(owner) + sentence[m.end():], last
    return _cap(name) + sentence[m.end():], last


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _name_subject(clauses: list[Clause]) -> tuple[str, bool] | None:
    """The first clause's subject, when it is a name (for resolving the next sentence's "It")."""
    if not clauses:
        return None
    clause = clauses[0]
    s0, s1 = clause.subject
    tokens = clause.tokens[s0:s1]
    if not tokens or any(t.lower in PREPOSITIONS - {"for", "of"} for t in tokens):
        return None
    if not any(is_name_token(t, k == 0 and s0 == 0) for k, t in enumerate(tokens)):
        return None
    text = clause.words(clause.subject)
    if tokens[0].lower in ("the", "a", "an", "each", "every"):
        text = text.split(" ", 1)[1] if " " in text else text
        text = "the " + text if tokens[0].lower == "the" else text
    plural = clause.tag == "VBP" or is_plural_noun(tokens[-1].text)
    return text, plural
