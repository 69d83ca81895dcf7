import json

import pytest

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


def test_self_distillation_skips_prompts_like_a_probe_and_caches_by_prompt_list(tiny_model, tmp_path, monkeypatch):
    from kinfuse import Evaluator, QLoRATrainer, TrainConfig
    from kinfuse import pipeline
    from kinfuse.augment import ProbeGuard

    monkeypatch.setattr(pipeline, "general_prompts",
                        lambda split="eval": ["How many antennas does the Zephyr router have?", "Tell me about bread."])
    evaluator = Evaluator(QLoRATrainer(tiny_model, TrainConfig(progress=False)), max_new_tokens=8)
    guard = ProbeGuard([{"question": "How many antennas has the Zephyr router got?"}])
    cache = tmp_path / "distill.json"
    rows = pipeline.self_distill_rows(evaluator, 5, cache, "tiny", guard)
    saved = json.loads(cache.read_text())
    assert saved["prompts"] == ["Tell me about bread."]
    assert all(r["question"] == "Tell me about bread." and r["source"] == "self-distill" for r in rows)
    # the cache answers a rerun with the same prompts, and is ignored when they change
    saved["rows"] = [{"question": "Tell me about bread.", "answer": "cached", "source": "self-distill"}]
    cache.write_text(json.dumps(saved))
    assert pipeline.self_distill_rows(evaluator, 5, cache, "tiny", guard)[0]["answer"] == "cached"
    pipeline.self_distill_rows(evaluator, 5, cache, "tiny", None)  # both prompts now: regenerated
    assert json.loads(cache.read_text())["prompts"] == ["How many antennas does the Zephyr router have?",
                                                        "Tell me about bread."]


def test_repetitive_answers_are_recognised():
    from kinfuse.pipeline import repetitive

    loop = ("To make a simple vinaigrette salad dressing, you'll need: vinaigrette, salad dressing ingredients, "
            "and a vinaigrette. First, you'll need vinaigrette, salad dressing ingredients, and a vinaigrette. "
            "To make a vinaigrette salad dressing, you'll need vinaigrette, salad dressing ingredients, and a "
            "vinaigrette. First, you'll need vinaigrette, salad dressing ingredients, and a vinaigrette.")
    prose = ("Weather is the state of the air over hours or days: rain, sun, wind. Climate is the pattern of "
             "that weather over decades in one region, such as a wet winter and a dry summer every year.")
    assert repetitive(loop) and not repetitive(prose) and not repetitive("Paris.")
