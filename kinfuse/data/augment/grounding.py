"""How much of a generated text its source supports: content words, the share of them found
in the source, numbers and capitalised names the source lacks, and cutting text into sections
and whole sentences. Augmentation's checks and self-distillation use these."""

from __future__ import annotations

import re

from ..answers import normalize

_STOP = set(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those there their they them he she his her we our you your i me my do does did has have had not no "
    "so than then which who whom whose what when where why how can could will would shall should may might "
    "also about into over under after before up out more most some any each other such only own same very just "
    "one all both".split()
)


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def content_words(text: str) -> list[str]:
    """Normalised words of a text without stop words (numbers kept), lightly stemmed."""
    return [_stem(w) for w in normalize(text).split() if w not in _STOP and (len(w) > 1 or w.isdigit())]


def grounding(text: str, source: str | set[str]) -> tuple[float, list[str]]:
    """(share of the text's content words found in the source, numbers absent from the source)."""
    known = source if isinstance(source, set) else set(content_words(source))
    words = content_words(text)
    if not words:
        return 0.0, []
    missing_numbers = sorted({w for w in words if any(c.isdigit() for c in w) and w not in known})
    return sum(w in known for w in words) / len(words), missing_numbers


def invented_names(text: str, source: str | set[str]) -> list[str]:
    """Capitalised words inside a sentence (names: "Amazon Echo", "Lions") that the source lacks:
    the small models' commonest invention, which the share of grounded words can miss."""
    known = source if isinstance(source, set) else set(content_words(source))
    out: list[str] = []
    for sentence in re.split(r"(?<=[.!?:])\s+|\n+", text):
        for word in re.findall(r"\b[A-Z][\w'-]*", sentence)[1:] if sentence[:1].isupper() else \
                re.findall(r"\b[A-Z][\w'-]*", sentence):
            key = content_words(word)
            if key and key[0] not in known and word not in out:
                out.append(word)
    return out


def split_sections(text: str, max_chars: int) -> list[str]:
    """Cut a document into sections of at most `max_chars` characters at paragraph ends, then
    sentence ends, then word ends; a short last section joins the one before."""
    units: list[str] = []
    for para in (p.strip() for p in re.split(r"\n\s*\n|\n", text)):
        if not para:
            continue
        if len(para) <= max_chars:
            units.append(para)
            continue
        for sentence in re.split(r"(?<=[.!?])\s+", para):
            while len(sentence) > max_chars:  # a "sentence" longer than a section: cut at a space
                cut = sentence.rfind(" ", 0, max_chars)
                cut = cut if cut > max_chars // 2 else max_chars
                units.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
            if sentence:
                units.append(sentence)
    sections: list[str] = []
    for unit in units:
        if sections and len(sections[-1]) + 1 + len(unit) <= max_chars:
            sections[-1] += "\n" + unit
        else:
            sections.append(unit)
    if len(sections) > 1 and len(sections[-1]) < max_chars // 4:
        last = sections.pop()  # popped before the join: `sections[-2] += ... pop()` indexes a list it shrinks
        sections[-1] += "\n" + last
    return sections


def whole_sentences(text: str, min_share: float = 0.0) -> str:
    """`text` up to its last whole sentence; "" when there is none, or when what is left is
    no more than `min_share` of the text (too little of an answer cut off by a token limit)."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[: ends[-1]].strip() if ends and ends[-1] > len(text) * min_share else ""


def trim_tail(text: str, known: set[str], min_share: float) -> str:
    """The text without trailing sentences that are not grounded in the source (a small model's
    "I hope this helps!" or a line of chatter after its answer); the first sentence always stays."""
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    while len(sentences) > 1:
        share, invented = grounding(sentences[-1], known)
        if share >= min_share and not invented:
            break
        sentences.pop()
    return " ".join(sentences)


def ngrams(words: list[str], n: int = 4) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
