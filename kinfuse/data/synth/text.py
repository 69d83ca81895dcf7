"""Sentences, tokens and clauses: the little English grammar the question rules need.

There is no parser to download here (spaCy's pipelines come from a model hub), so clauses are
found with closed word classes, lemminflect's lexicon (which words can be verbs, their lemma
and inflections) and a few ordering rules. A clause is `intro? subject verb-group rest`:

    "At the summit, | AWS | announced | Agents for Amazon Bedrock in preview."
    intro             subject verb       rest

That is enough for the two question shapes: asking for something in the rest (aux inversion
or do-support: "What did AWS announce at the summit?") and asking for the subject ("What
matches and links related records?"). Sentences the rules cannot read (no finite verb, a
question, a fragment) give no clause; the span rules still see them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from dataclasses import dataclass, field

# Words: identifiers with inner dots, dashes and slashes (p5.48xlarge, GPU-to-GPU, v2.1),
# numbers with thousands separators, decimals, currency and percent, clitics, punctuation.
_TOKEN = re.compile(
    r"[$€£]?\d[\d,]*(?:\.\d+)?(?:%|\+)?(?:[A-Za-z]+\d*)?"
    r"|[A-Za-z]+(?=n['’]t\b)|n['’]t\b"
    r"|~?/[\w.-]+(?:/[\w.-]+)+/?"
    r"|[A-Za-z0-9]+(?:[-_./+:@][A-Za-z0-9]+)*"
    r"|['’](?:s|re|ve|ll|d|m)\b"
    r"|--?[a-z][\w-]*"
    r"|\S"
)

DETERMINERS = frozenset(
    "a an the each every this that these those its their his her our your my some any no all both another "
    "either neither several many most such".split()
)
SUBJECT_PRONOUNS = frozenset("it they he she we you i".split())
PRONOUNS = SUBJECT_PRONOUNS | frozenset("them him her us me one".split())
POSSESSIVES = frozenset("its their his her our your my".split())
PREPOSITIONS = frozenset(
    "of in on at by for with from to into onto over under through across between without within per via about "
    "after before during since until like as against among around behind beside beyond near off out up upon "
    "toward towards inside outside than including".split()
)
CONJUNCTIONS = frozenset("and or but nor yet so".split())
SUBORDINATORS = frozenset(
    "because since although though while whereas if unless when whenever where after before until once so "
    "whether as".split()
)
WH_WORDS = frozenset("what which who whom whose when where why how".split())
MODALS = frozenset("can could will would shall should may might must".split())
# inflected auxiliaries: (lemma, tag); "have" and "be" are also main verbs (see Clause)
AUXILIARIES = {
    "is": ("be", "VBZ"), "are": ("be", "VBP"), "was": ("be", "VBD"), "were": ("be", "VBD"), "am": ("be", "VBP"),
    "has": ("have", "VBZ"), "have": ("have", "VBP"), "had": ("have", "VBD"),
    "does": ("do", "VBZ"), "do": ("do", "VBP"), "did": ("do", "VBD"),
    **{m: (m, "MD") for m in MODALS},
}
NEGATIONS = frozenset("not n't never".split())
# Adverbs that sit between a subject and its verb ("P5 also supports ...").
_PREVERBAL = frozenset("also now still already only just even first then later currently soon often usually "
                       "always never generally mainly mostly typically recently newly".split())
# Sentence starts that open an introductory phrase ending at the first comma.
_INTRO_STARTS = PREPOSITIONS | SUBORDINATORS | frozenset(
    "according unlike despite instead however meanwhile today yesterday tomorrow also additionally "
    "furthermore moreover finally first second third next then still yet now previously currently "
    "originally later earlier overall together alternatively optionally notably importantly".split()
)


@dataclass(frozen=True)
class Token:
    text: str
    start: int  # character offsets in the sentence
    end: int

    @property
    def lower(self) -> str:
        return self.text.lower()


def tokenize(text: str) -> list[Token]:
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


# -- sentences -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=False)


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph (pysbd: abbreviations, decimals and initials do not end one)."""
    paragraph = " ".join(paragraph.split())
    if not paragraph:
        return []
    try:
        parts = _segmenter().segment(paragraph)
    except Exception:  # pysbd's regexes fail on a few odd inputs: fall back to end punctuation
        parts = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“(])", paragraph)
    return [s.strip() for s in parts if s.strip()]


# -- word classes (lemminflect's lexicon) ---------------------------------------------------


