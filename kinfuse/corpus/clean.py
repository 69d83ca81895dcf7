"""Text-level cleaning: normalisation, exact and near-duplicates, boilerplate lines.

Everything here works on plain texts (and, for boilerplate, their sources), not
on documents or records: :meth:`kinfuse.corpus.Corpus.clean` decides with
:func:`plan_cleaning` what goes and then updates its documents and records.
Repeated text matters because a model memorises what it sees twice far more
than the rest, so copies of a page and lines every page of a site repeats
(footers, bylines, notices) must not reach it.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter, defaultdict
from urllib.parse import urlsplit

# ---------------------------------------------------------------------------
# Whitespace and text normalisation
# ---------------------------------------------------------------------------

# Invisible characters that only get in the way of a tokenizer: controls,
# BOMs and zero-width spaces (ZWJ/ZWNJ stay: some scripts and emoji need them).
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u200b\u2060\ufeff]")
_BLANKS = re.compile(r"\n{3,}")
WORD = re.compile(r"\w+")


def normalize_text(text: str) -> str:
    """NFC-normalise, collapse spaces within lines and runs of blank lines.

    Single line breaks are kept (they separate list items and table rows);
    two or more become exactly one blank line, so paragraphs stay apart.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    # Within a line (no "\n"), " ".join(line.split()) is re.sub(r"[^\S\n]+", " ", line).strip(): str.split
    # and the regex share one definition of whitespace, and the split is faster (benchmarks/README.md).
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


# ---------------------------------------------------------------------------
# Duplicates and near-duplicates
# ---------------------------------------------------------------------------

_SHINGLE = 5  # words per shingle for near-duplicate detection


def dedup_key(text: str) -> str:
    """The identity of a text for exact deduplication."""
    # Case and spacing differences do not make a different document.
    return hashlib.sha1(" ".join(text.split()).casefold().encode("utf-8")).hexdigest()


def shingles(text: str) -> set[int]:
    """Hashes of the word 5-grams of a text (one shingle for shorter texts)."""
    words = WORD.findall(text.casefold())
    if len(words) < _SHINGLE:
        return {hash(tuple(words))} if words else set()
    # zip over shifted views builds the 5-tuples in C; hashes stand in for them
    # (a collision can only merge two shingles, which hardly moves a Jaccard).
    return set(map(hash, zip(*(words[k:] for k in range(_SHINGLE)))))


def near_duplicates(sets: list[set[int] | None], threshold: float) -> dict[int, int]:
    """Map each document whose shingle Jaccard with an earlier kept one is >= threshold to it.

    Exact all-pairs would be quadratic; prefix filtering (as in AllPairs / PPJoin)
    is exact and fast: with shingles in one global order (rarest first), two sets
    with Jaccard >= t must share a shingle among the first |s| - ceil(t*|s|) + 1 of
    each, so only those prefixes are indexed and only sharers are compared.
    ``None`` entries (already removed documents) are passed over.
    """
    df: Counter[int] = Counter()
    for s in sets:
        if s:
            df.update(s)
    repeated = {h for h, count in df.items() if count > 1}
    index: dict[int, list[int]] = defaultdict(list)
    found: dict[int, int] = {}
    for j, s in enumerate(sets):
        if not s:
            continue
        n = len(s)
        # The epsilon keeps float error from shortening the prefix (a longer one is safe).
        p = n - math.ceil(threshold * n - 1e-9) + 1
        # Shingles no other document has come first in the order. When they fill
        # the prefix, the document can neither match nor be matched: skip it
        # without sorting (most documents of a real corpus). Otherwise only the
        # shared shingles can find candidates, so only they are sorted and indexed.
        shared = s & repeated
        if n - len(shared) >= p:
            continue
        prefix = sorted(shared, key=lambda h: (df[h], h))[: p - (n - len(shared))]
        candidates: set[int] = set()
        for h in prefix:
            candidates.update(index.get(h, ()))
        for i in sorted(candidates):  # the earliest kept match is the one named
            other = sets[i]
            assert other is not None
            m = len(other)
            if n < threshold * m or m < threshold * n:  # sizes alone rule it out
                continue
            inter = len(s & other)
            if inter >= threshold * (n + m - inter):
                found[j] = i
                break
        else:
            for h in prefix:
                index[h].append(j)
    return found


