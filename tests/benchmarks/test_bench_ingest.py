"""benchmarks/bench_ingest.py at a tiny size: the server and ingesting processes start, the pages
are ingested, and the result JSON holds the measurements of every run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_ingest_writes_its_measurements(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_ingest.py"), "--sizes", "40,20", "--from-urls",
         "--results", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (result,) = tmp_path.glob("ingest-*.json")
    report = json.loads(result.read_text())
    assert [(r["mode"], r["urls"]) for r in report["runs"]] == [("ingest", 40), ("ingest", 20), ("from_urls", 20)]
    first = report["runs"][0]
    assert first["counts"] == {"sources": 40, "kept": 38, "skipped": 0, "failed": 2, "documents": 38,
                               "chars": first["counts"]["chars"]}
    assert first["peak_rss_mb"] >= first["rss_after_imports_mb"] > 0 and first["pages_per_s"] > 0
    assert report["runs"][2]["counts"]["documents"] == 19 and report["commit"]
    assert report["device"] == "cpu" and report["machine"]["cpu"] and report["versions"]["kinfuse"]
