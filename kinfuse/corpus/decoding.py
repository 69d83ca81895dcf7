"""Turning bytes into text: charset sniffing and detection, and telling text from binary.

A file or an HTTP body is only bytes: :func:`decode` picks the charset the way
browsers do (with two corrections, below) and says in a note what it guessed
or repaired, :func:`binary_reason` refuses bodies that are not text at all (an
image or a PDF served as HTML), and :func:`mostly_undecodable` tells when a
decoded body is mostly replacement characters.
"""

from __future__ import annotations

import codecs
import re

_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
# Bytes that never occur in text: C0 controls other than tab, LF, VT, FF, CR, ESC.
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13, 27)) + b"\x7f"
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def binary_reason(raw: bytes) -> str | None:
    """Why a body that claims to be text is not (a PDF, NUL bytes, control bytes), or None."""
    if raw.startswith(_UTF16_BOMS):  # UTF-16 text is full of NULs, legitimately
        return None
    # A PDF whose streams happen to be uncompressed text passes the byte
    # checks below, yet its "text" is PDF operators: refuse it by its magic.
    if raw[:1024].lstrip().startswith(b"%PDF-"):
        return "a PDF document (starts with %PDF-): convert it to text first (e.g. pdftotext) and give the .txt"
    sample = raw[:65536]
    if b"\x00" in sample:
        return "NUL bytes"
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    if sample and controls > 0.05 * len(sample):
        return f"{controls / len(sample):.0%} control bytes"
    return None


def _codec_ok(name: str | None) -> bool:
    if not name:
        return False
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _in(c: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in ranges)


_KANA = ((0x3040, 0x30FF),)
_HAN = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF))
_HANGUL = ((0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F))
# CJK punctuation and full-width forms, without the half-width katakana that
# legacy Western accented letters turn into when read as Shift_JIS.
_CJK_PUNCT = ((0x3000, 0x303F), (0xFF00, 0xFF60), (0xFFE0, 0xFFEF), (0x2010, 0x2027), (0x25A0, 0x25FF))


def _plausible(text: str, script: str) -> bool:
    """Whether decoded text reads as the language the candidate charset is for.

    Legacy multi-byte charsets decode many byte strings without error, so a
    clean decode is not enough: most non-ASCII characters must be of the
    expected script (Japanese always has kana), and they must not sit alone
    inside Latin words, which is what Western accented letters become when
    read as a CJK charset.
    """
    sample = text[:20000]
    wide = [i for i, c in enumerate(sample) if ord(c) > 127]
    if len(wide) < 2:
        return False
    chars = [sample[i] for i in wide]
    if script == "ja":
        good = sum(1 for c in chars if _in(c, _KANA + _HAN + _CJK_PUNCT))
        if sum(1 for c in chars if _in(c, _KANA)) < 0.1 * len(chars):
            return False
    elif script == "ko":
        good = sum(1 for c in chars if _in(c, _HANGUL + _CJK_PUNCT))
    else:
        good = sum(1 for c in chars if _in(c, _HAN + _CJK_PUNCT))
    if good < 0.9 * len(chars):
        return False
    last = len(sample) - 1
    inside_words = sum(
        1 for i in wide if 0 < i < last and sample[i - 1].isascii() and sample[i - 1].isalpha()
        and sample[i + 1].isascii() and sample[i + 1].isalpha()
    )  # fmt: skip
    return inside_words <= 0.05 * len(wide)


# Tried in order when bytes are not UTF-8 and nothing declares a charset.
_CANDIDATES = (("cp932", "Shift_JIS", "ja"), ("euc_jp", "EUC-JP", "ja"), ("euc_kr", "EUC-KR", "ko"),
               ("gb18030", "GB18030", "zh"), ("big5", "Big5", "zh"))  # fmt: skip


def _detect(raw: bytes) -> tuple[str, str] | None:
    """(text, charset label) for undeclared bytes that decode cleanly and plausibly in a CJK charset."""
    for codec, label, script in _CANDIDATES:
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError:
            continue
        if _plausible(text, script):
            return text, label
    return None


def decode(raw: bytes, declared: str | None = None, html: bool = True) -> tuple[str, str]:
    """Text of a body and a note on what was guessed or repaired ("" when nothing was).

    The charset comes from a byte-order mark, else the declared one (the
    Content-Type header), else a ``<meta charset>``, else UTF-8. A body that
    is not valid UTF-8 and declares nothing is tried in the common CJK
    charsets (Shift_JIS, EUC-JP, EUC-KR, GB18030, Big5: kept when it decodes
    cleanly and reads as that language), else decoded as windows-1252, the
    fallback browsers use for legacy Western pages. A body labelled with a
    legacy charset whose bytes are valid UTF-8 with non-ASCII characters is
    decoded as UTF-8: such bytes are UTF-8 mislabelled, and read as the label
    they would be mojibake. Invalid byte sequences in the chosen charset become
    U+FFFD, and the note says how many there were.
    """
    if raw.startswith(codecs.BOM_UTF8):
        name: str | None = "utf-8"
        raw = raw[3:]
    elif raw.startswith(_UTF16_BOMS):
        name = "utf-16"
    else:
        name = declared if _codec_ok(declared) else None
        if name is None and html:
            m = _META_CHARSET.search(raw[:4096])
            meta = m.group(1).decode("ascii", "replace") if m else None
            # A <meta charset=utf-16> in a page that reached us as bytes is a
            # mislabelled 8-bit page: browsers read it as UTF-8 too.
            if meta and meta.lower().startswith("utf-16"):
                meta = "utf-8"
            name = meta if _codec_ok(meta) else None
    if name is None:
        try:
            return raw.decode("utf-8"), ""
        except UnicodeDecodeError:
            detected = _detect(raw)
            if detected:
                return detected[0], f"not valid UTF-8 and no charset declared: detected and decoded as {detected[1]}"
            text = raw.decode("windows-1252", errors="replace")
            return text, "not valid UTF-8 and no charset declared: decoded as windows-1252"
    codec = codecs.lookup(name).name
    if not codec.startswith("utf-") and not raw.isascii():
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return text, f"labelled {name} but the bytes are valid UTF-8: decoded as UTF-8 (the label is wrong)"
    try:
        return raw.decode(name), ""
    except UnicodeDecodeError:
        text = raw.decode(name, errors="replace")
        return text, f"invalid {codec.upper()}: {text.count(chr(0xFFFD))} bad byte sequence(s) replaced with U+FFFD"


def mostly_undecodable(text: str) -> bool:
    """True when over a tenth of a decoded body is U+FFFD: bytes in no charset we know."""
    sample = text[:65536]
    return bool(sample) and sample.count("\ufffd") > 0.1 * len(sample)
