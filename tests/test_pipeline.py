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


def test_layout_orders_qa_before_text_in_each_round_and_spreads_anchors(tiny_tokenizer):
    import torch

    from kinfuse import Chunker, TrainConfig
    from kinfuse.pipeline import layout_blocks
    from kinfuse.train import BlockTensors as _Tensors

    def qa(n, r):
        return [{"question": f"Question {i} of round {r}?", "answer": f"Answer {i}."} for i in range(n)]

    def text(n, r):
        return [{"text": f"Text {i} of round {r}. " * 6} for i in range(n)]

    rounds = [(qa(6, r), text(4, r), text(2, 9)) for r in range(2)]
    chunker = Chunker(tiny_tokenizer, block_size=64)
    blocks, stats, anchors = layout_blocks(chunker, rounds, anchor_kl=True, order="qa_first")
    assert anchors == sum(blocks["anchor"]) > 0 and stats.blocks == len(blocks)
    phase, anchor = blocks["phase"], blocks["anchor"]
    assert sorted(set(phase)) == [0, 1, 2, 3]
    assert {p for p, a in zip(phase, anchor) if a} >= {0, 1}  # anchors train in both phases of a round
    order = _Tensors(blocks).micro_batch(0, TrainConfig(micro_batch_size=len(blocks), seed=3)).tolist()
    assert [phase[i] for i in order] == sorted(phase)  # phase by phase within the epoch
    again = _Tensors(blocks).micro_batch(0, TrainConfig(micro_batch_size=len(blocks), seed=4)).tolist()
    assert again != order and sorted(again) == sorted(order)  # shuffled within each phase
    mixed, _, _ = layout_blocks(chunker, rounds, anchor_kl=False, order="mixed")
    assert "phase" not in mixed.column_names and "anchor" not in mixed.column_names
    assert torch.tensor(mixed["labels"]).ne(-100).sum() > 0


def test_infuse_with_rule_written_questions(tiny_model, tmp_path, monkeypatch):
    from kinfuse import evaluator as evaluator_module
    from kinfuse import pipeline
    from kinfuse.config import CorpusConfig, DataConfig, EvalConfig, TrainConfig

    monkeypatch.setattr(evaluator_module, "general_texts", lambda split="eval": ["Paris is the capital of France."])
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
