"""Tests for kinfuse.corpus.decoding through a real local server: undeclared Shift_JIS,
UTF-8 mislabelled as ISO-8859-1, and a text-only PDF served as text/html (issue 21)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from local_http import PageHandler

from kinfuse.corpus import Corpus
from kinfuse.corpus.decoding import decode

JA = "日本語の記事です。これは文字コードの宣言がないページで、ひらがなとカタカナと漢字を含む長い段落です。"
FR = "Le caf\u00e9 de la gare, d\u00e9j\u00e0 ferm\u00e9, servait une cr\u00e8me br\u00fbl\u00e9e tr\u00e8s appr\u00e9ci\u00e9e des voyageurs."
# A PDF whose only stream is uncompressed text: no NUL or control bytes.
PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
    b"3 0 obj << /Type /Page /Parent 2 0 R /Contents 4 0 R >> endobj\n"
    b"4 0 obj << /Length 60 >> stream\nBT /F1 12 Tf 72 712 Td (A sentence inside a PDF file.) Tj ET\n"
    b"endstream endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
)


def _page(text: str) -> str:
    return f"<html><head><title>T</title></head><body><article><p>{text}</p></article></body></html>"


class CharsetHandler(PageHandler):
    def route(self, path: str, n: int) -> None:
        if path == "/sjis":  # no charset in the header nor the page
            self.send(200, _page(JA).encode("shift_jis"), ctype="text/html")
        elif path == "/mislabelled":  # UTF-8 bytes, labelled ISO-8859-1
            self.send(200, _page(FR).encode("utf-8"), ctype="text/html; charset=iso-8859-1")
        elif path == "/latin1":  # a correct ISO-8859-1 label stays as it is
            self.send(200, _page(FR).encode("latin-1"), ctype="text/html; charset=iso-8859-1")
        elif path == "/pdf":
            self.send(200, PDF, ctype="text/html")
        else:
            self.send(404, b"unknown")


@pytest.fixture(scope="module")
def http_handler() -> type[CharsetHandler]:
    return CharsetHandler


@pytest.fixture(scope="module")
def records(http_server) -> tuple[dict, dict]:
    # URL ingestion may refuse loopback addresses by default: this test server is one.
    private = {"allow_private": True} if "allow_private" in inspect.signature(Corpus.from_urls).parameters else {}
    base = http_server.base
    corpus = Corpus.from_urls([base + p for p in ("/sjis", "/mislabelled", "/latin1", "/pdf")], dedup=False, **private)
    recs = {r.source[len(base) :]: r for r in corpus.records}
    texts = {d.source[len(base) :]: d.text for d in corpus}
    return recs, texts


def test_undeclared_shift_jis_detected(records) -> None:
    recs, texts = records
    assert texts["/sjis"] == JA
    assert "Shift_JIS" in recs["/sjis"].reason


def test_utf8_labelled_latin1_decoded_as_utf8_with_note(records) -> None:
    recs, texts = records
    assert texts["/mislabelled"] == FR
    assert "labelled iso-8859-1" in recs["/mislabelled"].reason and "valid UTF-8" in recs["/mislabelled"].reason
    assert texts["/latin1"] == FR and recs["/latin1"].reason == ""


def test_pdf_served_as_html_refused(records) -> None:
    recs, texts = records
    assert "/pdf" not in texts
    rec = recs["/pdf"]
    assert rec.status == "skipped" and "PDF" in rec.reason and "pdftotext" in rec.reason


def test_pdf_file_named_html_refused(tmp_path: Path) -> None:
    (tmp_path / "paper.html").write_bytes(PDF)
    (tmp_path / "ok.txt").write_text("A note.", encoding="utf-8")
    rec = {r.source: r for r in Corpus.from_paths([tmp_path]).records}[str(tmp_path / "paper.html")]
    assert rec.status == "skipped" and "PDF" in rec.reason


@pytest.mark.parametrize("text", [FR, "na\u00efve r\u00e9sum\u00e9 \u00e0 la fa\u00e7on", "Stra\u00dfe \u00fcber M\u00fcnchen"])
def test_western_legacy_text_not_taken_for_cjk(text: str) -> None:
    decoded, note = decode(text.encode("cp1252"), html=False)
    assert decoded == text and "windows-1252" in note
