"""benchmarks/bench_train.py on the tiny random Llama: both recipes train, and the report has
its fields. The numbers themselves mean nothing at this size."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_bench_report_fields(bench, tiny_model, tmp_path):
    report = bench.main([
        "--model", tiny_model, "--device", "cpu", "--block-size", "32", "--micro-batch", "1",
        "--steps", "2", "--warmup", "1", "--in-process",
        "--workdir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results"),
    ])
    path = Path(report["_path"])
    assert path.parent == tmp_path / "results" and path.name.startswith("cpu-")
    saved = json.loads(path.read_text())
    for key in ("device", "torch", "transformers", "peft", "bitsandbytes", "git_commit", "arch", "block_size",
                "micro_batch", "steps", "warmup", "results", "ratios", "command"):
        assert key in saved, key
    assert (saved["block_size"], saved["micro_batch"], saved["steps"], saved["warmup"]) == (32, 1, 2, 1)
    for recipe in ("reference", "kinfuse"):
        r = saved["results"][recipe]
        assert r["ok"], r.get("stderr_tail")
        assert r["tokens"] == 2 * 32 and r["timed_steps"] == 1
        assert r["tokens_per_second"] > 0 and r["peak_memory_bytes"] > 0
        assert r["peak_memory_kind"] == "cpu_peak_rss"
        assert r["trainable_parameters"] == saved["results"]["reference"]["trainable_parameters"]  # same LoRA
    assert saved["ratios"]["tokens_per_second"] == pytest.approx(
        saved["results"]["kinfuse"]["tokens_per_second"] / saved["results"]["reference"]["tokens_per_second"])
    assert saved["ratios"]["peak_memory"] > 0
    assert "max_block" not in saved


def test_failed_worker_is_recorded_not_raised(bench, tmp_path):
    r = bench.spawn(["--worker", "kinfuse", "--model-path", str(tmp_path), "--blocks", str(tmp_path / "none.npy")],
                    timeout=60)
    assert r["ok"] is False and "none.npy" in r["error"] and r["returncode"] == 1


def test_throughput_leaves_out_warmup(bench):
    # 3 steps ending at 10 s, 11 s, 12 s after the start, 100 tokens each: 200 tokens in the last 2 s
    t = bench._throughput([10.0, 11.0, 12.0], 0.0, [100, 200, 300], warmup=1)
    assert t["tokens_per_second"] == pytest.approx(100.0) and t["timed_steps"] == 2
    assert t["tokens_per_second_all_steps"] == pytest.approx(25.0)


def test_combine_rounds_takes_the_median_round_and_the_largest_peak(bench):
    runs = [{"ok": True, "tokens_per_second": s, "peak_memory_bytes": m, "step_seconds": [1.0], "tag": t}
            for s, m, t in ((90.0, 5, "a"), (120.0, 3, "b"), (100.0, 4, "c"))]
    out = bench.combine_rounds(runs)
    assert out["tag"] == "c" and out["tokens_per_second"] == 100.0
    assert out["peak_memory_bytes"] == 5 and [r["tokens_per_second"] for r in out["rounds"]] == [90.0, 120.0, 100.0]
    assert bench.combine_rounds(runs[:1]) is runs[0]
    failed = {"ok": False, "error": "boom"}
    assert bench.combine_rounds([runs[0], failed]) is failed
