import json
import os

import pytest

import kinfuse
from kinfuse import InfuseConfig, KinfuseError
from kinfuse.pipeline import infuse, training_qa


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_training_qa_that_restates_a_probe_is_refused_before_any_model_loads(tmp_path):
    probes = _write(tmp_path / "probes.jsonl", [
        {"question": "How many antennas does the Zephyr router have?", "answers": ["four"]},
    ])
    qa = _write(tmp_path / "qa.jsonl", [
        {"question": "What mesh size does the Zephyr router support?", "answer": "Up to nine nodes."},
        {"question": "How many antennas does the Zephyr router have ?", "answer": "Four."},
    ])
    (tmp_path / "page.txt").write_text("The Zephyr router has four antennas.")
    config = InfuseConfig.from_dict({
        "model": str(tmp_path / "no-such-model"),  # never loaded: the check comes first
        "out_dir": str(tmp_path / "out"),
        "corpus": {"paths": [str(tmp_path / "page.txt")]},
        "data": {"qa_files": [qa]},
        "eval": {"probes": [probes]},
    })
    with pytest.raises(KinfuseError, match="(?s)1 training question.*antennas.*reword or remove"):
        infuse(config, echo=lambda *_: None)
    # a distinct question passes, and is returned as written
    config.data.qa_files = [_write(tmp_path / "ok.jsonl", [{"question": "Tell me about the Zephyr mesh.", "answer": "Nine nodes."}])]
    assert training_qa(config) == [{"question": "Tell me about the Zephyr mesh.", "answer": "Nine nodes."}]


