"""Questions about one clause: every answerable span, asked several ways.

For a clause `subject verb rest` (kinfuse.data.synth.text.Clause) the rules find the spans a
question can ask for (Lewis et al. 2019 call them cloze answers; Mecklenburg et al. 2024
find that asking for every fact beats sampling text):

- in the rest: each noun phrase after the verb or after a preposition: dates, quantities
  ("640 GB of GPU memory"), names ("3rd Gen AMD EPYC processors"), quoted titles and plain
  terms ("knowledge bases");
- the subject itself, when it is a name or a noun phrase with content: these are the
  reverse questions ("What matches and links related records?"), whose answer is the
  entity the forward questions start from.

Each span is asked in several wordings: a direct wh-question with auxiliary inversion or
do-support, an embedded one ("Do you know how much ...?", "Tell me ..."), and for
quantities "What is the <thing> of <subject>?". A question names what it is about: when the
clause has no name in it, its section's or document's topic is added ("For Quillstore, ...").
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
    inflect,
    is_common_word,
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
_YEAR = re.compile(r"(?:19|20)\d\d$")
# Units after a number that measure an amount ("how much"), not count things ("how many").
_MASS_UNITS = frozenset(
    "gb tb mb kb pb gib tib mib kib gbps mbps tbps kbps ghz mhz khz hz w kw mw watts watt v volts ms seconds second "
    "minutes minute hours hour days day weeks week months month years year percent % times x mm cm m km kg g lb lbs "
    "inches inch feet ft miles mph degrees c f bytes bits tokens".split()
)
_TIME_UNITS = frozenset("ms seconds second minutes minute hours hour days day weeks week months month years year".split())
# Prepositions whose object a "Where" question asks for, when it is a name.
_PLACE_PREPS = frozenset(("in", "at"))
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
_VAGUE_SUBJECTS = frozenset("i we me us it they he she this that these those there here".split())
_DATE_PREPS = frozenset(("on", "in", "at", "by", "during", "since", "until", "before", "after", "from"))


# Other verbs for the same act, so the same fact is also asked in words the sentence did not use
# (a user asks "Which GPUs power P5?" of a page that says "P5 is built around H100 GPUs").
SYNONYMS: dict[str, tuple[str, ...]] = {
    "use": ("rely on", "employ"), "have": ("include", "come with"), "provide": ("offer", "supply"),
    "offer": ("provide", "give"), "give": ("provide", "offer"), "support": ("allow", "handle"),
    "allow": ("let", "permit"), "let": ("allow",), "enable": ("allow", "let"), "store": ("keep", "hold"),
    "keep": ("store", "retain"), "hold": ("store", "keep"), "contain": ("hold", "include"),
    "include": ("contain", "come with"), "build": ("create", "make"), "create": ("build", "make"),
    "make": ("create", "build"), "run": ("execute", "operate"), "need": ("require",), "require": ("need",),
    "show": ("display",), "display": ("show",), "send": ("deliver", "transmit"), "deliver": ("provide", "offer"),
    "connect": ("link",), "link": ("connect", "join"), "match": ("pair up",), "find": ("locate",),
    "announce": ("unveil", "introduce"), "unveil": ("announce", "introduce"), "introduce": ("announce", "unveil"),
    "launch": ("release", "introduce"), "release": ("launch", "ship"), "reduce": ("cut", "lower"),
    "cut": ("reduce", "lower"), "increase": ("raise", "boost"), "add": ("introduce",), "help": ("assist",),
    "describe": ("explain",), "explain": ("describe",), "generate": ("produce", "create"), "write": ("produce",),
    "power": ("drive",), "call": ("invoke",), "invoke": ("call",), "set": ("configure",), "configure": ("set",),
    "mean": ("indicate", "signal"), "indicate": ("mean", "signal"), "handle": ("manage", "process"),
    "manage": ("handle",), "process": ("handle",), "receive": ("get",), "get": ("receive", "obtain"),
    "perform": ("carry out", "execute"), "execute": ("run", "perform"), "combine": ("mix", "merge"),
    "mix": ("combine",), "remove": ("delete", "drop"), "delete": ("remove",), "drop": ("remove",),
    "update": ("upgrade",), "upgrade": ("update",), "fix": ("repair", "correct"), "start": ("begin",),
    "stop": ("halt",), "check": ("verify", "inspect"), "read": ("load",), "measure": ("track",),
    "track": ("monitor",), "monitor": ("track", "watch"), "watch": ("monitor",), "report": ("send",),
    "cost": ("sell for",), "accept": ("take",), "return": ("give back",), "carry": ("hold",),
    "attach": ("add",), "turn": ("convert",), "convert": ("turn",), "scale": ("grow",), "list": ("show",),
}


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


@dataclass
class Question:
    question: str
    answer_span: str  # the answer's key words, which the answer sentence contains
    kind: str  # span kind
    template: str  # which wording


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
            or (len(words) <= 2 and any(_YEAR.match(w) for w in lows)) or any(w in WEEKDAYS for w in lows):
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
        if end + 1 < stop and tokens[end].text == "," and _YEAR.match(tokens[end + 1].text) and \
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
                elif after and (unit in _TIME_UNITS or (unit not in _MASS_UNITS and is_plural_noun(after[-1].text))):
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


# -- rendering -----------------------------------------------------------------------------


def _subject_text(clause: Clause) -> str:
    s0, s1 = clause.subject
    words = clause.words(clause.subject)
    first = clause.tokens[s0]
    if not is_name_token(first, True) and first.text[:1].isupper() and not first.text.isupper():
        words = words[:1].lower() + words[1:]
    return words


def _tail(clause: Clause, start: int, end: int) -> str:
    return join(clause.tokens[start:end], clause.text) if end > start else ""


def _intro_suffix(clause: Clause) -> str:
    """A short prepositional intro ("At the summit,") moves to the end of the question."""
    i0, i1 = clause.intro
    if i1 - i0 == 0 or i1 - i0 > 8 or clause.tokens[i0].lower not in PREPOSITIONS:
        return ""
    text = clause.words(clause.intro)
    first = clause.tokens[i0]
    return " " + (text[:1].lower() + text[1:] if not is_name_token(first, True) else text)


def _verb_after_aux(clause: Clause) -> str:
    """The verb group without its inverted auxiliary: "is built" -> "built", "can choose" -> "choose"."""
    v0, v1 = clause.verb
    return join([t for t in clause.tokens[v0:v1] if t is not clause.tokens[clause.aux]], clause.text)


def _do_form(tag: str) -> str:
    return {"VBZ": "does", "VBD": "did"}.get(tag, "do")


def _adverbs(clause: Clause) -> str:
    v0, _ = clause.verb
    return " ".join(t.text for t in clause.tokens[v0 : clause.main] if t.lower not in AUXILIARIES)


def _finish(text: str) -> str:
    text = re.sub(r"\s+([,.?!;:])", r"\1", " ".join(text.split()))
    text = re.sub(r",\s*\?", "?", text).rstrip(" ,;:")
    return text[:1].upper() + text[1:]


def inverted(clause: Clause, wh: str, rest: str) -> str:
    """`wh` + auxiliary or do-support + subject + the rest of the verb group + `rest`."""
    subj = _subject_text(clause)
    if clause.aux is not None:
        aux = clause.tokens[clause.aux].text.lower()
        return _finish(f"{wh} {aux} {subj} {_verb_after_aux(clause)} {rest}{_intro_suffix(clause)}?")
    if clause.lemma == "be":  # a bare copula inverts itself: "What is the heart of P5?"
        return _finish(f"{wh} {clause.tokens[clause.main].text.lower()} {subj} {rest}{_intro_suffix(clause)}?")
    adv = _adverbs(clause)
    # a coordinated verb follows the main one into its base form: "does X match and link ..."
    m = re.match(r"^(and|or) (\w+)\b", rest)
    if m and (base := [lm for lm, t in verb_forms(m.group(2).lower()) if t in ("VBZ", "VBD")]):
        rest = f"{m.group(1)} {base[0]}{rest[m.end():]}"
    # later in the clause, a verb of the main verb's form that cannot be a noun: "does the C3
    # watch the solution and correct it"
    def base_form(m: re.Match) -> str:
        word = m.group(2).lower()
        forms = [lm for lm, t in verb_forms(word) if t == clause.tag]
        return f"{m.group(1)} {forms[0]}" if forms and "NOUN" not in lemmas(word) else m.group(0)
    rest = re.sub(r"\b(and|or) ([a-z]+)\b", base_form, rest)  # (a base form is not clause.tag: no rerun)
    return _finish(f"{wh} {_do_form(clause.tag)} {subj} {adv} {clause.lemma} {rest}{_intro_suffix(clause)}?")


def _other_verb(lemma: str, tag: str, seed: str) -> str | None:
    """A synonym of `lemma` inflected as `tag` (its first word: "relies on"), picked by `seed`."""
    options = SYNONYMS.get(lemma)
    if not options:
        return None
    first, *more = options[sum(map(ord, seed)) % len(options)].split()
    return " ".join([first if tag in ("VB", "VBP") else inflect(first, tag), *more])


def with_other_verb(clause: Clause, question: str, reverse: bool = False) -> str | None:
    """`question` with the clause's main verb swapped for a synonym, or None when it has none."""
    if clause.lemma in ("be", "do"):
        return None
    main = clause.tokens[clause.main].text
    if clause.aux is not None:  # "are powered by" -> "are driven by": the participle or bare verb after it
        form, tag = main, next((t for lm, t in verb_forms(main.lower()) if lm == clause.lemma and
                                t in ("VBN", "VBG", "VBP")), "")
    elif reverse:  # "What matches ...": the verb as the subject question wrote it
        written = _singular_verb_group(clause).split()
        form = next((w for w in written if w.lower() in (main.lower(), inflect(clause.lemma, "VBZ"))), None)
        tag = "VBZ" if form and form.lower() != main.lower() else clause.tag
    else:  # do-support: the bare lemma
        form, tag = clause.lemma, "VB"
    if not form or not tag:
        return None
    other = _other_verb(clause.lemma, "VB" if tag == "VBP" else tag, clause.text)
    if not other:
        return None
    swapped, n = re.subn(rf"\b{re.escape(form)}\b", other, question, count=1)
    return swapped if n else None


