"""The answerable spans of a clause: what a question about it can ask for.

For a clause `subject verb rest` (kinfuse.data.synth.text.Clause) these are (Lewis et al. 2019
call them cloze answers; Mecklenburg et al. 2024 find that asking for every fact beats
sampling text):

- in the rest: each noun phrase after the verb or after a preposition: dates, quantities
  ("640 GB of GPU memory"), names ("3rd Gen AMD EPYC processors"), quoted titles and plain
  terms ("knowledge bases");
- the subject itself, when it is a name or a noun phrase with content: the answer of the
  reverse questions ("What matches and links related records?").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .text import (
    AUXILIARIES,
    CONJUNCTIONS,
    DETERMINERS,
    NEGATIONS,
    POSSESSIVES,
    PREPOSITIONS,
    PRONOUNS,
    SUBORDINATORS,
    Clause,
    Token,
    is_name_token,
    is_noun,
    is_plural_noun,
    join,
    lemmas,
    verb_forms,
)

MONTHS = ("january february march april may june july august september october november december "
          "jan feb mar apr jun jul aug sep sept oct nov dec").split()
WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty sixty "
    "hundred hundreds thousand thousands million millions billion billions dozen dozens".split()
)
YEAR = re.compile(r"(?:19|20)\d\d$")
# Units after a number that measure an amount ("how much"), not count things ("how many").
_MASS_UNITS = frozenset(
    "gb tb mb kb pb gib tib mib kib gbps mbps tbps kbps ghz mhz khz hz w kw mw watts watt v volts ms seconds second "
    "minutes minute hours hour days day weeks week months month years year percent % times x mm cm m km kg g lb lbs "
    "inches inch feet ft miles mph degrees c f bytes bits tokens".split()
)
TIME_UNITS = frozenset("ms seconds second minutes minute hours hour days day weeks week months month years year".split())
# Prepositions whose object a "Where" question asks for, when it is a name.
PLACE_PREPS = frozenset(("in", "at"))
# Objects of fixed phrases ("by default", "by hand"), never answers.
_IDIOMS = frozenset("default hand example instance contrast comparison itself themselves time way far least most "
                    "all once now first last course fact general particular practice addition turn".split())
# Nouns too general to be the answer to a question about a fact ("linked to each other").
_GENERIC = frozenset("other others thing things lot lots way ways part parts one ones kind sort type place people "
                     "someone something anything everything nothing story news day week year time times matter "
                     "point reason fact case end start idea use work job".split())


def _vague(word: str) -> bool:
    """A one-word answer that says nothing on its own: a generic noun, or an adjective ("good")."""
    readings = lemmas(word)
    return word in _GENERIC or word in _IDIOMS or (bool(readings) and "NOUN" not in readings)


# Subjects a question cannot name: "What does it use?" asks nothing.
VAGUE_SUBJECTS = frozenset("i we me us it they he she this that these those there here".split())



@dataclass
class Span:
    """An answer span in a clause: `core` is the answer, `phrase` what the question removes."""

    kind: str  # "date", "quantity", "name", "term", "subject"
    core: tuple[int, int]
    phrase: tuple[int, int]
    prep: str = ""  # the preposition before it, if any
    measured: str = ""  # quantities: what is measured ("high-bandwidth GPU memory")
    head: str = ""  # the common noun a name or number qualifies ("processors", "GPUs")
    counted: bool = False  # a number of things ("192 vCPUs"): "how many"
    label: str = ""  # the noun a number names ("port 9410", "version 2.1"): "what port"
    every: bool = False  # a period ("every 30 minutes"): "how often"


# -- spans ---------------------------------------------------------------------------------


_NUMBER = re.compile(r"[$€£]?\d[\d,]*(?:\.\d+)?(?:%|\+|[a-z]{1,4})?$")
_ORDINAL = re.compile(r"\d+(?:st|nd|rd|th)$")


def _is_number(tok: Token) -> bool:
    t = tok.lower
    return (bool(_NUMBER.match(t)) and not _ORDINAL.match(t)) or t in NUMBER_WORDS


def _np_word(tok: Token, first: bool) -> bool:
    """Can this token continue a noun phrase? (not a verb, preposition, conjunction, clause word)"""
    low = tok.lower
    if tok.text in ("-", "–", "'s", "’s", "/", "&", "+") or _is_number(tok) or is_name_token(tok, first):
        return True
    if not tok.text[:1].isalnum():
        return False
    if low in PREPOSITIONS | CONJUNCTIONS | SUBORDINATORS | AUXILIARIES.keys() | NEGATIONS | \
            {"that", "which", "who", "whom", "whose", "where", "when", "to", "than", "there", "then", "also"}:
        return False
    if low in DETERMINERS or low in POSSESSIVES:
        return first
    readings = lemmas(low)
    if not readings:
        return True  # unknown word: jargon, product words
    tags = {t for _, t in verb_forms(low)}
    if "NOUN" in readings or "ADJ" in readings or "PROPN" in readings:
        if readings.keys() <= {"VERB"}:
            return False
        # a participle that is not also an adjective starts a reduced clause ("records held in ...")
        return not (("VBN" in tags or "VBG" in tags) and "ADJ" not in readings and "NOUN" not in readings)
    if "ADV" in readings:
        return low.endswith("ly") is False and "ADJ" in readings
    return False


def noun_phrase_end(tokens: list[Token], start: int, end: int) -> int:
    """End (exclusive) of the noun phrase starting at `start`; `start` when there is none."""
    i = start
    while i < end and _np_word(tokens[i], i == start or tokens[i - 1].lower in DETERMINERS | POSSESSIVES):
        i += 1
    # "and"/"or"/"for"/"of" between two names joins them ("NVLink and NVSwitch", "Agents for Amazon Bedrock")
    while i + 1 < end and is_name_token(tokens[i + 1], False) and i > start and is_name_token(tokens[i - 1], False) \
            and (tokens[i].lower in ("and", "or", "&") or (tokens[i].lower in ("for", "of")
                                                          and tokens[i - 1].text.istitle())):  # not "80 GB of HBM3"
        i += 1
        while i < end and _np_word(tokens[i], False):
            i += 1
    while i > start and tokens[i - 1].text in ("-", "–", "/", "&", "+", "'s", "’s"):
        i -= 1
    return i


def _content(tokens: list[Token], span: tuple[int, int]) -> list[Token]:
    return [t for t in tokens[span[0] : span[1]] if t.text[:1].isalnum() and t.lower not in DETERMINERS | PRONOUNS]


def classify(tokens: list[Token], span: tuple[int, int], text: str) -> str:
    words = tokens[span[0] : span[1]]
    lows = [t.lower for t in words]
    if any(w.rstrip(".") in MONTHS for w in lows) and any(re.match(r"\d", w) for w in lows) \
            or (len(words) <= 2 and any(YEAR.match(w) for w in lows)) or any(w in WEEKDAYS for w in lows):
        return "date"
    if any(_is_number(t) for t in words):
        return "quantity"
    if any(is_name_token(t, span[0] == 0 and i == 0) for i, t in enumerate(words)) or \
            (len(words) >= 2 and words[0].text in ("\"", "“")):
        return "name"
    return "term"


def _trailing_of(tokens: list[Token], end: int, limit: int) -> int:
    """End of an "of <noun phrase>" right after `end` ("640 GB | of high-bandwidth memory")."""
    if end < limit and tokens[end].lower == "of":
        np_end = noun_phrase_end(tokens, end + 1, limit)
        if np_end > end + 1:
            return np_end
    return end


def spans_in_rest(clause: Clause) -> list[Span]:
    """Noun phrases after the verb and after each preposition in the rest of the clause, up to
    the first clause boundary (a comma, a relative or subordinate clause, a new verb)."""
    tokens, (r0, r1) = clause.tokens, clause.rest
    stop = r1
    for i in range(r0, r1):  # the clause's own material ends at a subordinate clause or a semicolon
        low = tokens[i].lower
        nxt = tokens[i + 1].lower if i + 1 < r1 else ""
        if tokens[i].text in (";", ":", "(", ")", "—") or (tokens[i].text == "," and nxt and (
                nxt in SUBORDINATORS | {"which", "who", "while", "whereas", "and", "but", "so", "even", "then"}
                or nxt.endswith("ing") or {t for _, t in verb_forms(nxt)} & {"VBZ", "VBD"})):
            stop = i
            break
        if low in ("which", "who", "because", "while", "whereas", "so", "although") and i > r0:
            stop = i
            break
        prev = tokens[i - 1]
        if i > r0 + 1 and prev.text[:1].isalnum() and prev.lower not in PREPOSITIONS | DETERMINERS:
            tags = {t for _, t in verb_forms(low)}
            # "... data that you registered", "tables backed by ...", "... and are aimed at": a new clause
            if low == "that" or (tags & {"VBN", "VBG"} and "NOUN" not in lemmas(low) and "ADJ" not in lemmas(low)) \
                    or (low in ("and", "or", "but") and i + 1 < r1 and (tokens[i + 1].lower in AUXILIARIES or
                        {t for _, t in verb_forms(tokens[i + 1].lower)} & {"VBZ", "VBD"}
                        and "NOUN" not in lemmas(tokens[i + 1].lower))):
                stop = i
                break
    out: list[Span] = []
    i = r0
    if r0 + 2 < stop and tokens[r0].lower in ("and", "or") and verb_forms(tokens[r0 + 1].lower):
        i = r0 = r0 + 2  # "matches and links | related records": the object of both verbs
    while i < stop:
        tok = tokens[i]
        prep = ""
        start = i
        if tok.lower in PREPOSITIONS and tok.lower != "of":
            prep, start = tok.lower, i + 1
        elif i != r0:
            i += 1
            continue
        if prep == "to" and start < stop and any(t == "VBP" for _, t in verb_forms(tokens[start].lower)) \
                and not is_name_token(tokens[start], False) and tokens[start].lower not in DETERMINERS:
            i = start + 1  # an infinitive ("to make"), not a noun phrase
            continue
        end = noun_phrase_end(tokens, start, stop)
        if end <= start:
            i = max(i + 1, start)
            continue
        core = (start, end)
        # a date continues past its comma: "July 26, 2023"
        if end + 1 < stop and tokens[end].text == "," and YEAR.match(tokens[end + 1].text) and \
                classify(tokens, core, clause.text) == "date":
            core = end = (start, end + 2)[1] and (start, end + 2)
            end = core[1]
        kind = classify(tokens, core, clause.text)
        content = _content(tokens, core)
        if not content or (end - core[0] <= 2 and tokens[end - 1].lower in _IDIOMS) or (
                len(content) == 1 and classify(tokens, core, clause.text) == "term" and _vague(content[0].lower)):
            i = end  # "by default", "each other", "enough": part of the wording, not an answer
            continue
        if kind != "quantity":  # "the general availability | of its P5 instances" is one answer
            end = _trailing_of(tokens, end, stop)
            core = (core[0], end)
        phrase_end = end
        span = Span(kind=kind, core=core, phrase=(i if prep else start, end), prep=prep)
        # strip a leading determiner or possessive from the answer itself
        c0 = core[0]
        while c0 < core[1] - 1 and tokens[c0].lower in DETERMINERS | POSSESSIVES:
            c0 += 1
        span.core = (c0, core[1])
        if kind == "quantity" and c0 + 1 < end and not _is_number(tokens[c0]) and _is_number(tokens[c0 + 1]) \
                and tokens[c0].text[:1].islower() and "NOUN" in lemmas(tokens[c0].lower):
            span.label = tokens[c0].text  # "port 9410": a number that names, not one that measures
        elif kind == "quantity":
            if tokens[start].lower == "every":  # (a determiner, already stripped from the core)
                span.every = True
            phrase_end = _trailing_of(tokens, end, stop)
            nums = [k for k in range(c0, end) if _is_number(tokens[k])]
            after = tokens[nums[-1] + 1 : end] if nums else []
            unit = after[0].lower if after else ""
            if phrase_end > end:
                span.measured = join(tokens[end + 1 : phrase_end], clause.text)
                span.phrase = (span.phrase[0], phrase_end)
                if tokens[end + 1].lower in DETERMINERS | POSSESSIVES:  # "two of the GPUs": a count
                    span.measured = join(tokens[end + 2 : phrase_end], clause.text)
                    span.counted = True
                elif after and (unit in TIME_UNITS or (unit not in _MASS_UNITS and is_plural_noun(after[-1].text))):
                    span.measured = f"{join(after, clause.text)} of {span.measured}"  # "how many days of readings"
                    span.counted = True
            elif after and unit not in _MASS_UNITS and is_plural_noun(after[-1].text):
                span.counted = True
                span.head = join(after, clause.text)
        elif kind == "name":
            tail = [t for t in tokens[c0:end] if not is_name_token(t, False)]
            if tail and tokens[end - 1] is tail[-1] and is_noun(tail[-1].text):
                span.head = tail[-1].text
        out.append(span)
        i = max(end, i + 1)
    return out


def subject_span(clause: Clause) -> Span | None:
    """The subject as an answer (reverse questions), when it names something."""
    s0, s1 = clause.subject
    tokens = clause.tokens
    words = tokens[s0:s1]
    if not words or any(t.text == "," for t in words) or words[0].lower in PRONOUNS | {"this", "that", "these", "those"}:
        return None
    if s1 - s0 > 12 or words[0].lower in ("we", "i", "us", "you", "none", "one", "some", "many", "most", "all"):
        return None
    for k in range(s0 + 1, s1 - 1):  # "The host processors in P5": about P5, not a name of its own
        if tokens[k].lower in PREPOSITIONS and not (is_name_token(tokens[k - 1], False)
                                                    and is_name_token(tokens[k + 1], False)):
            return None
    kind = classify(tokens, (s0, s1), clause.text)
    if kind == "term" and len(_content(tokens, (s0, s1))) < 2:
        return None  # "Developers", "The company": too vague to be an answer
    c0 = s0
    while c0 < s1 - 1 and tokens[c0].lower in DETERMINERS | POSSESSIVES:
        c0 += 1
    span = Span(kind="subject", core=(c0, s1), phrase=(s0, s1))
    last = tokens[s1 - 1]
    if kind == "name" and not is_name_token(last, False) and is_noun(last.text) and s1 - 1 > c0:
        span.head = last.text
    return span
