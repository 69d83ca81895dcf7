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