def embedded(clause: Clause, wh: str, rest: str) -> str:
    """The declarative order used after "Do you know ..." / "Tell me ...": wh + subject + verb + rest."""
    verb = clause.words(clause.verb)
    return " ".join(f"{wh} {_subject_text(clause)} {verb} {rest}{_intro_suffix(clause)}".split())


def _singular_verb_group(clause: Clause) -> str:
    """The verb group agreeing with a singular "What": "are powered" -> "is powered", "use" -> "uses"."""
    v0, v1 = clause.verb
    words = [t.text for t in clause.tokens[v0:v1]]
    first = next(i for i, t in enumerate(clause.tokens[v0:v1]) if t.lower not in
                 ("also", "now", "still", "already", "only", "just", "even", "first", "then", "later", "currently",
                  "soon", "often", "usually", "always", "never", "generally", "mainly", "mostly", "typically",
                  "recently", "newly"))
    low = words[first].lower()
    if clause.tag == "VBP":
        words[first] = {"are": "is", "have": "has", "do": "does", "were": "was"}.get(low) or inflect(clause.lemma, "VBZ")
    return " ".join(words)


def _wh_for(span: Span, clause: Clause, kinds: dict[str, str]) -> list[str]:
    """Wh-phrases for a span in the rest, most specific first."""
    if span.kind == "date":
        years_only = all(_YEAR.match(t.text) or not t.text[:1].isalnum()
                         for t in clause.tokens[span.core[0] : span.core[1]])
        return ["In what year" if years_only else "When", "On what date" if not years_only else "When"]
    if span.kind == "quantity":
        if span.label:
            return [f"What {span.label}", f"Which {span.label}"]
        if span.every:
            return ["How often"]
        unit = next((t.lower for t in clause.tokens[span.core[0]:span.core[1]] if t.lower in _TIME_UNITS), "")
        if unit and span.prep in ("for", "within", "after", "in", "") and not span.measured:
            return ["How long", "How much time"]  # "hold the button for three seconds"
        if span.counted and (span.measured or span.head):
            return [f"How many {span.measured or span.head}"]
        if span.measured:
            return [f"How much {span.measured}"]
        return ["How much", "What"]
    if span.kind == "name" and not span.head:
        kind = kinds.get(re.sub(r"^(?:the|The)\s+", "", join(clause.tokens[span.core[0]:span.core[1]], clause.text)))
        if kind:
            return ["What", f"Which {kind}"]
    if span.head and is_plural_noun(span.head):
        return [f"Which {span.head}", "What"]
    if span.head:
        return ["What", f"Which {span.head}"]
    return ["What"]


