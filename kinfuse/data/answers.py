"""Reading a model's answers: normalisation and answer matching, simple aliases, the chat-format
check, and question/answer pairs parsed from free text. Probes, evaluation, augmentation and
the rule-written questions all compare text through `normalize`, so "3,200" and "3200" match
everywhere alike.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable

_THOUSANDS = re.compile(r"(?<=\d)[,\u202f\u00a0 ](?=\d{3}\b)")
_PUNCT = re.compile(r"[^\w\s.]|(?<!\d)\.|\.(?!\d)")
_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def normalize(text: str) -> str:
    """Lowercase, NFKC, "3,200" -> "3200", punctuation (but decimal points) -> spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _THOUSANDS.sub("", text)
    text = _PUNCT.sub(" ", text).replace("_", " ")
    return " ".join(text.split())


def answer_matches(text: str, answers: Iterable[str]) -> bool:
    """True when a normalised accepted answer occurs in the normalised text as whole words."""
    hay = f" {normalize(text)} "
    return any(f" {normalize(a)} " in hay for a in answers if normalize(a))


def answer_aliases(answer: str) -> list[str]:
    """The answer and simple aliases: without a leading article or a parenthetical, the
    parenthetical itself, and numbers up to twelve as digits and as words."""
    answer = answer.strip().rstrip(".").strip()
    out = [answer]
    paren = re.match(r"^(.*?)\s*\(([^)]+)\)\s*$", answer)
    if paren:
        out += [paren.group(1), paren.group(2)]
    for a in list(out):
        bare = re.sub(r"^(the|a|an)\s+", "", a, flags=re.I)
        out.append(bare)
        key = normalize(bare)
        if key in _NUMBER_WORDS:
            out.append(str(_NUMBER_WORDS.index(key)))
        elif key.isdigit() and int(key) < len(_NUMBER_WORDS):
            out.append(_NUMBER_WORDS[int(key)])
    seen, aliases = set(), []
    for a in out:
        if normalize(a) and normalize(a) not in seen:
            seen.add(normalize(a))
            aliases.append(a.strip())
    return aliases


# Special tokens of common chat templates: in decoded text (special tokens skipped) any of
# these means the model wrote a role marker as plain text.
ROLE_MARKERS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "[INST]", "[/INST]", "<start_of_turn>",
    "<end_of_turn>", "<s>", "</s>",
)
_ROLE_WORDS = ("user", "assistant", "system", "human")
_ROLE_LINE = re.compile(r"^\s*(?:#+\s*)?(user|assistant|system|human)\s*(?::.*)?$", re.I)
_ROLE_PREFIX = re.compile(r"^\s*(?:#+\s*)?(user|assistant|system|human)\s*:", re.I)
_CHAR_LOOP = re.compile(r"(\w{1,10}?)\1{9,}")


def chat_format_problem(text: str) -> str | None:
    """Why an answer is not in chat format, or None when it is. The check, in order:

    - empty: nothing but whitespace;
    - role marker: a chat-template token written as text (`<|im_start|>`, `[INST]`, ... see ROLE_MARKERS);
    - role at the start: the first line is a role name ("assistant", "user\\n...", "Assistant: ...");
    - new turn: a later line that is a role name alone ("user") or opens a user turn ("User: ...",
      "### Human: ..."): the model went on to write the conversation itself;
    - repetition loop: the same word 6+ times in a row, a short unit repeated 10+ times
      ("hahahaha..."), or, in 16+ words, fewer than half of the word trigrams distinct.
    """
    if not text.strip():
        return "empty"
    for marker in ROLE_MARKERS:
        if marker in text:
            return f"role marker {marker!r}"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    first = lines[0].strip().lower().rstrip(":")
    if first in _ROLE_WORDS or _ROLE_PREFIX.match(lines[0]):
        return f"starts with a role line {lines[0].strip()[:30]!r}"
    for ln in lines[1:]:
        m = _ROLE_LINE.match(ln)
        if m and (ln.strip().lower().rstrip(":") in _ROLE_WORDS or m.group(1).lower() in ("user", "human")):
            return f"writes a new turn {ln.strip()[:30]!r}"
    words = normalize(text).split()
    run = 1
    for a, b in zip(words, words[1:]):
        run = run + 1 if a == b else 1
        if run >= 6:
            return f"repetition loop ({a!r} repeated)"
    if _CHAR_LOOP.search(text):
        return "repetition loop (a short unit repeated)"
    if len(words) >= 16:
        grams = list(zip(words, words[1:], words[2:]))
        if len(set(grams)) < 0.5 * len(grams):
            return "repetition loop (repeated phrases)"
    return None


def is_chat_format(text: str) -> bool:
    """True when `chat_format_problem` finds nothing wrong."""
    return chat_format_problem(text) is None


# -- question/answer pairs in free text ----------------------------------------------------

_LABEL = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:\d+\s*[.)]\s*)?(?:\*\*|__)?\s*(?P<label>question|answer|q|a)\s*\d*\s*(?:\*\*|__)?"
    r"\s*[:.)\-–]\s*(?:\*\*|__)?\s*(?P<body>.*)$",
    re.I,
)
_INLINE_ANSWER = re.compile(r"\s(?:\*\*|__)?(?:a|answer)\s*(?:\*\*|__)?\s*:\s*", re.I)


def _clean(text: str) -> str:
    text = re.sub(r"(\*\*|__|`)", "", text).strip()
    if len(text) >= 2 and text[0] in "\"'“‘" and text[-1] in "\"'”’":
        text = text[1:-1].strip()
    return " ".join(text.split())


def parse_qa_pairs(text: str) -> list[tuple[str, str]]:
    """Question/answer pairs from a model's reply: JSON ({"question", "answer"} objects or a list
    of them) or labelled lines ("Q:"/"A:", "Question 1:"/"Answer:", numbered, bulleted, bold,
    or "Q: ... A: ..." on one line). Unlabelled lines continue the field before them."""
    pairs: list[tuple[str, str]] = []
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):
        try:
            obj, _ = decoder.raw_decode(text[m.start() :])
        except json.JSONDecodeError:
            continue
        for item in obj if isinstance(obj, list) else [obj]:
            if isinstance(item, dict):
                q = item.get("question") or item.get("q")
                a = item.get("answer") or item.get("a")
                if isinstance(q, str) and isinstance(a, (str, int, float)) and not isinstance(a, bool):
                    pairs.append((_clean(q), _clean(str(a))))
    if pairs:
        return list(dict.fromkeys(pairs))
    question: str | None = None
    answer: str | None = None
    closed = False  # a blank line after an answer: nothing more belongs to it

    def flush() -> None:
        if question and answer:
            pairs.append((_clean(question), _clean(answer)))

    for line in text.splitlines():
        m = _LABEL.match(line)
        label = m.group("label").lower()[0] if m else None
        if label == "q":
            flush()
            body, answer, closed = m.group("body"), None, False
            inline = _INLINE_ANSWER.search(body)
            question, answer = (body[: inline.start()], body[inline.end() :]) if inline else (body, None)
        elif label == "a" and question is not None:
            answer, closed = m.group("body"), False
        elif not line.strip():
            closed = answer is not None
        elif question is not None and not closed:
            if answer is None:
                question += " " + line.strip()
            else:
                answer += " " + line.strip()
    flush()
    return list(dict.fromkeys(pairs))

