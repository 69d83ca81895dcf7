"""Tests for kinfuse.corpus.corpus (the Corpus class): from_texts, from_documents, from_dataset,
+, to_dataset, report, save/load and the empty-corpus error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_site import Fetched

from kinfuse.corpus import Corpus, Document
from kinfuse.errors import CorpusError, KinfuseError


def test_texts_sources_and_empty() -> None:
    corpus = Corpus.from_texts(["Alpha  beta.\n\n\n\ngamma", "", "   ", "Delta."])
    assert [d.source for d in corpus] == ["text:0", "text:3"]
    assert corpus.documents[0].text == "Alpha beta.\n\ngamma"
    assert [r.status for r in corpus.records] == ["kept", "skipped", "skipped", "kept"]
    assert corpus.records[1].reason == "no text"
    named = Corpus.from_texts(["x"], sources=["mine"])
    assert named.documents[0].source == "mine"
    with pytest.raises(CorpusError, match="2 texts but 1 sources"):
        Corpus.from_texts(["a", "b"], sources=["only-one"])


def test_documents_add_len_iter() -> None:
    a = Corpus.from_documents([Document("First.", "s1", "T1"), Document("", "s-empty")])
    b = Corpus.from_texts(["Second."])
    both = a + b
    assert len(both) == 2
    assert [d.text for d in both] == ["First.", "Second."]
    assert [r.source for r in both.records] == ["s1", "s-empty", "text:0"]
    assert both.records[1].status == "skipped"
    assert both[0].title == "T1"


def test_to_dataset_columns() -> None:
    corpus = Corpus.from_documents([Document("One.", "s1", "Title one"), Document("Two.", "s2")])
    ds = corpus.to_dataset()
    assert ds.column_names == ["text", "source", "title", "fetched_at"]
    assert ds["text"] == ["One.", "Two."]
    assert ds["title"] == ["Title one", ""]


def test_report_lines_and_totals() -> None:
    corpus = Corpus.from_texts(["x" * 400, ""], sources=["good-source", "empty-source"])
    report = corpus.report()
    lines = report.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("kept") and "good-source" in lines[0] and "400 chars" in lines[0]
    assert lines[1].startswith("skipped") and "empty-source" in lines[1] and "no text" in lines[1]
    assert "2 sources" in lines[2] and "1 documents" in lines[2] and "400 characters" in lines[2]
    assert "~100 tokens" in lines[2]


def test_empty_corpus_error_names_every_source(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as err:
        Corpus.from_texts(["", "  "], sources=["first-empty", "second-empty"])
    msg = str(err.value)
    assert "first-empty" in msg and "second-empty" in msg and "no text" in msg

    (tmp_path / "x.png").write_bytes(b"png")
    (tmp_path / "y.txt").write_text("   ", encoding="utf-8")
    with pytest.raises(CorpusError) as err:
        Corpus.from_paths([tmp_path])
    msg = str(err.value)
    assert "x.png" in msg and "y.txt" in msg

    with pytest.raises(CorpusError, match="no source"):
        Corpus.from_texts([])


def test_from_dataset_and_round_trip() -> None:
    import datasets

    ds = datasets.Dataset.from_dict(
        {"text": ["First  row.", "", None, "Fourth row."], "title": ["T1", "", "", "T4"], "lang": ["en"] * 4}
    )
    corpus = Corpus.from_dataset(ds)
    assert [d.text for d in corpus] == ["First row.", "Fourth row."]
    assert [d.source for d in corpus] == ["dataset:0", "dataset:3"]
    assert corpus[0].title == "T1"
    assert [r.status for r in corpus.records] == ["kept", "skipped", "skipped", "kept"]
    assert corpus.records[2].reason == "not a string (NoneType)"
    again = Corpus.from_dataset(corpus.to_dataset())  # source/title/fetched_at columns come back
    assert [(d.text, d.source, d.title) for d in again] == [(d.text, d.source, d.title) for d in corpus]
    other = datasets.Dataset.from_dict({"body": ["x"]})
    with pytest.raises(CorpusError, match="no column 'text'"):
        Corpus.from_dataset(other)
    assert Corpus.from_dataset(other, text_column="body")[0].text == "x"


# ---------------------------------------------------------------------------
# save/load and the report of a fetched corpus
# ---------------------------------------------------------------------------


def test_save_load_round_trip(fetched: Fetched, tmp_path: Path) -> None:
    corpus = fetched[0] + Corpus.from_texts(["Extra text."])
    folder = corpus.save(tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == ["cleaning.json", "documents.jsonl", "records.jsonl"]
    loaded = Corpus.load(folder)
    assert loaded.documents == corpus.documents
    assert loaded.records == corpus.records
    assert loaded.cleaning == corpus.cleaning
    assert loaded.report() == corpus.report()
    # the document -> record link survives: cleaning after load still updates the right record
    twice = (loaded + loaded).clean().records[len(corpus.records)]
    assert (twice.status, twice.reason) == ("skipped", f"duplicate of {corpus.records[0].source}")
    with pytest.raises(CorpusError, match="not a saved corpus"):
        Corpus.load(tmp_path / "nothing-here")


def test_report_lists_every_source_and_totals(fetched: Fetched) -> None:
    corpus = fetched[0]
    report = corpus.report().splitlines()
    assert len(report) == len(corpus.records) + 2  # sources, totals, cleaning
    for line, r in zip(report, corpus.records):
        assert line.startswith(r.status) and r.source in line and r.reason in line
    chars = sum(len(d.text) for d in corpus)
    assert f"{len(corpus)} documents, {chars} characters, ~{chars // 4} tokens" in report[-2]
    assert report[-1].startswith("cleaning: ")


@pytest.mark.parametrize(
    "call",
    [
        lambda: Corpus.from_urls("http://127.0.0.1:9/page"),
        lambda: Corpus.from_paths("notes"),
        lambda: Corpus.from_paths(Path("notes")),
        lambda: Corpus.from_texts("one whole text"),
        lambda: Corpus.from_texts(["a text"], sources="src"),
    ],
)
def test_bare_string_where_a_list_belongs_refused(call) -> None:
    with pytest.raises(KinfuseError) as err:
        call()
    assert "needs a list" in str(err.value) and "pass [" in str(err.value)
