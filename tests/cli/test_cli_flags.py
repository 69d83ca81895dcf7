import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from kinfuse import ConfigError, InfuseConfig
from kinfuse.cli import build_parser, load_config

DEMO = Path(__file__).resolve().parents[2] / "examples" / "aws-summit-2023" / "infuse.toml"


def run(*args):
    return subprocess.run([sys.executable, "-m", "kinfuse.cli", *args], capture_output=True, text=True, timeout=120)


def test_missing_config_names_the_file(tmp_path):
    result = run("infuse", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "no such config file" in result.stderr and "nope.toml" in result.stderr


def test_bad_config_lists_every_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[train]\nlora_r = 0\nlr_schedule = "zigzag"\n')
    result = run("infuse", str(path))
    assert result.returncode == 2
    assert "lora_r" in result.stderr and "lr_schedule" in result.stderr and "corpus" in result.stderr


def test_missing_corpus_path_names_it(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[corpus]\npaths = ["no-such-folder"]\n')
    result = run("infuse", str(path))
    assert result.returncode == 2 and "no-such-folder" in result.stderr


# -- flags derived from the config dataclasses: parsed in-process, nothing trains ------------


def parse(*args):
    return load_config(build_parser().parse_args(["infuse", *args]))


def test_nested_flags_override_the_config_file():
    demo = InfuseConfig.from_toml(DEMO)
    cfg = parse(str(DEMO), "--train.lora_r", "8", "--data.questions", "3", "--eval.max_new_tokens", "64",
                "--train.seed", "1", "--model", "some/model")
    assert (cfg.train.lora_r, cfg.data.questions, cfg.eval.max_new_tokens, cfg.train.seed) == (8, 3, 64, 1)
    assert cfg.model == "some/model"
    assert cfg.corpus.paths == demo.corpus.paths and cfg.train.learning_rate == demo.train.learning_rate


def test_without_a_config_the_flags_override_the_recipe():
    cfg = parse("--corpus.paths", "pages", "--train.max_steps", "2")
    recipe = InfuseConfig()
    assert cfg.corpus.paths == ["pages"] and cfg.train.max_steps == 2
    assert cfg.train.learning_rate == recipe.train.learning_rate and cfg.data.block_size == recipe.data.block_size


def test_bool_flags():
    assert parse(str(DEMO), "--chat", "false").chat is False
    cfg = parse(str(DEMO), "--train.resume", "--train.output_dir", "o", "--data.anchor_kl", "no")
    assert cfg.train.resume is True and cfg.data.anchor_kl is False


def test_list_optional_and_union_flags():
    cfg = parse("--corpus.paths", "a", "b", "--eval.probes", "--train.max_steps", "none",
                "--train.target_modules", "q_proj", "v_proj", "--data.block_size", "128")
    assert cfg.corpus.paths == ["a", "b"] and cfg.eval.probes == [] and cfg.train.max_steps is None
    assert cfg.train.target_modules == ["q_proj", "v_proj"] and cfg.data.block_size == 128
    assert parse("--corpus.paths", "a", "--train.target_modules", "all-linear").train.target_modules == "all-linear"


def test_dashes_spell_the_same_flag():
    cfg = parse(str(DEMO), "--out-dir", "elsewhere", "--train.max-steps", "5")
    assert cfg.out_dir == "elsewhere" and cfg.train.max_steps == 5


def test_bad_type_names_the_flag_and_what_it_expects(capsys):
    with pytest.raises(SystemExit) as e:
        parse(str(DEMO), "--train.lora_r", "eight")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--train.lora_r" in err and "an integer" in err and "eight" in err
    with pytest.raises(SystemExit):
        parse(str(DEMO), "--chat", "maybe")
    assert "--chat" in capsys.readouterr().err


def test_unknown_flag_is_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        parse(str(DEMO), "--train.lora_rank", "4")
    assert e.value.code == 2 and "--train.lora_rank" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no abbreviations: a typo is not taken for a longer flag
        parse(str(DEMO), "--train.epoch", "2")


def test_every_config_field_has_a_flag_with_its_comment_and_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["infuse", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--train.lora_r INT LoRA rank: capacity of the adapter (default: 16)" in out
    assert "--eval.max_new_tokens INT answer length limit for greedy generation (default: 96)" in out  # the recipe's
    recipe = InfuseConfig()
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        nested = dataclasses.is_dataclass(value)
        for name in [f"{f.name}.{g.name}" for g in dataclasses.fields(value)] if nested else [f.name]:
            assert f"--{name} " in out, name


def test_flag_values_reach_validation():
    with pytest.raises(ConfigError, match="train.lora_r"):
        parse(str(DEMO), "--train.lora_r", "0")


# -- an infusion stopped by a signal: exit status, how to resume, the log kept --------------------


def _infusion(tiny_model, tmp_path):
    page = tmp_path / "zephyr.txt"
    page.write_text("The Zephyr router has four antennas. It was released in 2021 by Northwind.\n" * 8)
    out = tmp_path / "out"
    config = tmp_path / "infuse.toml"
    config.write_text(f'model = "{tiny_model}"\nout_dir = "{out}"\n[corpus]\npaths = ["{page}"]\n'
                      '[data]\nblock_size = 64\nquestions = 0\nreplay_ratio = 0\nself_distill = 0\nanchor_kl = false\n'
                      f'[train]\nmax_steps = 100000\nsave_every = 2\nquantize = "none"\nprogress = false\n'
                      f'output_dir = "{out}"\n'
                      '[eval]\nperplexity = false\n')
    return config, out


def _stop(args, log, min_rows, sig, cwd):
    """Run `kinfuse infuse ARGS` until the log has `min_rows` rows past those it had, then send `sig`."""
    import time

    had = len(log.read_text().splitlines()) if log.is_file() else 0
    child = subprocess.Popen([sys.executable, "-m", "kinfuse.cli", "infuse", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=cwd)
    deadline = time.time() + 180
    while time.time() < deadline and child.poll() is None:
        rows = log.read_text().splitlines() if log.is_file() else []
        if len(rows) >= min_rows and len(rows) != had:
            break
        time.sleep(0.2)
    child.send_signal(sig)
    _, err = child.communicate(timeout=180)
    return child.returncode, err


def test_sigterm_exits_143_says_how_to_resume_and_resume_keeps_the_log(tiny_model, tmp_path):
    import json
    import signal

    from kinfuse.run import RunRecord

    config, out = _infusion(tiny_model, tmp_path)
    log = out / "train_log.jsonl"
    code, err = _stop([str(config)], log, 3, signal.SIGTERM, tmp_path)
    assert code == 143, err[-3000:]
    first = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [r["step"] for r in first]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 3
    # the exact command (and the TOML line) to continue
    assert f"to continue: kinfuse infuse {config} --train.resume" in err and "resume = true" in err and "[train]" in err
    record = RunRecord.read(out)
    assert (record.status, record.completed, record.steps) == ("interrupted", False, steps[-1])
    assert "SIGTERM" in record.reason and record.checkpoint.endswith(f"step-{steps[-1]:07d}")

    # Resumed from step 2 (an earlier checkpoint): the log keeps steps 1-2 as they were, drops the
    # steps logged after the checkpoint, and the resumed run appends from step 3; Ctrl-C: 130.
    ckpt = out / "checkpoints" / "step-0000002"
    code, err = _stop([str(config), "--train.resume_from", str(ckpt)], log, steps[-1] + 1, signal.SIGINT, tmp_path)
    assert code == 130, err[-3000:]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    again = [r["step"] for r in rows]
    assert again == list(range(1, len(again) + 1)) and len(again) > steps[-1]
    assert rows[:2] == first[:2]  # and each step after the checkpoint once: the resumed run's rows
    assert "to continue: kinfuse infuse" in err and RunRecord.read(out).status == "interrupted"
