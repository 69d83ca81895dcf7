"""Knowledge augmentation (opt-in): paraphrases of each document and question-answer pairs
about it, written by a model.

A fact seen in one phrasing is memorised but hard to retrieve by a question (Allen-Zhu & Li,
Physics of Language Models 3.1); rewordings of the same text and questions about it make it
extractable. This module asks a *generator* for both:

- **paraphrases**: K rewrites of each section of each document, one per style in
  PARAPHRASE_STYLES (a different instruction each, so greedy decoding still gives K
  different texts), trained on as continued-pretraining text rows `{"text"}`;
- **Q&A**: N question-answer pairs per section, rendered as chat rows
  `{"question", "answer"}` (the Chunker trains on the answer tokens only).

The generator is, by default, the model being trained, through its chat template with the
LoRA adapter disabled (`Generator.from_spec(None, trainer=...)`), or any Hugging Face
model path / id, or a callable `fn(prompt: str) -> str` (an API client, a rule-based
rewriter in tests). Long documents are cut into sections at paragraph and sentence ends so
that each prompt fits the generator's context.

Every reply is checked, and what is dropped is reported with its reason (`AugmentResult.dropped`,
`AugmentResult.report()`): empty or malformed output, text cut off by the token limit,
numbers or capitalised names the source does not contain, answers whose content words mostly do not occur in
the section, questions that do not end with "?", duplicates, and any generated question that
matches an evaluation probe after normalisation or overlaps one heavily (word-set Jaccard
>= `probe_overlap`), so training never sees the probes.

Replies are cached in a JSON file keyed by the prompt (the section text, the style or pair
count), the generator's identity and the token limit: reruns do not regenerate, and the
checks (including probe exclusion) run again on the cached replies, so a changed probe file
takes effect without new generation. Every kept row carries its provenance: `source`
(document), `section`, `kind` ("paraphrase" or "qa"), `style` (paraphrases) and `generator`.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config import MAX_GENERATED_QA, MAX_PARAPHRASES, MIN_SECTION_CHARS
from ...corpus import texts_with_sources
from ...errors import KinfuseError
from ...progress import bar, seconds
from ..answers import chat_format_problem, normalize, parse_qa_pairs
from ..probes import ProbeGuard, guard_sources
from .generators import Generator, ReplyCache
from .grounding import (content_words, grounding, invented_names, ngrams, split_sections, trim_tail,
                        whole_sentences)

SAVE_EVERY = 32  # prompts generated between cache writes
_FACTS = "Keep every fact, name, number and date exactly as they are, and add nothing that is not in the text."
PARAPHRASE_STYLES: tuple[tuple[str, str], ...] = (
    ("rewrite", "Rewrite the text below in your own words. " + _FACTS + "\n\nText:\n{text}"),
    ("news", "Rewrite the text below as a short news report. " + _FACTS + "\n\nText:\n{text}"),
    ("explain", "Explain the text below to a colleague in plain, simple sentences. " + _FACTS + "\n\nText:\n{text}"),
    ("facts", "List the facts stated in the text below, one complete sentence per line. " + _FACTS
     + "\n\nText:\n{text}"),
    ("formal", "Rewrite the text below in the formal style of an encyclopedia article. " + _FACTS
     + "\n\nText:\n{text}"),
)
assert len(PARAPHRASE_STYLES) == MAX_PARAPHRASES, "config.MAX_PARAPHRASES bounds data.paraphrases: one per style"
QA_INSTRUCTION = (
    "Read the text below and write {n} questions that it answers, each about a different fact stated in it. "
    "Answer each question with one short sentence that uses the words of the text. "
    "Write every pair on two lines, exactly like this:\nQ: <question>\nA: <answer>\n\nText:\n{text}"
)
_PREAMBLE = re.compile(r"^\s*(sure|certainly|here is|here's|here are|rewritten|rewrite|paraphrase|news report|"
                       r"explanation|facts|the text|below)\b[^\n]{0,80}:\s*\n", re.I)


# -- the result ----------------------------------------------------------------------------


@dataclass
class AugmentResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # training rows, each with provenance
    dropped: list[dict[str, Any]] = field(default_factory=list)  # {"kind", "source", "section", "reason", "item"}
    generated: Counter = field(default_factory=Counter)  # items written by the generator, per kind
    trimmed: Counter = field(default_factory=Counter)  # kept items whose ungrounded last sentences were cut, per kind
    replies_cached: int = 0  # replies read from the cache
    replies_generated: int = 0  # replies generated in this run
    generator: str = ""
    sections: int = 0  # document sections sent to the generator

    def kept(self, kind: str) -> int:
        return sum(r["kind"] == kind for r in self.rows)

    def drop_reasons(self, kind: str) -> Counter:
        return Counter(d["reason"].split(":")[0] for d in self.dropped if d["kind"] == kind)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "sections": self.sections,
            "replies_cached": self.replies_cached,
            "replies_generated": self.replies_generated,
            **{kind: {"generated": self.generated[kind], "kept": self.kept(kind), "trimmed": self.trimmed[kind],
                      "dropped": dict(self.drop_reasons(kind))} for kind in ("paraphrase", "qa")},
            "dropped_items": self.dropped,
        }

    def report(self) -> str:
        if not self.generator:
            return "augmentation: off"
        lines = [f"augmentation by {self.generator}: {self.sections} sections, {self.replies_generated} replies "
                 f"generated, {self.replies_cached} from the cache"]
        for kind, label in (("paraphrase", "paraphrases"), ("qa", "Q&A pairs")):
            if self.generated[kind] or self.drop_reasons(kind):
                why = ", ".join(f"{n} {reason}" for reason, n in self.drop_reasons(kind).most_common())
                lines.append(f"  {label}: {self.kept(kind)} kept of {self.generated[kind]} written"
                             + (f" (dropped: {why})" if why else "")
                             + (f"; ungrounded last sentences cut from {self.trimmed[kind]}" if self.trimmed[kind] else ""))
        return "\n".join(lines)


# -- augmentation --------------------------------------------------------------------------


def augment(
    documents: Any,
    generator: Any,
    *,
    paraphrases: int = 0,
    qa_pairs: int = 0,
    probes: Iterable[Any] = (),
    cache: str | Path | None = None,
    section_chars: int = 1500,
    max_new_tokens: int = 512,
    min_grounding: float = 0.6,
    min_paraphrase_grounding: float = 0.5,
    probe_overlap: float = 0.6,
    trainer: Any = None,
) -> AugmentResult:
    """Write `paraphrases` rewrites and `qa_pairs` question-answer pairs per section of each
    document, check them, and return the kept training rows and the report of what was dropped.

    `documents`: a Corpus, Documents, dicts with "text" (and "source") or strings.
    `generator`: see `Generator.from_spec` (None: `trainer`'s model with the adapter off).
    `probes`: probe JSONL paths, probe dicts or question strings that no generated question
    may match. `cache`: JSON file of replies (reused on reruns). `section_chars`: longest
    section sent in one prompt (a section whose prompt and reply overflow a model
    generator's context is split further). `max_new_tokens`: reply limit for paraphrases
    (Q&A replies get 48 tokens per pair plus 64; a reply never more than half the context).
    `min_grounding`: share of an answer's content words that must occur in its section;
    `min_paraphrase_grounding`: the same for a paraphrase; `probe_overlap`: word-set Jaccard
    with a probe question from which a generated question is dropped.
    """
    problems = []
    if not isinstance(paraphrases, int) or not 0 <= paraphrases <= MAX_PARAPHRASES:
        problems.append(f"paraphrases={paraphrases!r}: must be an integer in [0, {MAX_PARAPHRASES}] "
                        f"(one per style: {', '.join(s for s, _ in PARAPHRASE_STYLES)})")
    if not isinstance(qa_pairs, int) or not 0 <= qa_pairs <= MAX_GENERATED_QA:
        problems.append(f"qa_pairs={qa_pairs!r}: must be an integer in [0, {MAX_GENERATED_QA}]")
    if not isinstance(section_chars, int) or section_chars < MIN_SECTION_CHARS:
        problems.append(f"section_chars={section_chars!r}: must be an integer >= {MIN_SECTION_CHARS}")
    for name, value in (("min_grounding", min_grounding), ("min_paraphrase_grounding", min_paraphrase_grounding),
                        ("probe_overlap", probe_overlap)):
        if not 0.0 <= value <= 1.0:
            problems.append(f"{name}={value!r}: must be in [0, 1]")
    if problems:
        raise KinfuseError("bad augmentation settings:\n" + "\n".join(f"  - {p}" for p in problems))
    result = AugmentResult()
    if not paraphrases and not qa_pairs:
        return result
    gen = Generator.from_spec(generator, trainer=trainer)
    result.generator = gen.name
    guard = ProbeGuard(probes, overlap=probe_overlap)
    para_limit, qa_limit = max_new_tokens, 64 + 48 * qa_pairs
    if gen.context_tokens:  # a reply may take at most half the context; the prompt the rest
        para_limit, qa_limit = min(para_limit, gen.context_tokens // 2), min(qa_limit, gen.context_tokens // 2)
    templates = [t for _, t in PARAPHRASE_STYLES[:paraphrases]] + ([QA_INSTRUCTION] if qa_pairs else [])
    longest = max(templates, key=len).replace("{n}", str(qa_pairs))

    jobs: list[dict[str, Any]] = []  # one prompt each
    for text, source in texts_with_sources(documents):
        sections = _fit(split_sections(text, section_chars), gen, longest,
                        max(para_limit if paraphrases else 0, qa_limit if qa_pairs else 0))
        for s, section in enumerate(sections):
            result.sections += 1
            for style, template in PARAPHRASE_STYLES[:paraphrases]:
                jobs.append({"kind": "paraphrase", "source": source, "section": s, "text": section, "style": style,
                             "prompt": template.format(text=section), "limit": para_limit})
            if qa_pairs:
                jobs.append({"kind": "qa", "source": source, "section": s, "text": section,
                             "prompt": QA_INSTRUCTION.format(n=qa_pairs, text=section), "limit": qa_limit})

    store = ReplyCache(cache)
    for job in jobs:
        job["key"] = ReplyCache.key(gen, job["prompt"], job["limit"])
    # Identical sections (boilerplate repeated across pages) give identical prompts: generated once.
    todo = list({j["key"]: j for j in jobs if j["key"] not in store.replies}.values())
    result.replies_cached = len({j["key"] for j in jobs}) - len(todo)
    progress = bar(len(todo), "augmentation", unit="prompt")
    for limit in sorted({j["limit"] for j in todo}):  # prompts with one token limit go in batches
        same = [j for j in todo if j["limit"] == limit]
        for start in range(0, len(same), SAVE_EVERY):
            group = same[start : start + SAVE_EVERY]
            for job, (reply, ended) in zip(group, gen.generate([j["prompt"] for j in group], limit)):
                store.replies[job["key"]] = {"reply": reply, "ended": ended, "generator": gen.name,
                                             "kind": job["kind"], "source": job["source"], "section": job["section"]}
            result.replies_generated += len(group)
            progress.update(len(group))
            store.save()  # after each group, so an interrupted run keeps what it generated
    progress.close()

    seen_text: set[str] = set()
    seen_questions: set[str] = set()
    for job in jobs:
        saved = store.replies[job["key"]]
        if job["kind"] == "paraphrase":
            _check_paraphrase(job, saved["reply"], saved["ended"], gen.name, guard, min_paraphrase_grounding,
                              seen_text, result)
        else:
            _check_qa(job, saved["reply"], saved["ended"], gen.name, guard, qa_pairs, min_grounding,
                      seen_questions, result)
    return result


def _fit(sections: list[str], gen: Generator, template: str, reply_tokens: int) -> list[str]:
    """Sections whose prompt plus reply fit the generator's context: one that does not is
    split again at half its length (down to 200 characters)."""
    if not gen.context_tokens:
        return sections
    out: list[str] = []
    for section in sections:
        used = gen.prompt_tokens(template.format(text=section))
        if used is not None and used + reply_tokens > gen.context_tokens and len(section) > 200:
            out += _fit(split_sections(section, max(200, len(section) // 2)), gen, template, reply_tokens)
        else:
            out.append(section)
    return out


def _drop(result: AugmentResult, job: dict[str, Any], reason: str, item: Any) -> None:
    result.dropped.append({"kind": job["kind"], "source": job["source"], "section": job["section"],
                           "reason": reason, "item": item})


def _check_paraphrase(job: dict[str, Any], reply: str, ended: bool, by: str, guard: ProbeGuard, min_share: float,
                      seen: set[str], result: AugmentResult) -> None:
    result.generated["paraphrase"] += 1
    text = _PREAMBLE.sub("", reply.strip(), count=1).strip()
    if not ended:  # cut at the token limit: keep the whole sentences
        text = whole_sentences(text)
        if not text:
            return _drop(result, job, "cut off: no whole sentence before the token limit", reply[:300])
    if not text:
        return _drop(result, job, "empty", reply[:300])
    problem = chat_format_problem(text)
    if problem:
        return _drop(result, job, f"malformed: {problem}", text[:300])
    words, source_words = content_words(text), content_words(job["text"])
    trimmed = trim_tail(text, set(source_words), 0.01)
    if trimmed != text:
        result.trimmed["paraphrase"] += 1
        text, words = trimmed, content_words(trimmed)
    if len(words) < 0.25 * len(source_words):
        return _drop(result, job, f"too short: {len(words)} content words for a section of {len(source_words)}",
                     text[:300])
    share, invented = grounding(text, set(source_words))
    if invented:
        return _drop(result, job, f"invented numbers: {', '.join(invented[:5])}", text[:300])
    names = invented_names(text, set(source_words))
    if names:
        return _drop(result, job, f"invented names: {', '.join(names[:5])}", text[:300])
    if share < min_share:
        return _drop(result, job, f"not grounded: {share:.0%} of its content words are in the section "
                                  f"(min {min_share:.0%})", text[:300])
    grams, source_grams = ngrams(normalize(text).split()), ngrams(normalize(job["text"]).split())
    if grams and len(grams & source_grams) >= 0.8 * len(grams):
        return _drop(result, job, "copies the section: 80%+ of its 4-word runs are the section's", text[:300])
    key = normalize(text)
    if key in seen:
        return _drop(result, job, "duplicate of another paraphrase", text[:300])
    for pnorm, _, original in guard.questions:
        if len(pnorm) >= 20 and pnorm in key:
            return _drop(result, job, f"contains probe question: {original}", text[:300])
    seen.add(key)
    result.rows.append({"text": text, "kind": "paraphrase", "style": job["style"], "source": job["source"],
                        "section": job["section"], "generator": by})


def _check_qa(job: dict[str, Any], reply: str, ended: bool, by: str, guard: ProbeGuard, n: int, min_share: float,
              seen: set[str], result: AugmentResult) -> None:
    pairs = parse_qa_pairs(reply or "")
    if not ended and pairs:  # the last pair may have been cut mid-answer
        result.generated["qa"] += 1
        _drop(result, job, "cut off at the token limit", {"question": pairs[-1][0], "answer": pairs[-1][1]})
        pairs = pairs[:-1]
    if not pairs:
        return _drop(result, job, "no Q/A pairs found in the reply", (reply or "")[:300])
    source_words = set(content_words(job["text"]))
    kept = 0
    for question, answer in pairs:
        result.generated["qa"] += 1
        trimmed = trim_tail(answer, source_words, min_share)
        if trimmed != answer:
            result.trimmed["qa"] += 1
            answer = trimmed
        item = {"question": question, "answer": answer}
        q_words = content_words(question)
        share, invented = grounding(answer, source_words)
        match = guard.match(question)
        if not answer.strip():
            _drop(result, job, "empty answer", item)
        elif not question.rstrip().endswith("?"):
            _drop(result, job, "question does not end with '?'", item)
        elif len(normalize(question).split()) < 3:
            _drop(result, job, "question under 3 words", item)
        elif problem := chat_format_problem(answer):
            _drop(result, job, f"malformed answer: {problem}", item)
        elif not content_words(answer):
            _drop(result, job, "answer has no content words", item)
        elif normalize(answer) == normalize(question) or set(content_words(answer)) <= set(q_words):
            _drop(result, job, "answer only repeats the question", item)
        elif invented:
            _drop(result, job, f"invented numbers: {', '.join(invented[:5])}", item)
        elif names := invented_names(answer, source_words):
            _drop(result, job, f"invented names: {', '.join(names[:5])}", item)
        elif answer.rstrip().endswith((":", ",", ";")):
            _drop(result, job, "answer is incomplete (ends with a colon or comma)", item)
        elif share < min_share:
            _drop(result, job, f"not grounded: {share:.0%} of the answer's content words are in the section "
                               f"(min {min_share:.0%})", item)
        elif match:
            _drop(result, job, f"matches probe (overlap {match[1]:.2f}): {match[0]}", item)
        elif normalize(question) in seen:
            _drop(result, job, "duplicate question", item)
        elif kept >= n:
            _drop(result, job, f"over the {n} pairs asked", item)
        else:
            kept += 1
            seen.add(normalize(question))
            result.rows.append({"question": question, "answer": answer, "kind": "qa", "source": job["source"],
                                "section": job["section"], "generator": by})


def augment_for_infusion(config: Any, corpus: Any, trainer: Any, cache: str | Path,
                         echo: Callable[[str], Any] = print) -> AugmentResult:
    """The pipeline's call: `config.data.paraphrases` / `generated_qa` per section of the corpus,
    written by `config.data.augment_model` (None: the model being trained, adapter off),
    never matching `config.eval.probes` or `config.eval.retention` questions."""
    data = config.data
    if not (data.paraphrases or data.generated_qa):
        return AugmentResult()
    started = time.perf_counter()
    result = augment(
        corpus,
        Generator.from_spec(data.augment_model, trainer=trainer, batch_size=config.eval.batch_size),
        paraphrases=data.paraphrases,
        qa_pairs=data.generated_qa,
        probes=guard_sources(config),
        cache=cache,
        section_chars=data.augment_section_chars,
    )
    echo(result.report())
    echo(f"augmentation: {result.replies_generated} replies written ({result.replies_cached} from the cache) in "
         f"{seconds(time.perf_counter() - started)}")
    return result