def test_infuse_with_rule_written_questions(tiny_model, tmp_path, monkeypatch):
    from kinfuse import pipeline
    from kinfuse.config import CorpusConfig, DataConfig, EvalConfig, TrainConfig
    from kinfuse.eval import forgetting

    monkeypatch.setattr(forgetting, "general_texts", lambda split="eval": ["Paris is the capital of France."])
    seen = []

    class SpyChunker(pipeline.Chunker):
        def __call__(self, rows, *args, **kwargs):
            seen.extend(rows)
            return super().__call__(rows, *args, **kwargs)

    monkeypatch.setattr(pipeline, "Chunker", SpyChunker)
    page = tmp_path / "quill.txt"
    page.write_text("Quillstore is a key-value database written in Rust. It listens on port 9410 by default.\n"
                    "The compactor runs every 30 minutes. Quillstore stores every value in 4 KB pages.")
    probes = _write(tmp_path / "probes.jsonl", [
        {"question": "Which port does Quillstore listen on by default?", "answers": ["9410"]}])
    out = tmp_path / "out"
    config = InfuseConfig(
        model=tiny_model, out_dir=str(out), corpus=CorpusConfig(paths=[str(page)]),
        data=DataConfig(block_size=64, questions=2, document_variants=1, order="qa_first"),
        train=TrainConfig(epochs=2, quantize="none", progress=False),
        eval=EvalConfig(probes=[probes], max_new_tokens=4, perplexity=False),
    )
    result = infuse(config, echo=lambda *_: None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["rounds"] == 2 and metrics["synth"]["facts"] > 0
    rule_rows = [r for r in seen if str(r.get("kind", "")).startswith("rule-")]
    assert metrics["data"]["rule_qa_rows"] == len(rule_rows) > 0
    # two rounds of one epoch's worth each, trained in one pass: the same steps as two epochs
    assert result.train.steps == metrics["data"]["blocks"]
    assert not any("Which port does Quillstore listen on by default" in r.get("question", "") for r in seen)
    generated = [json.loads(line) for line in (out / "generated.jsonl").read_text().splitlines()]
    assert any(g.get("dropped") and "near a probe" in g["reason"] for g in generated)
    assert {r["question"] for r in rule_rows} <= {g["question"] for g in generated if not g.get("dropped")}
    # the same corpus as a base (completion) model: no chat template, Q&A as plain text rows
    seen.clear()
    config.chat, config.out_dir = False, str(tmp_path / "plain")
    infuse(config, echo=lambda *_: None)
    assert seen and all("text" in r and "question" not in r for r in seen)
    assert any(r["text"].startswith("What port does Quillstore listen on?\n") for r in seen)


def _small_config(tiny_model, tmp_path, **train):
    from kinfuse.config import CorpusConfig, DataConfig, EvalConfig, TrainConfig

    page = tmp_path / "zephyr.txt"
    page.write_text("The Zephyr router has four antennas. It was released in 2021 by Northwind.\n" * 4)
    return InfuseConfig(model=tiny_model, out_dir=str(tmp_path / "out"), corpus=CorpusConfig(paths=[str(page)]),
                        data=DataConfig(block_size=64, questions=0),
                        train=TrainConfig(quantize="none", progress=False, **train), eval=EvalConfig(perplexity=False))


def test_a_run_that_fails_is_recorded_as_failed_and_saves_no_adapter(tiny_model, tmp_path, monkeypatch, capsys):
    from kinfuse.cli import main as cli
    from kinfuse.run import RunRecord
    from kinfuse.train.trainer import QLoRATrainer

    config = _small_config(tiny_model, tmp_path, max_steps=4)
    path = tmp_path / "infuse.toml"
    path.write_text(f'model = "{tiny_model}"\nout_dir = "{config.out_dir}"\n[corpus]\npaths = {config.corpus.paths!r}\n'
                    '[data]\nblock_size = 64\nquestions = 0\nreplay_ratio = 0\nself_distill = 0\nanchor_kl = false\n'
                    '[train]\nmax_steps = 4\nquantize = "none"\nprogress = false\n[eval]\nperplexity = false\n'
                    .replace("'", '"'))
    calls = {"n": 0}
    real = QLoRATrainer.loss_sum

    def diverging(self, *args):  # the loss of step 2 overflows, as a too-high learning rate makes it
        calls["n"] += 1
        loss = real(self, *args)
        return loss * float("inf") if calls["n"] == 2 else loss

    monkeypatch.setattr(QLoRATrainer, "loss_sum", diverging)
    assert cli(["infuse", str(path)]) == 1  # a failed run, not bad input
    err = capsys.readouterr().err
    assert "step 2" in err and "lower learning_rate" in err
    out = tmp_path / "out"
    record = RunRecord.read(out)
    assert (record.status, record.completed) == ("failed", False) and "step 2" in record.reason
    assert not (out / "adapter").exists()
    with pytest.raises(KinfuseError, match="has no adapter"):
        kinfuse.export(out, format="tgi-adapter", out=tmp_path / "x", echo=lambda m: None)
    # a completed run records that it completed
    monkeypatch.setattr(QLoRATrainer, "loss_sum", real)
    infuse(config, echo=lambda *_: None)
    record = RunRecord.read(out)
    assert (record.status, record.completed, record.reason, record.steps) == ("completed", True, "", 4)


def test_an_output_folder_that_cannot_be_written_is_refused_naming_it(tiny_model, tmp_path, capsys):
    from kinfuse.cli import main as cli

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = _small_config(tiny_model, tmp_path)
    config.out_dir = str(blocker / "out")
    with pytest.raises(KinfuseError, match=rf"output folder {blocker / 'out'} is not writable .*choose another "
                                           r"out_dir \(--out_dir DIR\)"):
        infuse(config, echo=lambda *_: None)
    assert cli(["infuse", "--model", tiny_model, "--out_dir", str(blocker / "out"), "--corpus.paths",
                config.corpus.paths[0]]) == 2
    assert f"output folder {blocker / 'out'} is not writable" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_naming_it(tiny_model, tmp_path):
    config = _small_config(tiny_model, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(KinfuseError, match=rf"output folder {out} is not writable"):
            infuse(config, echo=lambda *_: None)
    finally:
        out.chmod(0o700)
