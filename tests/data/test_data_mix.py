"""kinfuse.data.mix: self-distilled anchors, the loop filter, and how rounds become blocks."""

import json


def test_self_distillation_skips_prompts_like_a_probe_and_caches_by_prompt_list(tiny_model, tmp_path, monkeypatch):
    from kinfuse import Evaluator, QLoRATrainer, TrainConfig
    from kinfuse.data import mix
    from kinfuse.data.probes import ProbeGuard

    monkeypatch.setattr(mix, "general_prompts",
                        lambda split="eval": ["How many antennas does the Zephyr router have?", "Tell me about bread."])
    evaluator = Evaluator(QLoRATrainer(tiny_model, TrainConfig(progress=False)), max_new_tokens=8)
    guard = ProbeGuard([{"question": "How many antennas has the Zephyr router got?"}])
    cache = tmp_path / "distill.json"
    rows = mix.self_distill_rows(evaluator, 5, cache, "tiny", guard)
    saved = json.loads(cache.read_text())
    assert saved["prompts"] == ["Tell me about bread."]
    assert all(r["question"] == "Tell me about bread." and r["source"] == "self-distill" for r in rows)
    # the cache answers a rerun with the same prompts, and is ignored when they change
    saved["rows"] = [{"question": "Tell me about bread.", "answer": "cached", "source": "self-distill"}]
    cache.write_text(json.dumps(saved))
    assert mix.self_distill_rows(evaluator, 5, cache, "tiny", guard)[0]["answer"] == "cached"
    mix.self_distill_rows(evaluator, 5, cache, "tiny", None)  # both prompts now: regenerated
    assert json.loads(cache.read_text())["prompts"] == ["How many antennas does the Zephyr router have?",
                                                        "Tell me about bread."]



def test_a_truncated_self_distill_cache_is_answered_again_with_a_note(tiny_model, tmp_path, monkeypatch):
    from kinfuse import Evaluator, QLoRATrainer, TrainConfig
    from kinfuse.data import mix

    monkeypatch.setattr(mix, "general_prompts", lambda split="eval": ["Tell me about bread."])
    evaluator = Evaluator(QLoRATrainer(tiny_model, TrainConfig(progress=False)), max_new_tokens=8)
    cache = tmp_path / "self_distill.json"
    for damaged in ('{"model": "tiny", "prompts": ["Tell me about br', "", '["not", "an", "object"]'):
        cache.write_text(damaged)  # a run killed while an older kinfuse wrote it in place
        notes = []
        mix.self_distill_rows(evaluator, 5, cache, "tiny", None, echo=notes.append)
        assert json.loads(cache.read_text())["prompts"] == ["Tell me about bread."]  # rewritten whole
        assert len(notes) == 1
        assert all(str(cache) in n and "answering the self-distillation prompts again" in n for n in notes)
    assert not list(tmp_path.glob(".*tmp"))  # written through a temporary file and a rename


def test_repetitive_answers_are_recognised():
    from kinfuse.data.mix import repetitive

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
    from kinfuse.data.mix import Round, TrainingMix
    from kinfuse.train import BlockTensors

    def qa(n, r):
        return [{"question": f"Question {i} of round {r}?", "answer": f"Answer {i}."} for i in range(n)]

    def text(n, r):
        return [{"text": f"Text {i} of round {r}. " * 6} for i in range(n)]

    mix = TrainingMix(corpus=[], qa=[], replay=[], distill=[],
                      rounds=[Round(qa(6, r), text(4, r), text(2, 9)) for r in range(2)])
    chunker = Chunker(tiny_tokenizer, block_size=64)
    blocks, stats, anchors = mix.blocks(chunker, anchor_kl=True, order="qa_first")
    assert anchors == sum(blocks["anchor"]) > 0 and stats.blocks == len(blocks)
    phase, anchor = blocks["phase"], blocks["anchor"]
    assert sorted(set(phase)) == [0, 1, 2, 3]
    assert {p for p, a in zip(phase, anchor) if a} >= {0, 1}  # anchors train in both phases of a round
    order = BlockTensors(blocks).micro_batch(0, TrainConfig(micro_batch_size=len(blocks), seed=3)).tolist()
    assert [phase[i] for i in order] == sorted(phase)  # phase by phase within the epoch
    again = BlockTensors(blocks).micro_batch(0, TrainConfig(micro_batch_size=len(blocks), seed=4)).tolist()
    assert again != order and sorted(again) == sorted(order)  # shuffled within each phase
    mixed, _, _ = mix.blocks(chunker, anchor_kl=False, order="mixed")
    assert "phase" not in mixed.column_names and "anchor" not in mixed.column_names
    assert torch.tensor(mixed["labels"]).ne(-100).sum() > 0