def questions_for(clause: Clause, topic: str = "", kinds: dict[str, str] | None = None
                  ) -> list[tuple[Span, list[Question]]]:
    """Every answerable span of the clause with its questions (none for a negated clause).
    `kinds` maps names to what they are ("AWS Entity Resolution" -> "service"), so a question
    whose answer is that name can ask "Which service ...?" as a user would."""
    kinds = kinds or {}
    if clause.negated or clause.tokens[clause.subject[0]].lower in _VAGUE_SUBJECTS:
        return []
    tokens, text = clause.tokens, clause.text
    out: list[tuple[Span, list[Question]]] = []
    needs_topic = topic and not any(is_name_token(t, i == 0) for i, t in enumerate(tokens)) and \
        topic.lower() not in text.lower()
    context = f"For {topic}, " if needs_topic else ""
    i0, i1 = clause.intro
    if 0 < i1 - i0 <= 12 and tokens[i0].lower in ("if", "when", "once", "after", "before", "while", "unless", "until"):
        condition = clause.words(clause.intro)  # "If the Hub cannot be reached, ...": the condition stays
        context += (condition[:1].lower() if context else condition[:1].upper()) + condition[1:] + ", "

    def q(s: str) -> str:
        return _finish(context + (s[:1].lower() + s[1:] if context and not s.startswith(("I ", "I'")) else s))

    for span in spans_in_rest(clause):
        answer = join(tokens[span.core[0] : span.core[1]], text)
        before = _tail(clause, clause.rest[0], span.phrase[0])
        after_end = clause.rest[1]
        for k in range(span.phrase[1], clause.rest[1]):  # keep the rest of the clause up to a boundary
            if tokens[k].text in (",", ";", ":", "(", "—") or tokens[k].lower in ("which", "who", "that", "because"):
                after_end = k
                break
        nxt = tokens[span.phrase[1]].lower if span.phrase[1] < clause.rest[1] else ""
        if nxt in ("that", "which", "who") or (nxt and {"VBN", "VBG"} & {t for _, t in verb_forms(nxt)}
                                                and "NOUN" not in lemmas(nxt)):
            after_end = span.phrase[1]  # a relative clause describes the answer: it goes with it
        after = _tail(clause, span.phrase[1], after_end)
        strand = f" {span.prep}" if span.prep else ""
        asked: list[Question] = []
        whs = _wh_for(span, clause, kinds)
        for n, wh in enumerate(whs):
            if span.prep and span.kind != "date" and not (span.kind == "quantity" and span.prep in ("by", "to")):
                if span.prep in _PLACE_PREPS and span.kind == "name":
                    wh_full, strand_here = "Where", ""
                else:
                    wh_full, strand_here = wh, strand
            else:
                wh_full, strand_here = wh, ""
            if span.kind == "quantity" and (span.label or span.every or wh.startswith("How long")):
                wh_full, strand_here = wh, strand if span.label else ""
            elif span.kind == "quantity" and span.prep and span.prep != "by":
                wh_full, strand_here = wh, strand  # "How much does system memory come to?"
            if span.kind == "quantity" and span.prep == "by" and wh.startswith("How"):
                wh_full = "By " + wh[0].lower() + wh[1:]
            rest = " ".join(x for x in (before + strand_here, after) if x)  # the preposition stays in place
            asked.append(Question(q(inverted(clause, wh_full, rest)), answer, span.kind, f"wh{n}"))
            if n == 0 and (other := with_other_verb(clause, inverted(clause, wh_full, rest))):
                asked.append(Question(q(other), answer, span.kind, "wh-other-verb"))
            if n == 0:
                short_rest = " ".join(x for x in (before,) if x) + strand_here
                if after and short_rest != rest:
                    asked.append(Question(q(inverted(clause, wh_full, short_rest)), answer, span.kind, "wh-short"))
                emb = embedded(clause, wh_full[:1].lower() + wh_full[1:], rest)
                asked.append(Question(q(f"Do you know {emb}?"), answer, span.kind, "do-you-know"))
                asked.append(Question(q(f"Tell me {emb}."), answer, span.kind, "tell-me"))
        if span.kind == "quantity" and span.measured and clause.lemma in (
                "have", "provide", "offer", "deliver", "carry", "include", "support", "come", "give", "get", "reach"):
            subj = _subject_text(clause)
            asked.append(Question(q(f"What is the {span.measured} of {subj}?"), answer, span.kind, "attribute"))
        if clause.lemma == "be" and clause.aux is not None and clause.main == clause.aux and not span.prep \
                and span.phrase[0] == clause.rest[0]:
            subj = _subject_text(clause)
            asked.append(Question(q(f"What would you say {subj} {clause.tokens[clause.aux].text.lower()}?"), answer,
                                  span.kind, "copula"))
        out.append((span, asked))

    span = subject_span(clause)
    if span is not None:
        answer = join(tokens[span.core[0] : span.core[1]], text)
        rest_text = _tail(clause, clause.rest[0], clause.rest[1])
        # the subject's verb agrees with "What" (singular) unless a plural "Which <noun>" asks
        plural_head = span.head and is_plural_noun(span.head)
        verb = clause.words(clause.verb) if plural_head else _singular_verb_group(clause)
        kind = kinds.get(re.sub(r"^(?:the|The)\s+", "", answer))
        wh = f"Which {span.head}" if span.head else "What"
        short_end = clause.rest[1]
        for k in range(clause.rest[0], clause.rest[1]):
            if tokens[k].text in (",", ";", ":", "(", "—"):
                short_end = k
                break
        short_rest = _tail(clause, clause.rest[0], short_end)
        asked = [Question(q(f"{wh} {verb} {short_rest}{_intro_suffix(clause)}?"), answer, "subject", "reverse")]
        if short_rest != rest_text and len(rest_text.split()) <= 30:
            asked.append(Question(q(f"{wh} {verb} {rest_text}{_intro_suffix(clause)}?"), answer, "subject",
                                  "reverse-long"))
        asked.append(Question(q(f"Do you know {wh.lower()} {verb} {short_rest}{_intro_suffix(clause)}?"), answer,
                              "subject", "reverse-do-you-know"))
        if kind and not span.head:
            asked.insert(1, Question(q(f"Which {kind} {verb} {short_rest}{_intro_suffix(clause)}?"), answer,
                                     "subject", "reverse-kind"))
        other = with_other_verb(clause, f"{wh} {verb} {short_rest}{_intro_suffix(clause)}?", reverse=True)
        if other:
            asked.insert(1, Question(q(other), answer, "subject", "reverse-other-verb"))
        if clause.aux is None and clause.lemma != "be" and clause.tag in ("VBZ", "VBP") and short_rest:
            # as a user would ask for it: "I want to match and link related records. Which service does that?"
            need = _base_verb_phrase(clause, short_end)
            if need:
                asked.insert(2, Question(q(f"I want to {need}. {f'Which {kind}' if kind else 'What'} "
                                           f"{'do' if plural_head else 'does'} that?"), answer, "subject",
                                         "reverse-need"))
        out.append((span, asked))
    return out


def _base_verb_phrase(clause: Clause, end: int) -> str:
    """The clause's verb phrase in the base form, coordinated verbs too: "matches and links related
    records" -> "match and link related records"; "" when a verb cannot be put back in its base form."""
    words = []
    for k in range(clause.main, end):
        tok = clause.tokens[k]
        readings = [(lm, t) for lm, t in verb_forms(tok.lower) if t == "VBZ"]
        prev = clause.tokens[k - 1].lower if k > clause.main else ""
        if k == clause.main or (readings and prev in ("and", "or")):
            if k == clause.main and clause.tag == "VBP":
                words.append(tok.text)
                continue
            if not readings:
                return ""
            words.append(readings[0][0])
        else:
            words.append(tok.text)
    text = " ".join(words)
    return re.sub(r"\s+([,.;:])", r"\1", text).replace(" 's", "'s")
