"""Load a text corpus from URLs, sitemaps, files, strings or datasets, cleaned, with main-text extraction.

The corpus is what kinfuse infuses into a model, so three things matter here:

* only the article text of a web page should reach the model: navigation,
  cookie banners, share bars, related links and footers are noise the model
  would otherwise memorise (see :func:`extract_text`);
* the same text should not reach it twice: exact and near-duplicate
  documents and lines repeated across a site's pages are removed
  (:meth:`Corpus.clean`), since repeats are memorised far more than the rest;
* nothing is lost silently: every input source gets exactly one
  :class:`SourceRecord` saying whether it was kept, skipped or failed and why,
  and a corpus without any document raises :class:`~kinfuse.errors.CorpusError`
  listing every source and the reason it was dropped.

Typical use::

    corpus = Corpus.from_urls(["https://example.org/a", "https://example.org/b"])
    corpus = corpus + Corpus.from_sitemap("https://example.org/sitemap.xml", cache_dir=".cache")
    corpus = corpus + Corpus.from_paths(["notes/", "extra.jsonl.gz"])
    print(corpus.report())
    corpus.save("corpus/")  # documents.jsonl + records.jsonl; Corpus.load("corpus/")
    dataset = corpus.to_dataset()  # columns: text, source, title, fetched_at
    store = Corpus.ingest("urls.txt", "store/")  # 50,000 pages streamed to disk; rerun to resume

Where each part lives (imports go down this list, never up):

* :mod:`.corpus`: :class:`Corpus` (constructors, cleaning, save/load, report, ``+``);
* :mod:`.ingest`: :meth:`Corpus.ingest`, a crawl streamed into a store on disk, resumable;
* :mod:`.store`: :class:`CorpusStore`, that store (JSONL shards, a status line per source);
* :mod:`.fetch`: web pages and sitemaps (client, cache, robots.txt, sitemaps);
* :mod:`.files`: local files (folders listed safely, a size cap);
* :mod:`.decoding`: bytes to text (charsets, detection, binary detection);
* :mod:`.extract`: the main text of an HTML page;
* :mod:`.clean`: normalisation, duplicates, near-duplicates, boilerplate lines;
* :mod:`.documents`: :class:`Document` and :class:`SourceRecord`.
"""

from .clean import normalize_text
from .corpus import Corpus
from .documents import Document, SourceRecord, texts_with_sources
from .extract import extract_text, extract_title
from .store import CorpusStore

__all__ = [
    "Corpus",
    "CorpusStore",
    "Document",
    "SourceRecord",
    "extract_text",
    "extract_title",
    "normalize_text",
    "texts_with_sources",
]
