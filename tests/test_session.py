"""kinfuse.load_run: a finished run's model, loaded as trained, answers as the evaluation did."""

import json
import shutil

import pytest

import kinfuse
from kinfuse import KinfuseError, ModelError, load_run


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_a_loaded_run_answers_every_probe_as_the_evaluation_did(tiny_run):
    run_dir, probes, _ = tiny_run
    run = load_run(run_dir)
    assert (run.quantize, run.chat, run.max_new_tokens) == ("nf4", True, 12)
    assert run.record.completed and run.compute_dtype == run.record.compute_dtype
    results = _metrics(run_dir)["probes"]["results"]
    assert any(r["base_answer"] != r["adapted_answer"] for r in results)  # the adapter changes answers
    for r in (r for r in results if r["kind"] == "chat"):  # a question, asked alone
        assert run.ask(r["prompt"], adapter=False) == r["base_answer"]
        assert run.ask(r["prompt"]) == r["adapted_answer"]
    # the whole probe file (completion prompts too) through the run's evaluator, answer for answer
    again = run.evaluator().compare(str(probes)).to_dict()["results"]
    assert [(r["base_answer"], r["adapted_answer"]) for r in again] == [
        (r["base_answer"], r["adapted_answer"]) for r in results]


def test_streamed_answer_is_the_generated_one_in_pieces(tiny_run):
    run_dir, _, _ = tiny_run
    run = load_run(run_dir)
    question = "Which port does Quillstore listen on by default?"
    pieces = list(run.stream(question))
    assert len(pieces) > 1 and "".join(pieces).strip() == run.ask(question)
    # a conversation ends with the user's turn; the first turn alone is the plain question
    assert "".join(run.stream([{"role": "user", "content": question}])).strip() == run.ask(question)


def test_an_exported_adapter_folder_loads_with_how_its_run_trained(tiny_run, tmp_path):
    run_dir, _, _ = tiny_run
    out = kinfuse.export(run_dir, format="tgi-adapter", out=tmp_path / "tgi", echo=lambda m: None)
    run = load_run(out)  # no run.json: the export's record says NF4
    assert run.record is None and run.quantize == "nf4"
    chat = next(r for r in _metrics(run_dir)["probes"]["results"] if r["kind"] == "chat")
    # an adapter folder does not carry the run's answer length: the run's 12 tokens, given
    assert run.ask(chat["prompt"], max_new_tokens=12) == chat["adapted_answer"]


def test_not_a_run_incomplete_runs_and_a_moved_base_are_refused_with_the_fix(tiny_run, tiny_model, tmp_path):
    run_dir, _, _ = tiny_run
    (tmp_path / "empty").mkdir()
    with pytest.raises(KinfuseError, match="neither a run dir"):
        load_run(tmp_path / "empty")
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    record = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**record, "status": "interrupted", "reason": "stopped by SIGTERM"}))
    with pytest.raises(KinfuseError, match="not complete.*allow-incomplete"):
        load_run(copy)
    assert load_run(copy, allow_incomplete=True).record.status == "interrupted"
    (copy / "run.json").write_text(json.dumps({**record, "model": str(tmp_path / "moved-model")}))
    with pytest.raises(ModelError, match=rf"(?s){tmp_path / 'moved-model'}.*--base"):
        load_run(copy)
    assert load_run(copy, base=tiny_model).base == tiny_model