@functools.lru_cache(maxsize=65536)
def lemmas(word: str) -> dict[str, tuple[str, ...]]:
    """Part of speech -> lemmas, for a lower-case word the lexicon knows ({} otherwise)."""
    from lemminflect import getAllLemmas

    return dict(getAllLemmas(word))


@functools.lru_cache(maxsize=65536)
def verb_forms(word: str) -> tuple[tuple[str, str], ...]:
    """(lemma, Penn tag) for each reading of `word` as an inflected verb: VBZ, VBD, VBP, VBN, VBG."""
    from lemminflect import getAllInflections

    out = []
    for lemma in lemmas(word).get("VERB", ()):
        forms = getAllInflections(lemma, upos="VERB")
        forms.setdefault("VBN", forms.get("VBD", ()))  # the lexicon leaves out a participle equal to the past
        for tag in ("VBZ", "VBD", "VBP", "VBN", "VBG"):
            if word in forms.get(tag, ()) or (tag == "VBP" and word == lemma):
                out.append((lemma, tag))
    return tuple(out)


def inflect(lemma: str, tag: str) -> str:
    """`lemma` in the form `tag` (VBZ, VBD, VBP, VBN, VBG, NNS), or the lemma when unknown."""
    from lemminflect import getInflection

    if lemma == "be":
        return {"VBZ": "is", "VBP": "are", "VBD": "was", "VBN": "been", "VBG": "being"}.get(tag, "be")
    forms = getInflection(lemma, tag=tag) or (getInflection(lemma, tag="VBD") if tag == "VBN" else ())
    return forms[0] if forms else lemma


def is_noun(word: str) -> bool:
    return "NOUN" in lemmas(word.lower())


def is_plural_noun(word: str) -> bool:
    """A plural noun: its lemma differs ("instances" -> "instance"), or it is an acronym + s ("GPUs")."""
    low = word.lower()
    nouns = lemmas(low).get("NOUN", ())
    if nouns:
        return any(n != low for n in nouns)
    return bool(re.fullmatch(r"[A-Z0-9]{2,}s", word)) or (low.endswith("s") and not low.endswith("ss") and len(low) > 3
                                                           and not lemmas(low))


def is_common_word(word: str) -> bool:
    """A word the lexicon knows in lower case, or a function word: a capital at the start of a
    sentence does not make it a name ("The", "Each", "Big")."""
    low = word.lower()
    return bool(lemmas(low)) or low in DETERMINERS | PREPOSITIONS | CONJUNCTIONS | SUBORDINATORS | PRONOUNS \
        | WH_WORDS | AUXILIARIES.keys() | {"there", "here", "not", "to"}


# Words the corpus being read capitalises inside sentences ("Agents", "Entity"): at the start
# of a sentence they are still names. Set per corpus by `known_names`.
_NAMES: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("kinfuse_synth_names", default=frozenset())


@contextlib.contextmanager
def known_names(texts: list[str]):
    """Within this block, words `texts` capitalise mid-sentence count as names at a sentence start."""
    names = set()
    for text in texts:
        for m in re.finditer(r"(?<=[a-z0-9,;] )([A-Z][a-z][\w-]*)", text):
            names.add(m.group(1))
    token = _NAMES.set(frozenset(names))
    try:
        yield
    finally:
        _NAMES.reset(token)


def is_name_token(tok: Token, first: bool) -> bool:
    """Part of a name: capitalised (not only because it starts the sentence), an acronym, or an
    identifier with digits (H100, P5, p5.48xlarge)."""
    t = tok.text
    if not (t[:1].isalnum() or t[:1] in "/~"):
        return False
    if any(c.isdigit() for c in t) and any(c.isalpha() for c in t):
        return True
    if re.search(r"[A-Za-z][_/.][A-Za-z]|^/|_", t):  # identifiers and paths: listen_port, /etc/hub.toml
        return True
    if t[:1].isupper():
        if t.isupper() and len(t) > 1:
            return True
        return not (first and is_common_word(t) and t not in _NAMES.get())
    return False


# -- clauses -------------------------------------------------------------------------------


