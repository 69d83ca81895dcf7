"""`kinfuse ask` and `kinfuse chat` on a tiny model's run folder (tests/conftest.py tiny_run)."""

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kinfuse.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _results(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["probes"]["results"]


def test_ask_gives_the_answer_the_evaluation_gave(tiny_run, capsys):
    run_dir, _, _ = tiny_run
    probe = next(r for r in _results(run_dir) if r["kind"] == "chat")
    assert main(["ask", str(run_dir), probe["prompt"]]) == 0
    assert capsys.readouterr().out == probe["adapted_answer"] + "\n"
    assert main(["ask", str(run_dir), probe["prompt"], "--no-adapter"]) == 0
    assert capsys.readouterr().out == probe["base_answer"] + "\n"
    assert main(["ask", str(run_dir), probe["prompt"], "--compare"]) == 0
    assert capsys.readouterr().out == f"base:    {probe['base_answer']}\nadapted: {probe['adapted_answer']}\n"


def test_ask_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    assert main(["ask", str(tmp_path / "notes"), "anything?"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'notes'}" in err and "neither a run dir (run.json + adapter/) nor an adapter dir" in err


def test_ask_names_a_missing_base_model_and_the_base_flag(tiny_run, tiny_model, tmp_path, capsys):
    run_dir, _, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    record = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**record, "model": str(tmp_path / "gone")}))
    assert main(["ask", str(copy), "Which port?"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "gone") in err and "--base" in err
    probe = next(r for r in _results(run_dir) if r["kind"] == "chat")
    assert main(["ask", str(copy), probe["prompt"], "--base", tiny_model]) == 0
    assert capsys.readouterr().out == probe["adapted_answer"] + "\n"


def _read_until(fd, marker, timeout=180.0):
    out, deadline = b"", time.time() + timeout
    while marker not in out and time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            out += chunk
    return out.decode("utf-8", "replace")


def test_chat_in_a_terminal_streams_an_answer_and_exits(tiny_run, tmp_path):
    """`kinfuse chat RUN` driven through a pseudo-terminal: a question, its answer streamed,
    /exit. The first turn is the question alone, so its answer is `ask`'s."""
    run_dir, _, _ = tiny_run
    probe = next(r for r in _results(run_dir) if r["kind"] == "chat")
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb"}
    child = subprocess.Popen([sys.executable, "-m", "kinfuse.cli", "chat", str(run_dir), "--max-new-tokens", "12"],
                             stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    try:
        banner = _read_until(leader, b"you> ")
        assert "you> " in banner and "/exit ends" in banner, banner[-2000:]
        os.write(leader, (probe["prompt"] + "\n").encode())
        reply = _read_until(leader, b"you> ")
        answer = reply.split("model> ", 1)[1].rsplit("you> ", 1)[0].replace("\r\n", "\n").strip()
        assert answer == probe["adapted_answer"]
        os.write(leader, b"/exit\n")
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
        os.close(leader)
