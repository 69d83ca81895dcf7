import json
import re
import shutil
import struct
import subprocess
import zlib

import pytest

import kinfuse.eval.forgetting as forgetting
import kinfuse.pipeline as pipeline
from kinfuse import Corpus, InfuseConfig, infuse
from kinfuse.config import CorpusConfig, DataConfig, EvalConfig, TrainConfig
from kinfuse.eval import Comparison, ProbeResult, generate_probes
from kinfuse.eval.report import accuracy_groups, build_report, loss_chart_svg, render_html, summary, write_report


def _strict_json(path):
    def no_nan(name):
        raise AssertionError(f"{path} holds {name}: not valid JSON")

    return json.loads(path.read_text(), parse_constant=no_nan)


def _sample_report():
    probes = Comparison([
        ProbeResult("chat", "How many antennas <b>does</b> it have?", ["four", "4"], "I don't know", "It has four.",
                    False, True, True, True, base_format_ok=True, adapted_format_ok=True, distractors=["nine"],
                    base_loglik_correct=False, adapted_loglik_correct=True, base_loglik_margin=-0.3,
                    adapted_loglik_margin=1.2),
        ProbeResult("completion", "The Zephyr router", ["purple"], "is a router", "is purple & small",
                    False, True, False, False),
    ])
    retention = Comparison([
        ProbeResult("chat", "What is the capital of France?", ["Paris"], "Paris.", "user\nParis", True, True,
                    True, True, base_format_ok=True, adapted_format_ok=False),
        ProbeResult("chat", "How many legs has a spider?", ["eight", "8"], "Eight.", "Six legs, six legs and", True,
                    False, True, False, base_format_ok=True, adapted_format_ok=True),
    ])
    history = [{"step": i + 1, "loss": 3.0 * 0.95**i, "lr": 1e-4, "tokens": 100 * i, "seconds": i,
                **({"eval_loss": 2.8 * 0.96**i} if i % 10 == 9 else {})} for i in range(40)]
    train = {"steps": 40, "first_loss": 3.0, "final_loss": history[-1]["loss"], "history": history}
    return build_report(probes=probes, retention=retention,
                        perplexity={"base": 10.0, "adapted": 10.5, "change": 0.05},
                        kl={"general_text": 0.0123, "general_chat": 0.02}, train=train, model="tiny-llama",
                        lm_eval={"tasks": ["hellaswag"], "skipped": "lm-evaluation-harness is not installed"})


def test_report_metrics_json_and_self_contained_html(tmp_path):
    report = _sample_report()
    m = report["metrics"]
    assert m["probes"]["adapted_accuracy"] == 1.0 and m["probes"]["by_kind"]["completion"]["n"] == 1
    assert m["loglik"] == {"n": 1, "base_accuracy": 0.0, "adapted_accuracy": 1.0,
                           "base_mean_margin": -0.3, "adapted_mean_margin": 1.2}
    assert m["retention"]["retention"] == 0.5 and m["retention"]["base_correct"] == 2
    # chat behaviour over every chat answer (probes and general questions): 3 chat rows, one leaked a role line
    assert m["chat"]["n"] == 3 and m["chat"]["adapted_ended_rate"] == pytest.approx(2 / 3)
    assert m["chat"]["adapted_format_rate"] == pytest.approx(2 / 3) and m["chat"]["adapted_ok_rate"] == pytest.approx(1 / 3)
    assert m["chat"]["base_ok_rate"] == 1.0
    # and per set: the knowledge answer ended its turn, one of the two general ones did
    assert m["chat"]["by_set"] == {
        "probes": {"n": 1, "base_ended_rate": 1.0, "adapted_ended_rate": 1.0, "end_kept": 1.0},
        "retention": {"n": 2, "base_ended_rate": 1.0, "adapted_ended_rate": 0.5, "end_kept": 0.5}}
    json_path, html_path = write_report(report, tmp_path)
    saved = _strict_json(json_path)
    assert saved["metrics"]["kl"] == {"general_text": 0.0123, "general_chat": 0.02}
    assert len(saved["train"]["history"]) == 40 and len(saved["answers"]) == 4
    page = html_path.read_text()
    for external in ("<script", "src=", "href=", "@import", "url(", "<link", "http://", "https://"):
        assert external not in page, external
    assert "<style>" in page and page.count("<svg") == 2
    assert "How many antennas &lt;b&gt;does&lt;/b&gt; it have?" in page and "is purple &amp; small" in page
    assert 'id="answers"' in page and page.count("<tr class=\"probes\">") == 2
    assert "0.0123" in page and "+5.0%" in page and "skipped: lm-evaluation-harness is not installed" in page
    assert re.search(r'<path class="loss-line" d="M[\d.]+,[\d.]+( L[\d.]+,[\d.]+){39}"', page)
    assert '<path class="eval-line"' in page
    bars = len(accuracy_groups(report))  # probes, chat, completion, log-likelihood, general questions, chat ok
    assert bars == 6 and page.count('<rect class="bar base"') == bars + 1  # + the legend swatch


def test_summary_and_empty_report():
    text = summary(_sample_report())
    assert "knowledge gained: probe accuracy 0% -> 100%" in text
    assert "log-likelihood accuracy 0% -> 100% (n=1)" in text
    assert "keeps 50% of the 2/2 general answers" in text and "perplexity 10.00 -> 10.50 (+5.0%)" in text
    assert "general_text 0.0123" in text and "chat behaviour:   adapted ends 67% of turns" in text
    assert "  retention:      adapted ends 50% of 2 (base 100%; 50% of those the base ended)" in text
    assert "lm-eval:          skipped" in text and "training:         40 steps" in text
    empty = build_report()
    assert summary(empty) == "nothing was evaluated"
    page = render_html(empty)
    assert "No training history." in page and "No probes were asked." in page and "No accuracy measured." in page