@dataclass
class Clause:
    """`tokens[subject]` `tokens[verb]` `tokens[rest]` as index ranges into `tokens` (one sentence)."""

    tokens: list[Token]
    text: str  # the sentence
    intro: tuple[int, int]  # introductory phrase before the subject (may be empty), its comma excluded
    subject: tuple[int, int]
    verb: tuple[int, int]  # the verb group: auxiliaries, adverbs, negation, main verb
    rest: tuple[int, int]  # up to the end, final punctuation excluded
    aux: int | None  # index of the auxiliary that inverts in a question, if any
    main: int  # index of the main verb (== aux for a bare copula "is")
    lemma: str  # main verb lemma
    tag: str  # the finite form's tag: VBZ, VBP, VBD or MD
    negated: bool = False
    notes: list[str] = field(default_factory=list)

    def words(self, span: tuple[int, int]) -> str:
        return join(self.tokens[span[0] : span[1]], self.text)


def join(tokens: list[Token], text: str) -> str:
    """The tokens as they were written (original spacing kept)."""
    return text[tokens[0].start : tokens[-1].end] if tokens else ""


def _finite(tokens: list[Token], i: int, subject_start: int) -> tuple[str, str] | None:
    """(lemma, tag) when tokens[i] reads as the finite verb of a clause whose subject starts at
    `subject_start`; None otherwise."""
    tok = tokens[i]
    low = tok.lower
    if i <= subject_start or not tok.text[:1].islower():
        return None
    prev = tokens[i - 1].lower
    demonstrative = i - 1 == subject_start and prev in ("this", "that", "these", "those", "each", "all", "both")
    if (prev in DETERMINERS and not demonstrative) or prev in PREPOSITIONS | {"to", "'s", "’s"} or prev in AUXILIARIES:
        return None
    if low in AUXILIARIES:
        return AUXILIARIES[low]
    readings = [(lemma, tag) for lemma, tag in verb_forms(low) if tag in ("VBZ", "VBD", "VBP")]
    if not readings:
        return None
    nxt = tokens[i + 1].lower if i + 1 < len(tokens) else ""
    if prev in SUBJECT_PRONOUNS and i - 1 == subject_start:
        return readings[0]  # "It costs ...": after a subject pronoun, the verb
    prev_tok = tokens[i - 1]
    vbz = [r for r in readings if r[1] == "VBZ"]
    # After a singular common noun ("The engine stores ...") or a word name ("Entity Resolution
    # reads ..."), a word that is also a plural noun is the verb; after an identifier or acronym
    # it is more often a compound's head ("P5 instances", "GPU servers").
    word_name = prev_tok.text[:1].isupper() and prev_tok.text[1:].islower() and prev_tok.text.isalpha() \
        and is_name_token(prev_tok, i - 1 == 0)
    singular_noun = "NOUN" in lemmas(prev) and not is_plural_noun(prev_tok.text) and not is_name_token(
        prev_tok, i - 1 == 0)
    if vbz and nxt not in AUXILIARIES and prev not in DETERMINERS and (word_name or singular_noun):
        return vbz[0]
    # a plural noun followed by an auxiliary or a bare verb is the subject's head ("P5 instances use")
    if "NOUN" in lemmas(low) and nxt and (nxt in AUXILIARIES or (
            is_plural_noun(tok.text) and any(t == "VBP" for _, t in verb_forms(nxt)))):
        return None
    if "NOUN" in lemmas(low):
        for j in range(i + 1, min(len(tokens), i + 9)):
            if tokens[j].text in ",;:()" or tokens[j].lower in PREPOSITIONS:
                break
            if tokens[j].lower in MODALS or tokens[j].lower in ("is", "are", "was", "were"):
                return None
    subject = tokens[subject_start:i]
    for lemma, tag in readings:
        if tag == "VBP":  # the bare form agrees only with a plural or I/you/we/they subject
            head = subject[-1].text
            if head.lower() in ("they", "we", "you", "i") or is_plural_noun(head) or \
                    any(t.lower == "and" for t in subject):
                return lemma, tag
            continue
        if tag == "VBD" and "NOUN" in lemmas(low) and low.endswith("ed") is False:
            continue
        return lemma, tag
    return None


