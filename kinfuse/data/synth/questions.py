"""Questions about one clause: every answerable span (kinfuse.data.synth.spans), asked several ways.

Each span is asked in several wordings: a direct wh-question with auxiliary inversion or
do-support, an embedded one ("Do you know how much ...?", "Tell me ..."), another verb for
the same act, and for quantities "What is the <thing> of <subject>?"; the subject span gives
the reverse questions, whose answer is the entity the forward questions start from. A
question names what it is about: when the clause has no name in it, its section's or
document's topic is added ("For Quillstore, ...").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .spans import PLACE_PREPS, TIME_UNITS, VAGUE_SUBJECTS, YEAR, Span, spans_in_rest, subject_span
from .text import AUXILIARIES, PREPOSITIONS, Clause, inflect, is_name_token, is_plural_noun, join, lemmas, verb_forms

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
class Question:
    question: str
    answer_span: str  # the answer's key words, which the answer sentence contains
    kind: str  # span kind
    template: str  # which wording



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
        years_only = all(YEAR.match(t.text) or not t.text[:1].isalnum()
                         for t in clause.tokens[span.core[0] : span.core[1]])
        return ["In what year" if years_only else "When", "On what date" if not years_only else "When"]
    if span.kind == "quantity":
        if span.label:
            return [f"What {span.label}", f"Which {span.label}"]
        if span.every:
            return ["How often"]
        unit = next((t.lower for t in clause.tokens[span.core[0]:span.core[1]] if t.lower in TIME_UNITS), "")
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
    if clause.negated or clause.tokens[clause.subject[0]].lower in VAGUE_SUBJECTS:
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
                if span.prep in PLACE_PREPS and span.kind == "name":
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
