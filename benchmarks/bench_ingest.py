#!/usr/bin/env python
"""Corpus.ingest at scale: pages/s and peak RSS of the ingesting process, for N URLs and for N/10.

One run:

  1. serves generated article pages (tests/corpus/ingest_site.py: a few KB of article-like
     HTML each, every one distinct) from a local HTTP server in its own process, so that the
     server's memory and threads are not the ingester's;
  2. for each size (default 20,000 and 2,000 URLs) writes a URL file (every 20th URL a 404,
     every 20th a 301 redirect to an article) and runs ``Corpus.ingest(url_file, store)`` in a
     fresh process, which reports its wall time, pages/s (URLs done per second, 404s
     included), its RSS after imports and its peak RSS (``ru_maxrss``), RSS sampled during the
     crawl (psutil when installed), and the store's counts;
  3. with ``--from-urls``, the in-memory ``Corpus.from_urls`` on the smaller size, for
     comparison (its memory grows with N: every document, then cleaning over all of them);
  4. writes ``benchmarks/results/ingest-<timestamp>.json`` (machine, versions, commit).

    python benchmarks/bench_ingest.py                       # 20,000 and 2,000 URLs
    python benchmarks/bench_ingest.py --sizes 2000,200 --from-urls

Peak RSS that does not grow from 2,000 to 20,000 URLs (beyond the URL set itself) is what
shows ingestion is bounded in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "tests"), str(REPO / "tests" / "corpus")]

from provenance import cpu_name, git_commit, version, write_result  # noqa: E402


def serve() -> None:
    """The page server: prints its base URL, serves until stdin closes."""
    from ingest_site import IngestHandler
    from local_http import serve as serve_http

    with serve_http(type("Handler", (IngestHandler,), IngestHandler.fresh_state())) as server:
        print(server.base, flush=True)
        sys.stdin.read()


def rss_mb() -> float:
    try:
        import psutil
    except ImportError:
        return float("nan")
    return psutil.Process().memory_info().rss / 2**20


def ingest(url_file: str, store: str, concurrency: int, mode: str) -> None:
    """In a fresh process: ingest (or from_urls) and print one JSON line of measurements."""
    from kinfuse.corpus import Corpus

    baseline_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    baseline = rss_mb()
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            samples.append(rss_mb())

    threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    if mode == "ingest":
        result = Corpus.ingest(url_file, store, concurrency=concurrency, allow_private=True)
        counts = result.counts()
    else:
        urls = Path(url_file).read_text().split()
        corpus = Corpus.from_urls(urls, concurrency=concurrency, allow_private=True)
        counts = {"sources": len(corpus.records), "documents": len(corpus), "chars": sum(len(d.text) for d in corpus)}
    seconds = time.perf_counter() - start
    done.set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({
        "mode": mode, "seconds": round(seconds, 2), "pages_per_s": round(counts["sources"] / seconds, 1),
        "rss_after_imports_mb": round(baseline, 1), "peak_rss_after_imports_mb": round(baseline_peak, 1),
        "peak_rss_mb": round(peak, 1),
        "rss_samples_mb": [round(s, 1) for s in samples[:: max(1, len(samples) // 20)]],
        "counts": counts,
    }))


def url_file(folder: Path, base: str, n: int) -> Path:
    lines = []
    for i in range(n):
        kind = "missing" if i % 20 == 7 else "r" if i % 20 == 13 else "a"
        lines.append(f"{base}/{kind}/{i}")
    path = folder / f"urls-{n}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_child(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20000,2000", help="URL counts, comma-separated")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--from-urls", action="store_true", help="also Corpus.from_urls on the smallest size")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "URL_FILE", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    if args.child:
        mode, urls, store = args.child
        return ingest(urls, store, args.concurrency, mode)

    sizes = [int(s) for s in args.sizes.split(",")]
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    runs = []
    try:
        base = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            for n in sizes:
                urls = url_file(Path(tmp), base, n)
                print(f"ingesting {n} URLs ...", flush=True)
                run = {"urls": n, **run_child(["--child", "ingest", str(urls), f"{tmp}/store-{n}",
                                               "--concurrency", str(args.concurrency)])}
                run["store_mb"] = round(sum(p.stat().st_size for p in Path(f"{tmp}/store-{n}").rglob("*")
                                            if p.is_file()) / 2**20, 1)
                print(json.dumps(run), flush=True)
                runs.append(run)
            if args.from_urls:
                n = min(sizes)
                print(f"Corpus.from_urls on {n} URLs ...", flush=True)
                run = {"urls": n, **run_child(["--child", "from_urls", str(url_file(Path(tmp), base, n)), "-",
                                               "--concurrency", str(args.concurrency)])}
                print(json.dumps(run), flush=True)
                runs.append(run)
    finally:
        server.stdin.close()
        server.wait(30)
    report = {
        "benchmark": "ingest",
        "device": "cpu",  # fetching, extraction and the store run on the CPU; no accelerator is used
        "machine": {"cpu": cpu_name(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {k: version(k) for k in ("kinfuse", "httpx", "psutil")},
        "commit": git_commit(),
        "concurrency": args.concurrency,
        "page_bytes": "3.5-5 KB of HTML (tests/corpus/ingest_site.py article())",
        "runs": runs,
    }
    print(f"wrote {write_result(report, args.results, 'ingest')}")


if __name__ == "__main__":
    main()
