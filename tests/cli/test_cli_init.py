"""`kinfuse init`: a commented TOML with every field and its default, which loads back to the
recipe; and the short flags a first run needs."""

import dataclasses
import tomllib

import pytest

from kinfuse import InfuseConfig
from kinfuse.cli import build_parser, load_config, main


def _fields(config):
    """{(section, field): value} of every field of an InfuseConfig."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update({(f.name, g.name): getattr(value, g.name) for g in dataclasses.fields(value)})
        else:
            out[("", f.name)] = value
    return out


def test_init_writes_every_field_with_its_comment_and_loads_back_to_the_recipe(tmp_path, capsys):
    path = tmp_path / "infuse.toml"
    assert main(["init", str(path)]) == 0
    assert "add urls or paths under [corpus]" in capsys.readouterr().out
    text = path.read_text()
    raw = tomllib.loads(text)
    written = {("", k): v for k, v in raw.items() if not isinstance(v, dict)}
    written.update({(s, k): v for s, table in raw.items() if isinstance(table, dict) for k, v in table.items()})
    recipe = _fields(InfuseConfig())
    assert written == {k: v for k, v in recipe.items() if v is not None}  # every value, as the recipe has it
    for (section, name), value in recipe.items():
        if value is None:  # TOML has no null: shown, commented out
            assert f"# {name} =   (unset)" in text
    assert "# LoRA rank: capacity of the adapter\nlora_r = 16\n" in text  # the field comments: --help's
    # loaded back (with the corpus it asks for): exactly the recipe
    loaded = InfuseConfig.from_toml(path, overrides={"corpus": {"paths": ["pages"]}})
    expected = InfuseConfig()
    expected.resolve_paths(tmp_path)
    expected.corpus.paths = ["pages"]
    assert loaded == expected
    assert main(["init", str(path)]) == 2 and "--force" in capsys.readouterr().err  # never overwritten unasked


def test_init_takes_the_infuse_flags(tmp_path, capsys):
    (tmp_path / "pages").mkdir()
    path = tmp_path / "infuse.toml"
    assert main(["init", str(path), "--path", str(tmp_path / "pages"), "--train.lora_r", "8", "--chat", "false"]) == 0
    config = InfuseConfig.from_toml(path)
    assert config.corpus.paths == [str(tmp_path / "pages")] and config.train.lora_r == 8 and config.chat is False
    assert 'paths = ["pages"]' in path.read_text()  # relative to the file, which reads it from its folder
    assert main(["init", str(tmp_path / "bad.toml"), "--train.lora_r", "0"]) == 2
    assert "lora_r" in capsys.readouterr().err and not (tmp_path / "bad.toml").exists()


def parse(*args):
    return load_config(build_parser().parse_args(["infuse", *args]))


def test_short_flags_are_the_config_flags():
    cfg = parse("--url", "https://a.example/x", "https://b.example/", "--url", "https://c.example/",
                "--path", "docs", "--probes", "p.jsonl", "--retention", "r.jsonl")
    assert cfg.corpus.urls == ["https://a.example/x", "https://b.example/", "https://c.example/"]
    assert (cfg.corpus.paths, cfg.eval.probes, cfg.eval.retention) == (["docs"], ["p.jsonl"], ["r.jsonl"])
    # the recipe for everything else: no TOML needed
    assert dataclasses.replace(cfg, corpus=InfuseConfig().corpus, eval=InfuseConfig().eval) == dataclasses.replace(
        InfuseConfig(), corpus=InfuseConfig().corpus)


def test_short_flags_show_in_help(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["infuse", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--corpus.urls [STR ...], --url [STR ...]" in out and "--eval.probes [STR ...], --probes [STR ...]" in out