# ---------------------------------------------------------------------------
# Boilerplate lines
# ---------------------------------------------------------------------------


def _site(source: str) -> str | None:
    """host[:port] of an http(s) source, the unit for boilerplate lines; None otherwise."""
    if not source.startswith(("http://", "https://")):
        return None
    try:
        return urlsplit(source).netloc.lower() or None
    except ValueError:
        return None


def boilerplate_lines(texts: dict[int, str], sources: dict[int, str]) -> tuple[dict[int, str], int, int]:
    """Remove lines repeated across many pages of one site (footers, bylines, notices).

    A line is boilerplate for a site with at least 3 pages when it appears in at
    least half of them and in at least 3. Returns the changed texts, the number of
    distinct boilerplate lines and the number of line occurrences removed.
    """
    by_site: dict[str, list[int]] = defaultdict(list)
    for i in texts:
        site = _site(sources[i])
        if site is not None:
            by_site[site].append(i)
    changed: dict[int, str] = {}
    distinct = occurrences = 0
    for idxs in by_site.values():
        if len(idxs) < 3:
            continue
        need = max(3, math.ceil(len(idxs) / 2))
        df: Counter[str] = Counter()
        for i in idxs:
            df.update({line for line in texts[i].split("\n") if line})
        common = {line for line, count in df.items() if count >= need}
        if not common:
            continue
        distinct += len(common)
        for i in idxs:
            lines = texts[i].split("\n")
            kept = [line for line in lines if line not in common]
            if len(kept) != len(lines):
                occurrences += sum(1 for line in lines if line in common)
                changed[i] = normalize_text("\n".join(kept))
    return changed, distinct, occurrences


# ---------------------------------------------------------------------------
# One cleaning pass
# ---------------------------------------------------------------------------

# The counts of a cleaning pass, and how a report names them.
CLEANING_LABELS = {
    "exact_duplicates": "exact duplicate(s)",
    "near_duplicates": "near-duplicate(s)",
    "boilerplate_lines": "boilerplate line(s)",
    "boilerplate_lines_removed": "boilerplate line occurrence(s) removed",
    "emptied_by_boilerplate": "document(s) left empty by boilerplate removal",
    "too_short": "too short",
}


def plan_cleaning(
    texts: list[str],
    sources: list[str],
    *,
    dedup: bool,
    near_dup_threshold: float | None,
    boilerplate: bool,
    min_chars: int,
) -> tuple[dict[int, str], dict[int, str], dict[str, int]]:
    """What one cleaning pass does to texts ``0..n-1`` (see :meth:`Corpus.clean` for the rules).

    Returns the texts after boilerplate removal (by index), the reason for each
    removed index, and the counts keyed as :data:`CLEANING_LABELS`.
    """
    cleaned = dict(enumerate(texts))
    named = dict(enumerate(sources))
    removed: dict[int, str] = {}
    stats = dict.fromkeys(CLEANING_LABELS, 0)

    def drop_exact() -> None:
        first: dict[str, int] = {}
        for i, text in cleaned.items():
            if i in removed:
                continue
            key = dedup_key(text)
            if key in first:
                removed[i] = f"duplicate of {named[first[key]]}"
                stats["exact_duplicates"] += 1
            else:
                first[key] = i

    if dedup:
        drop_exact()
        if near_dup_threshold is not None:
            sets = [None if i in removed else shingles(cleaned[i]) for i in range(len(texts))]
            for j, i in near_duplicates(sets, near_dup_threshold).items():
                removed[j] = f"near-duplicate of {named[i]}"
                stats["near_duplicates"] += 1
    if boilerplate:
        alive = {i: t for i, t in cleaned.items() if i not in removed}
        changed, distinct, occurrences = boilerplate_lines(alive, named)
        cleaned.update(changed)
        stats["boilerplate_lines"] = distinct
        stats["boilerplate_lines_removed"] = occurrences
        for i, text in changed.items():
            if not text:
                removed[i] = "no text left after removing boilerplate lines"
                stats["emptied_by_boilerplate"] += 1
        if dedup and changed:
            drop_exact()  # pages that differed only by their boilerplate
    if min_chars > 0:
        for i, text in cleaned.items():
            if i not in removed and len(text) < min_chars:
                removed[i] = f"shorter than {min_chars} characters ({len(text)}; min_chars={min_chars})"
                stats["too_short"] += 1
    return cleaned, removed, stats
