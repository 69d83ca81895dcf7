"""`kinfuse eval RUN --probes F`: the comparison, tables and report that end `infuse`, again."""

import json

from kinfuse.cli import main


def test_eval_on_the_runs_own_probes_gives_the_runs_report(tiny_run, tmp_path, capsys):
    run_dir, probes, _ = tiny_run
    out = tmp_path / "again"
    assert main(["eval", str(run_dir), "--probes", str(probes), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "knowledge gained: probe accuracy" in printed and "general-text perplexity" in printed
    html = (out / "report.html").read_text()
    assert "Which port does Quillstore listen on by default?" in html and "9410" in html
    ours, runs = (json.loads(p.read_text()) for p in (out / "report.json", run_dir / "report.json"))
    assert ours["answers"] == runs["answers"]  # every answer, base and adapted, as infuse gave it
    assert ours["metrics"]["probes"] == runs["metrics"]["probes"]
    assert ours["metrics"]["perplexity"] == runs["metrics"]["perplexity"] and ours["metrics"]["kl"] == runs["metrics"]["kl"]
    assert ours["train"]["steps"] == runs["train"]["steps"] and len(ours["train"]["history"]) == runs["train"]["steps"]


def test_eval_names_the_file_and_line_of_a_broken_probe(tiny_run, tmp_path, capsys):
    run_dir, _, _ = tiny_run
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"question": "Which port?", "answers": ["9410"]}\n{"question": "How often", "answers": [\n')
    assert main(["eval", str(run_dir), "--probes", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: not JSON" in err
    assert not (tmp_path / "o").exists()  # refused before a model loads or a folder is made


def test_eval_of_an_adapter_folder_needs_an_out(tiny_run, tmp_path, capsys):
    run_dir, probes, _ = tiny_run
    assert main(["eval", str(run_dir / "adapter"), "--probes", str(probes)]) == 2
    assert "pass --out DIR" in capsys.readouterr().err
