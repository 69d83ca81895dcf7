from pathlib import Path

import pytest

from kinfuse import ConfigError, InfuseConfig, TrainConfig


def test_defaults_are_valid():
    TrainConfig().validate()


def test_every_problem_reported_at_once():
    cfg = TrainConfig(lora_r=0, lora_dropout=1.5, learning_rate=-1, lr_schedule="zigzag", optimizer="sgd",
                      micro_batch_size=0, device="tpu")
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    text = str(e.value)
    assert len(e.value.problems) == 7
    for name in ("lora_r", "lora_dropout", "learning_rate", "lr_schedule", "optimizer", "micro_batch_size", "device"):
        assert name in text


def test_toml_maps_onto_dataclasses(tmp_path):
    (tmp_path / "pages").mkdir()
    path = tmp_path / "infuse.toml"
    path.write_text(
        'model = "default"\nout_dir = "run"\n[corpus]\npaths = ["pages"]\n'
        "[train]\nlora_r = 8\nmax_steps = 3\n[data]\nblock_size = 128\n[eval]\nprobes = [\"p.jsonl\"]\n"
    )
    cfg = InfuseConfig.from_toml(path)
    assert cfg.train.lora_r == 8 and cfg.train.max_steps == 3 and cfg.data.block_size == 128
    assert cfg.corpus.paths == [str(tmp_path / "pages")]  # relative to the TOML file
    assert cfg.out_dir == str(tmp_path / "run") and cfg.eval.probes == [str(tmp_path / "p.jsonl")]


def test_toml_unknown_keys_and_bad_values_listed_together(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('modle = "x"\n[train]\nlora_rank = 4\nlearning_rate = 0\n')
    with pytest.raises(ConfigError) as e:
        InfuseConfig.from_toml(path)
    assert "modle" in str(e.value) and "lora_rank" in str(e.value)


def test_missing_toml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        InfuseConfig.from_toml(tmp_path / "nope.toml")


def test_example_configs_are_valid():
    examples = Path(__file__).resolve().parent.parent / "examples"
    configs = sorted(examples.glob("*/*.toml"))
    assert examples / "aws-summit-2023" / "infuse.toml" in configs  # the demo config, at least
    for path in configs:
        InfuseConfig.from_toml(path).validate()


def test_eval_batch_size_default_is_the_evaluators():
    from kinfuse.config import EvalConfig
    from kinfuse.generate import BATCH_SIZE

    assert EvalConfig().batch_size == BATCH_SIZE  # config.py stays free of heavy imports, so it repeats it


def test_infuse_defaults_are_the_demo_recipe():
    # a config that gives only a corpus trains with the recipe the demo measures
    demo = InfuseConfig.from_toml(Path(__file__).resolve().parent.parent / "examples" / "aws-summit-2023" / "infuse.toml")
    bare = InfuseConfig()
    for section, names in {
        "data": ("block_size", "questions", "document_variants", "order", "answers", "replay_ratio",
                 "self_distill", "anchor_kl", "qa_files", "corpus_repeats", "qa_repeats"),
        "train": ("lora_r", "lora_alpha", "lora_dropout", "learning_rate", "lr_schedule", "warmup_steps",
                  "epochs", "anchor_kl_weight", "micro_batch_size", "max_steps"),
        "eval": ("max_new_tokens",),
    }.items():
        for name in names:
            assert getattr(getattr(bare, section), name) == getattr(getattr(demo, section), name), (section, name)
    assert TrainConfig().learning_rate != bare.train.learning_rate  # a bare TrainConfig stays neutral


def test_toml_section_overrides_only_the_fields_it_names(tmp_path):
    path = tmp_path / "infuse.toml"
    path.write_text('[corpus]\npaths = ["pages"]\n[train]\nlora_r = 8\n[data]\nself_distill = 0\n')
    cfg = InfuseConfig.from_toml(path)
    recipe = InfuseConfig()
    assert cfg.train.lora_r == 8 and cfg.data.self_distill == 0
    assert cfg.train.learning_rate == recipe.train.learning_rate and cfg.train.epochs == recipe.train.epochs
    assert cfg.data.anchor_kl and cfg.data.replay_ratio == recipe.data.replay_ratio


def test_overrides_replace_fields_after_the_file_and_are_validated_with_it(tmp_path):
    path = tmp_path / "infuse.toml"
    path.write_text("[train]\nlora_r = 8\nseed = 3\n")  # no corpus: the overrides give it
    cfg = InfuseConfig.from_toml(path, overrides={"train": {"seed": 1}, "corpus": {"paths": ["pages"]}})
    assert cfg.train.lora_r == 8 and cfg.train.seed == 1
    assert cfg.corpus.paths == ["pages"]  # an override's path stays as given, not relative to the file
    with pytest.raises(ConfigError, match="lora_rank"):
        InfuseConfig.from_toml(path, overrides={"train": {"lora_rank": 4}, "corpus": {"paths": ["pages"]}})


def test_config_bounds_are_the_ones_augment_checks():
    from kinfuse.data.augment import PARAPHRASE_STYLES
    from kinfuse.config import MAX_PARAPHRASES

    assert len(PARAPHRASE_STYLES) == MAX_PARAPHRASES  # config.py does not import augment, so it repeats it
    with pytest.raises(ConfigError, match="paraphrases"):
        InfuseConfig.from_dict({"corpus": {"paths": ["p"]}, "data": {"paraphrases": MAX_PARAPHRASES + 1}})