def parse_clause(text: str, tokens: list[Token] | None = None) -> Clause | None:
    """The main clause of a declarative sentence, or None when the rules cannot find one."""
    tokens = tokens if tokens is not None else tokenize(text)
    end = len(tokens)
    while end and tokens[end - 1].text in ".!;:":
        end -= 1
    if end < 3 or text.rstrip().endswith("?"):
        return None
    start = 0
    intro = (0, 0)
    if tokens[0].lower in _INTRO_STARTS or tokens[0].lower.endswith("ly") or tokens[0].lower.endswith("ing"):
        comma = next((i for i in range(1, min(end, 25)) if tokens[i].text == ","), None)
        if comma is None:
            if tokens[0].lower not in ("also", "however", "today", "now", "then", "still"):
                return None
            start = 1
        else:
            intro, start = (0, comma), comma + 1
    if start >= end - 1 or tokens[start].lower in WH_WORDS | CONJUNCTIONS | {"there", "here"}:
        return None
    if tokens[start].lower in PREPOSITIONS or tokens[start].lower in AUXILIARIES:
        return None
    i = start + 1
    verb = None
    while i < end:
        tok = tokens[i]
        if tok.text == ",":
            # an appositive ("AWS Entity Resolution, a new service, matches ...") belongs to the subject
            close = next((j for j in range(i + 1, min(end, i + 14)) if tokens[j].text == ","), None)
            if close is not None and tokens[i + 1].lower in DETERMINERS | {"which", "who"}:
                i = close + 1
                continue
            return None
        if tok.text in "()[]\"“”;:" or tok.lower in SUBORDINATORS - {"as", "so"} or tok.lower in WH_WORDS - {"which"}:
            return None
        if tok.lower in _PREVERBAL and i + 1 < end:
            found = _finite(tokens, i + 1, start)
            if found:
                verb = (i, found)
                break
        found = _finite(tokens, i, start)
        if found:
            verb = (i, found)
            break
        i += 1
    if verb is None:
        if intro == (0, 0):  # an introductory phrase the word lists do not know ("Available in preview, ...")
            comma = next((i for i in range(1, min(end, 12)) if tokens[i].text == ","), None)
            if comma is not None and comma + 3 < end:
                shifted = parse_clause(text[tokens[comma + 1].start :])
                if shifted is not None:
                    return _shift(shifted, text, tokens, comma)
        return None
    vstart, (lemma, tag) = verb
    j = vstart
    while tokens[j].lower in _PREVERBAL:
        j += 1
    first = j  # the finite word
    low = tokens[first].lower
    aux = main = None
    negated = False
    k = first + 1
    while k < end and (tokens[k].lower in NEGATIONS or (tokens[k].lower.endswith("ly") and "ADV" in lemmas(tokens[k].lower))
                       or tokens[k].lower in _PREVERBAL):
        negated |= tokens[k].lower in NEGATIONS
        k += 1
    if low in AUXILIARIES:
        # chain: modal/do/have/be + (be|been|being)? + participle or base form
        chain_end, main, main_lemma = k, first, lemma
        look = k
        while look < end and tokens[look].lower in ("be", "been", "being", "have"):
            look += 1
        if look < end:
            readings = dict((t, lm) for lm, t in verb_forms(tokens[look].lower))
            want = ("VBN", "VBG") if low in ("is", "are", "was", "were", "am", "has", "have", "had") or look > k \
                else ("VBP",)
            for t in want:
                if t in readings and not (t == "VBG" and tokens[look].lower in ("being",)):
                    main, main_lemma, chain_end = look, readings[t], look + 1
                    break
        if low in ("has", "have", "had") and main == first:  # "has 80 GB": main verb, not auxiliary
            aux = None
            main_lemma = "have"
            chain_end = first + 1
        elif low in ("does", "do", "did") and main == first:  # "do" as a main verb ("does the work")
            aux = None
        else:
            aux = first
        lemma = main_lemma
        verb_end = chain_end if main != first else k if aux is not None else first + 1
    else:
        main, verb_end = first, first + 1
    if verb_end >= end:
        return None
    return Clause(tokens=tokens, text=text, intro=intro, subject=(start, vstart), verb=(vstart, verb_end),
                  rest=(verb_end, end), aux=aux, main=main, lemma=lemma, tag=tag, negated=negated)


def _shift(clause: Clause, text: str, tokens: list[Token], comma: int) -> Clause:
    """A clause parsed from the text after `tokens[comma]`, re-expressed over the whole sentence."""
    k = comma + 1

    def move(span: tuple[int, int]) -> tuple[int, int]:
        return span[0] + k, span[1] + k

    return Clause(tokens=tokens, text=text, intro=(0, comma), subject=move(clause.subject), verb=move(clause.verb),
                  rest=move(clause.rest), aux=None if clause.aux is None else clause.aux + k, main=clause.main + k,
                  lemma=clause.lemma, tag=clause.tag, negated=clause.negated)
