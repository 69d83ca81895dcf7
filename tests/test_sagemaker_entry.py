"""kinfuse.sagemaker_entry: the training job's entry point, run locally with SageMaker's SM_*
variables pointing at temp folders: SM_NUM_GPUS=2 trains under torchrun (2 CPU processes,
gloo), and SM_MODEL_DIR ends up holding a model that packs into a deployable model.tar.gz."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_job_trains_under_torchrun_and_writes_a_deployable_model_dir(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from kinfuse.export.sagemaker import check_tar

    channels = {name: tmp_path / "input" / name for name in ("config", "corpus")}
    for folder in channels.values():
        folder.mkdir(parents=True)
    (channels["corpus"] / "zephyr.txt").write_text("The Zephyr router has four antennas. It was released in 2021.\n" * 4)
    (channels["config"] / "infuse.toml").write_text(
        'corpus.urls = ["https://example.com/replaced-by-the-corpus-channel"]\n'
        '[data]\nblock_size = 64\nquestions = 0\nself_distill = 0\nreplay_ratio = 0\nanchor_kl = false\n'
        '[train]\nquantize = "none"\nprogress = false\n[eval]\nperplexity = false\n')
    model_dir, output = tmp_path / "model", tmp_path / "output"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SM_NUM_GPUS": "2",
           "SM_CHANNEL_CONFIG": str(channels["config"]), "SM_CHANNEL_CORPUS": str(channels["corpus"]),
           "SM_CHANNEL_MODEL": tiny_model, "SM_MODEL_DIR": str(model_dir), "SM_OUTPUT_DATA_DIR": str(output)}
    done = subprocess.run([sys.executable, "-m", "kinfuse.sagemaker_entry", "--train.max_steps", "2",
                           "--train.save_every", "2"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run = json.loads((output / "run/run.json").read_text())
    assert run["status"] == "completed" and run["steps"] == 2
    ckpt_meta = [json.loads(p.read_text()) for p in (output / "run").rglob("meta.json")]
    assert ckpt_meta and all(m["world_size"] == 2 for m in ckpt_meta)  # trained by 2 processes
    assert (model_dir / "config.json").is_file() and list(model_dir.glob("*.safetensors"))
    assert (output / "sagemaker/deploy.py").is_file()
    # what SageMaker does with SM_MODEL_DIR at the end of the job: model.tar.gz of its files
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    assert check_tar(archive) == []
    AutoModelForCausalLM.from_pretrained(model_dir)


def test_job_without_its_channels_says_what_is_missing(monkeypatch, capsys):
    from kinfuse.sagemaker_entry import main

    monkeypatch.delenv("SM_CHANNEL_CONFIG", raising=False)
    assert main([]) == 2
    assert "SM_CHANNEL_CONFIG is not set" in capsys.readouterr().err
