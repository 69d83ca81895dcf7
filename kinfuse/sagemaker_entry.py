"""The entry point of a SageMaker training job: `python -m kinfuse.sagemaker_entry` in the
Hugging Face PyTorch training container, with kinfuse installed as a requirement.

It reads what SageMaker hands a training job in its environment:

    SM_CHANNEL_CONFIG       a folder with the infusion config (infuse.toml, or its only .toml)
    SM_CHANNEL_CORPUS       (optional) the corpus files: they replace the config's corpus.paths
    SM_CHANNEL_MODEL        (optional) the base model's folder: it replaces the config's model
    SM_MODEL_DIR            where the model goes; SageMaker packs it as the job's model.tar.gz
    SM_OUTPUT_DATA_DIR      the run folder (adapter, run.json, metrics, report) and deploy.py
    SM_NUM_GPUS             with more than one, training runs under torchrun, one process a GPU
    SM_HOSTS, SM_CURRENT_HOST  the job's instances (a JSON list) and this one: with several,
                            torchrun joins them (every instance's GPUs, rank 0 on the first)

then infuses, and exports the run (on the first instance: rank 0 trains there and writes the
run; the other instances end after training with an empty SM_MODEL_DIR) as `kinfuse export --format sagemaker --no-tar` does, the
model's files straight into SM_MODEL_DIR: the job's model.tar.gz is then the archive that
export would have written, and deploys with the Hugging Face LLM (TGI) container as it is.
The export's deploy.py and launch script go to SM_OUTPUT_DATA_DIR/sagemaker/.

The estimator's entry_point script is then two lines (the job's hyperparameters, passed as
`--section.field value`, are `kinfuse infuse` flags over the config):

    from kinfuse.sagemaker_entry import main
    raise SystemExit(main())
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import KinfuseError
from .sagemaker_job import CONFIG_FILE, RUN_DIR


def _env_dir(name: str, *, required: bool = True) -> Path | None:
    value = os.environ.get(name)
    if not value:
        if required:
            raise KinfuseError(f"{name} is not set: run this as a SageMaker training job's entry point, or set "
                              f"{name} to a folder (see kinfuse/sagemaker_entry.py)")
        return None
    return Path(value)


def job_args() -> list[str]:
    """`kinfuse infuse` arguments for this job: the config channel's file, with the job's run
    folder, corpus and model as flags over it."""
    channel = _env_dir("SM_CHANNEL_CONFIG")
    found = [channel / CONFIG_FILE] if (channel / CONFIG_FILE).is_file() else sorted(channel.glob("*.toml"))
    if len(found) != 1:
        raise KinfuseError(f"SM_CHANNEL_CONFIG={channel} holds {len(found)} .toml files: give the job's config "
                          f"channel one infusion config ({CONFIG_FILE})")
    args = ["infuse", str(found[0]), "--out_dir", str(run_dir())]
    corpus, model = _env_dir("SM_CHANNEL_CORPUS", required=False), _env_dir("SM_CHANNEL_MODEL", required=False)
    if corpus is not None:
        args += ["--corpus.paths", str(corpus), "--corpus.urls"]  # no values: no URLs
    if model is not None:
        args += ["--model", str(model)]
    return args


def run_dir() -> Path:
    return _env_dir("SM_OUTPUT_DATA_DIR") / RUN_DIR


def gpus() -> int:
    value = os.environ.get("SM_NUM_GPUS", "0") or "0"
    try:
        return int(value)
    except ValueError:
        raise KinfuseError(f"SM_NUM_GPUS={value!r} is not a number") from None


def hosts() -> tuple[list[str], int]:
    """The job's instances (SM_HOSTS, a JSON list) and this one's index in it (SM_CURRENT_HOST);
    ([], 0) outside a SageMaker job."""
    raw = os.environ.get("SM_HOSTS", "")
    if not raw:
        return [], 0
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(h, str) and h for h in names):
        raise KinfuseError(f"SM_HOSTS={raw!r} is not a JSON list of host names (SageMaker sets it, e.g. "
                           '["algo-1", "algo-2"])')
    current = os.environ.get("SM_CURRENT_HOST", "")
    if current not in names:
        raise KinfuseError(f"SM_CURRENT_HOST={current!r} is not one of SM_HOSTS {names}")
    return names, names.index(current)


def launch_command(extra: list[str]) -> list[str] | None:
    """The torchrun command that runs this entry point over the job's GPUs, or None for one
    process (one instance with at most one GPU). On several instances, one torchrun per instance
    joins the others: --nnodes the instance count, --node-rank this one's place in SM_HOSTS, the
    first instance as the rendezvous (--master-addr, port KINFUSE_MASTER_PORT or 29500)."""
    n = gpus()
    names, index = hosts()
    run = [sys.executable, "-m", "torch.distributed.run"]
    here = ["-m", "kinfuse.sagemaker_entry", *extra]
    if len(names) > 1:
        port = os.environ.get("KINFUSE_MASTER_PORT", "29500")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise KinfuseError(f"KINFUSE_MASTER_PORT={port!r} is not a TCP port")
        return [*run, "--nnodes", str(len(names)), "--node-rank", str(index), "--master-addr", names[0],
                "--master-port", port, "--nproc-per-node", str(max(1, n)), *here]
    if n > 1:
        return [*run, "--standalone", "--nproc-per-node", str(n), *here]
    return None


def main(argv: list[str] | None = None) -> int:
    """Train (under torchrun with several GPUs), then export into SM_MODEL_DIR; the exit status
    (kinfuse infuse's: 0, 1 failed, 2 bad input, 130/143 stopped by a signal after a checkpoint).
    `argv` (the job's hyperparameters, as SageMaker passes them: `--train.max_steps 100`) are
    `kinfuse infuse` flags over the config file."""
    from .cli import main as infuse_main

    extra = sys.argv[1:] if argv is None else list(argv)
    try:
        args = job_args() + extra
        command = None if "WORLD_SIZE" in os.environ else launch_command(extra)
        names, index = hosts()
    except KinfuseError as e:
        print(f"kinfuse: error: {e}", file=sys.stderr)
        return 2
    if command is None:  # one process, or one of torchrun's (started below)
        code = infuse_main(args)
        if code or "WORLD_SIZE" in os.environ:
            return code
    else:
        code = _torchrun(command)
        if code:
            return code
    if index > 0:  # rank 0 ran on the first instance: the run, and so the model, are there
        print(f"kinfuse: {names[index]}: training done; {names[0]} exports the model", file=sys.stderr)
        return 0
    try:
        export_to_model_dir(run_dir())
    except KinfuseError as e:
        print(f"kinfuse: error: exporting the trained run {run_dir()}: {e}", file=sys.stderr)
        return 1
    return 0


def _torchrun(command: list[str]) -> int:
    """This entry point again under torchrun (launch_command); a SIGTERM/SIGINT to this one
    (SageMaker stopping the job) is passed on, so that training stops with a checkpoint."""
    child = subprocess.Popen(command)
    old = {sig: signal.signal(sig, lambda signum, _: child.send_signal(signum))
           for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def export_to_model_dir(run: Path) -> Path:
    """The run exported for SageMaker (uncompressed): the model's files into SM_MODEL_DIR, the rest
    (deploy.py, the launch script, what was exported) into SM_OUTPUT_DATA_DIR/sagemaker."""
    from .export import export

    model_dir, output = _env_dir("SM_MODEL_DIR"), _env_dir("SM_OUTPUT_DATA_DIR")
    with tempfile.TemporaryDirectory(dir=output) as tmp:
        staged = export(run, format="sagemaker", out=Path(tmp) / "export", tar=False,
                        echo=lambda m: print(m, file=sys.stderr))
        model_dir.mkdir(parents=True, exist_ok=True)
        for path in (staged / "model").iterdir():
            shutil.move(str(path), model_dir / path.name)
        (staged / "model").rmdir()
        rest = output / "sagemaker"
        if rest.exists():
            shutil.rmtree(rest)
        shutil.move(str(staged), rest)
    return model_dir


if __name__ == "__main__":
    sys.exit(main())
