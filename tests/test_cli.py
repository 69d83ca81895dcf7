import subprocess
import sys


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
