import pytest

from kinfuse import Chunker, Evaluator, KinfuseError, QLoRATrainer, TrainConfig, answer_matches
from kinfuse.evaluator import load_probes, normalize


def test_answer_matching_normalises():
    assert normalize("It has 3,200 Gbps!") == "it has 3200 gbps"
    assert answer_matches("Bandwidth: 3,200 Gbps.", ["3200 Gbps"])
    assert answer_matches("It is PARIS.", ["paris"])
    assert not answer_matches("It has 80 GB", ["8"])  # whole words only
    assert answer_matches("version 2.5 ships", ["2.5"])


def test_compare_base_vs_adapted_in_one_model(tiny_model, tiny_tokenizer):
    qa = [{"question": "How many antennas does the Zephyr router have?", "answer": "The Zephyr router has four antennas."}]
    blocks = Chunker(tiny_tokenizer, block_size=64)(qa * 4)
    trainer = QLoRATrainer(tiny_model, TrainConfig(max_steps=40, learning_rate=1e-2, lr_schedule="constant",
                                                   lora_dropout=0.0, quantize="none", progress=False))
    trainer.train(blocks)
    evaluator = Evaluator(trainer, max_new_tokens=12, batch_size=2)
    probes = [
        {"question": "How many antennas does the Zephyr router have?", "answers": ["four"]},
        {"prompt": "The Zephyr router", "answers": ["purple"]},
    ]
    result = evaluator.compare(probes)
    first = result.results[0]
    assert first.kind == "chat" and result.results[1].kind == "completion"
    assert first.adapted_correct and not first.base_correct  # random base weights cannot know it
    assert first.adapted_ended  # learned to end its turn
    assert result.accuracy("adapted", "chat") == 1.0 and result.base_accuracy == 0.0
    assert "adapted answer" in result.table()
    # perplexity on the trained text drops; the base (adapter off) is unchanged by training
    text = ["The Zephyr router has four antennas."]
    assert evaluator.perplexity(text) < evaluator.perplexity(text, adapter=False)


def test_bad_probes(tmp_path):
    with pytest.raises(KinfuseError, match="no such probes file"):
        load_probes(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\nnot json\n{"answers": ["a"]}\n')
    with pytest.raises(KinfuseError) as e:
        load_probes(bad)
    assert "row 1" in str(e.value) and ":2: not JSON" in str(e.value) and "row 2" in str(e.value)