def test_loss_chart_edge_cases():
    one = loss_chart_svg([{"step": 1, "loss": 2.0}])
    assert '<circle class="loss-point"' in one and "nan" not in one.lower()
    flat = loss_chart_svg([{"step": s, "loss": 1.0} for s in range(1, 4)])
    assert "nan" not in flat.lower() and "inf" not in flat.lower()
    long = loss_chart_svg([{"step": s, "loss": 1.0 / s} for s in range(1, 5001)] + [{"step": 5001, "loss": float("nan")}])
    points = re.search(r'class="loss-line" d="([^"]+)"', long).group(1).split()
    assert 900 <= len(points) <= 1001 and "nan" not in long.lower()


def _chromium():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


def _png_pixels(data):
    """(width, height, distinct RGB(A) pixel values) of an 8-bit RGB/RGBA PNG, decoded here."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = header[:4]
    assert depth == 8 and color in (2, 6)
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colors = bytearray(stride), set()
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colors.update(bytes(line[i : i + bpp]) for i in range(0, stride, bpp * 7))  # every 7th pixel
        prev = line
    return width, height, colors


def test_report_renders_in_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    _, html_path = write_report(_sample_report(), tmp_path / "out")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = html_path.resolve().as_uri()
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    assert '<table id="answers">' in dom and '<table id="metrics">' in dom
    assert re.search(r'<svg id="loss-chart"[^>]*>.*<path class="loss-line" d="M[\d.]+,[\d.]+ L', dom, re.S)
    assert re.search(r'<svg id="accuracy-chart"[^>]*>.*<rect class="bar adapted" x="[\d.]+" y="[\d.]+" width="[\d.]+" '
                     r'height="[1-9][\d.]*"', dom, re.S)  # an adapted bar of non-zero height
    assert "How many antennas &lt;b&gt;does&lt;/b&gt; it have?" in dom  # escaped text, not markup
    shot = tmp_path / "report.png"
    subprocess.run(flags + ["--hide-scrollbars", "--window-size=1000,1400", f"--screenshot={shot}", url],
                   capture_output=True, timeout=180)
    assert shot.is_file() and shot.stat().st_size > 20_000
    width, height, colors = _png_pixels(shot.read_bytes())
    assert (width, height) == (1000, 1400)
    assert len(colors) > 50  # text, bars, lines: far from a blank page


def test_infuse_writes_report_and_keeps_generated_probes_out_of_training(tiny_model, tmp_path, monkeypatch):
    # Short general samples keep this fast; the code paths are the ones infuse() always runs.
    monkeypatch.setattr(forgetting, "general_texts",
                        lambda split="eval": ["Paris is the capital of France.", "Water boils at one hundred degrees."])
    monkeypatch.setattr(forgetting, "general_prompts", lambda split="eval": ["Tell me about bread."])
    seen_rows = []

    class SpyChunker(pipeline.Chunker):  # records what training is built from, and builds it as usual
        def __call__(self, rows, *args, **kwargs):
            seen_rows.extend(rows)
            return super().__call__(rows, *args, **kwargs)

    monkeypatch.setattr(pipeline, "Chunker", SpyChunker)
    corpus = Corpus.from_texts(["The new Zephyr router has four antennas and supports a mesh of up to nine nodes."],
                               sources=["zephyr.txt"])
    generated = tmp_path / "generated_probes.jsonl"
    rows = generate_probes(None, None, corpus, writer=lambda p: "Q: How many antennas does the router have?\nA: four\n"
                                                                "Q: How many mesh nodes at most?\nA: nine",
                           out=generated)
    assert [r["source"] for r in rows] == ["zephyr.txt", "zephyr.txt"]
    retention = tmp_path / "retention.jsonl"
    retention.write_text(json.dumps({"question": "What is the capital of France?", "answers": ["Paris"]}) + "\n")
    out = tmp_path / "out"
    config = InfuseConfig(
        model=tiny_model, out_dir=str(out),
        corpus=CorpusConfig(paths=["unused"]),  # corpus= below is used instead
        data=DataConfig(block_size=64),
        train=TrainConfig(max_steps=2, quantize="none", progress=False),
        eval=EvalConfig(probes=[str(generated)], retention=[str(retention)], max_new_tokens=6),
    )
    echoed = []
    result = infuse(config, corpus=corpus, echo=lambda *a: echoed.append(" ".join(map(str, a))))
    # nothing of the generated probes went into training
    trained_text = json.dumps(seen_rows)
    assert seen_rows and all(r["question"] not in trained_text for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("probes", "retention", "perplexity", "train", "data", "corpus"):  # unchanged keys
        assert key in metrics
    assert metrics["probes"]["results"][0]["source"] == "zephyr.txt"
    assert set(metrics["kl"]) == {"general_text", "general_chat"} and metrics["kl"]["general_text"] >= 0
    assert metrics["chat_behaviour"]["n"] == 3 and metrics["loglik"] is None  # no distractors given
    assert metrics["report"] == {"json": str(out / "report.json"), "html": str(out / "report.html")}
    report = _strict_json(out / "report.json")
    assert len(report["train"]["history"]) == 2 and len(report["answers"]) == 3
    page = (out / "report.html").read_text()
    assert 'class="loss-line"' in page and 'id="accuracy-chart"' in page
    assert "How many mesh nodes at most?" in page
    assert any("knowledge gained:" in e and "knowledge lost:" in e for e in echoed)
    assert result.metrics["kl"] == metrics["kl"]
