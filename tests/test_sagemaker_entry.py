"""kinfuse.sagemaker_entry: the training job's entry point, run locally with SageMaker's SM_*
variables pointing at temp folders: SM_NUM_GPUS=2 trains under torchrun (2 CPU processes,
gloo), and SM_MODEL_DIR ends up holding a model that packs into a deployable model.tar.gz;
with several instances (SM_HOSTS) the launch command joins them, and two entry points on this
machine standing for two instances train as one run that the first exports."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("env, expected", [
    # one instance: one process for at most one GPU, else torchrun on this instance alone
    ({"SM_NUM_GPUS": "1"}, None),
    ({"SM_NUM_GPUS": "0", "SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"}, None),
    ({"SM_NUM_GPUS": "4", "SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"},
     ["--standalone", "--nproc-per-node", "4"]),
    # several: one torchrun per instance, joined at the first one
    ({"SM_NUM_GPUS": "8", "SM_HOSTS": '["algo-1", "algo-2", "algo-3"]', "SM_CURRENT_HOST": "algo-1"},
     ["--nnodes", "3", "--node-rank", "0", "--master-addr", "algo-1", "--master-port", "29500",
      "--nproc-per-node", "8"]),
    ({"SM_NUM_GPUS": "8", "SM_HOSTS": '["algo-1", "algo-2", "algo-3"]', "SM_CURRENT_HOST": "algo-3",
      "KINFUSE_MASTER_PORT": "7777"},
     ["--nnodes", "3", "--node-rank", "2", "--master-addr", "algo-1", "--master-port", "7777",
      "--nproc-per-node", "8"]),
    ({"SM_NUM_GPUS": "0", "SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2"},  # CPU instances
     ["--nnodes", "2", "--node-rank", "1", "--master-addr", "algo-1", "--master-port", "29500",
      "--nproc-per-node", "1"]),
])
def test_launch_command_from_sagemakers_environment(monkeypatch, env, expected):
    from kinfuse.sagemaker_entry import launch_command

    for name in ("SM_HOSTS", "SM_CURRENT_HOST", "KINFUSE_MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = launch_command(["--train.max_steps", "5"])
    if expected is None:
        assert command is None
    else:
        assert command == [sys.executable, "-m", "torch.distributed.run", *expected,
                           "-m", "kinfuse.sagemaker_entry", "--train.max_steps", "5"]


@pytest.mark.parametrize("env, message", [
    ({"SM_HOSTS": "algo-1,algo-2", "SM_CURRENT_HOST": "algo-1"}, "SM_HOSTS='algo-1,algo-2' is not a JSON list"),
    ({"SM_HOSTS": "[]", "SM_CURRENT_HOST": "algo-1"}, "is not a JSON list of host names"),
    ({"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-9"},
     "SM_CURRENT_HOST='algo-9' is not one of SM_HOSTS ['algo-1', 'algo-2']"),
    ({"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-1", "KINFUSE_MASTER_PORT": "http"},
     "KINFUSE_MASTER_PORT='http' is not a TCP port"),
])
def test_a_bad_host_list_is_named(tmp_path, monkeypatch, capsys, env, message):
    from kinfuse.sagemaker_entry import main

    (tmp_path / "infuse.toml").write_text('corpus.urls = ["https://example.com/"]\n')
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("SM_CHANNEL_CONFIG", str(tmp_path))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("SM_NUM_GPUS", "1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kinfuse: error:") and message in err
    assert not (tmp_path / "out").exists()


def test_two_instances_train_together_and_the_first_exports(tiny_model, tmp_path):
    # Two "instances" on this machine (their own SageMaker folders, 127.0.0.1 and localhost as
    # their names, CPU: one process each): the two entry points join one torchrun of 2 nodes.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    names = ["127.0.0.1", "localhost"]
    children = []
    for name in names:
        root = tmp_path / name
        (root / "config").mkdir(parents=True)
        (root / "corpus").mkdir()
        (root / "corpus/zephyr.txt").write_text("The Zephyr router has four antennas. It was released in 2021.\n" * 4)
        (root / "config/infuse.toml").write_text(
            '[data]\nblock_size = 64\nquestions = 0\nself_distill = 0\nreplay_ratio = 0\nanchor_kl = false\n'
            '[train]\nquantize = "none"\nprogress = false\n[eval]\nperplexity = false\n')
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SM_NUM_GPUS": "0",
               "SM_HOSTS": json.dumps(names), "SM_CURRENT_HOST": name, "KINFUSE_MASTER_PORT": str(port),
               "SM_CHANNEL_CONFIG": str(root / "config"), "SM_CHANNEL_CORPUS": str(root / "corpus"),
               "SM_CHANNEL_MODEL": tiny_model, "SM_MODEL_DIR": str(root / "model"),
               "SM_OUTPUT_DATA_DIR": str(root / "output")}
        env.pop("WORLD_SIZE", None)
        children.append(subprocess.Popen([sys.executable, "-m", "kinfuse.sagemaker_entry", "--train.max_steps", "2",
                                          "--train.save_every", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [child.communicate(timeout=300) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, (out + err)[-3000:]
    first, second = (tmp_path / n for n in names)
    run = json.loads((first / "output/run/run.json").read_text())
    assert run["status"] == "completed" and run["steps"] == 2
    ckpt_meta = [json.loads(p.read_text()) for p in (first / "output/run").rglob("meta.json")]
    assert ckpt_meta and all(m["world_size"] == 2 for m in ckpt_meta)  # trained by both instances
    assert (first / "model/config.json").is_file() and list((first / "model").glob("*.safetensors"))
    # the second instance trained (rank 1) and wrote nothing: the model is the first one's
    assert not (second / "output/run/run.json").exists() and not (second / "model").exists()
    assert "localhost: training done; 127.0.0.1 exports the model" in outputs[1][1]
