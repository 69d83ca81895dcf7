import shutil
from pathlib import Path

import os

import pytest

from kinfuse import ConfigError, InfuseConfig, TrainConfig
from kinfuse.config import CorpusConfig


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


@pytest.mark.parametrize("written, resolved", [("./local-model", "local-model"), ("../up/model", "../up/model"),
                                               ("models/tiny/v1", "models/tiny/v1"),  # no hub id: a path
                                               ("HuggingFaceTB/SmolLM2-135M", None), ("default", None)])
def test_a_model_written_as_a_relative_path_is_relative_to_the_toml(tmp_path, written, resolved):
    path = tmp_path / "infuse.toml"
    path.write_text(f'model = "{written}"\n[corpus]\nurls = ["https://example.com/"]\n[data]\naugment_model = "{written}"\n')
    cfg = InfuseConfig.from_toml(path)
    expected = os.path.normpath(tmp_path / resolved) if resolved else written
    assert cfg.model == expected and cfg.data.augment_model == expected


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


# -- every field's type and range, before anything loads (issue 21, item 9) ---------------------


def _toml(tmp_path, text: str, name: str = "infuse.toml") -> Path:
    path = tmp_path / name
    path.write_text(text + '\n[corpus]\npaths = ["pages"]\n')  # after `text`: its top-level keys stay top-level
    return path


def _problems(tmp_path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        InfuseConfig.from_toml(_toml(tmp_path, text))
    return e.value.problems


@pytest.mark.parametrize("value", ["1e400", "inf", "-inf", "nan"])
def test_non_finite_learning_rate_is_refused(tmp_path, value):
    # TOML reads 1e400 as inf: training with it wrote NaN adapter tensors and exited 0
    (problem,) = _problems(tmp_path, f"[train]\nlearning_rate = {value}\n")
    assert problem.startswith("train.learning_rate=") and "finite" in problem


def test_absurd_learning_rates_are_refused_with_the_bound(tmp_path):
    problems = _problems(tmp_path, "[train]\nlearning_rate = 5.0\ntrain_lm_head = true\n"
                                   "embedding_learning_rate = 2.0\n")
    assert [p.split("=")[0] for p in problems] == ["train.learning_rate", "train.embedding_learning_rate"]
    assert all("at most 1" in p for p in problems)
    InfuseConfig.from_toml(_toml(tmp_path, "[train]\nlearning_rate = 1.0\n"))  # the bound itself is allowed


@pytest.mark.parametrize("field, value", [
    ("epochs", "inf"), ("epochs", "nan"), ("lora_dropout", "nan"), ("max_grad_norm", "inf"),
    ("weight_decay", "nan"), ("anchor_kl_weight", "inf"),
])
def test_non_finite_floats_are_refused(tmp_path, field, value):
    (problem,) = _problems(tmp_path, f"[train]\n{field} = {value}\n")
    assert problem.startswith(f"train.{field}=") and "finite" in problem


def test_strings_where_numbers_belong_are_config_errors_not_tracebacks(tmp_path):
    # each of these raised a TypeError from a comparison, or passed and failed after the model loaded
    problems = _problems(tmp_path, '[train]\nlearning_rate = "2e-4"\nwarmup_steps = "4"\nseed = "abc"\n'
                                   'lora_dropout = "0.1"\n[data]\nreplay_ratio = "0.5"\nblock_size = "512"\n'
                                   '[eval]\nmax_new_tokens = "64"\n')
    assert len(problems) == 7, problems
    for name in ("train.learning_rate='2e-4'", "train.warmup_steps='4'", "train.seed='abc'",
                 "train.lora_dropout='0.1'", "data.replay_ratio='0.5'", "data.block_size='512'",
                 "eval.max_new_tokens='64'"):
        (line,) = [p for p in problems if p.startswith(name + ":")]
        assert "without quotes" in line


def test_bools_where_integers_belong_are_refused(tmp_path):
    problems = _problems(tmp_path, "[train]\nlora_r = true\nmicro_batch_size = true\nseed = false\n"
                                   "[data]\nparaphrases = true\n")
    assert sorted(p.split("=")[0] for p in problems) == ["data.paraphrases", "train.lora_r",
                                                         "train.micro_batch_size", "train.seed"]
    assert all("integer" in p for p in problems)


def test_floats_where_integers_belong_and_text_where_bools_belong(tmp_path):
    problems = _problems(tmp_path, 'chat = "yes"\n[train]\nlora_r = 8.0\nresume = "true"\n')
    assert sorted(p.split("=")[0] for p in problems) == ["chat", "train.lora_r", "train.resume"]
    assert any("true or false" in p for p in problems if p.startswith("train.resume"))


def test_seed_outside_what_torch_can_seed_is_refused(tmp_path):
    for value in ("-1", str(2**40)):
        (problem,) = _problems(tmp_path, f"[train]\nseed = {value}\n")
        assert problem.startswith("train.seed=") and "0 to" in problem


@pytest.mark.parametrize("text, field", [
    ("[train]\nmax_steps = 0\n", "train.max_steps"),
    ("[train]\nwarmup_steps = -1\n", "train.warmup_steps"),
    ("[data]\nblock_size = -512\n", "data.block_size"),
    ("[data]\nself_distill = -1\n", "data.self_distill"),
    ("[data]\nreplay_ratio = 1e9\n", "data.replay_ratio"),
    ("[eval]\nbatch_size = 0\n", "eval.batch_size"),
    ('out_dir = ""\n', "out_dir"),
    ('model = ""\n', "model"),
])
def test_out_of_range_sizes_are_refused(tmp_path, text, field):
    (problem,) = _problems(tmp_path, text)
    assert problem.startswith(field + "=")


def test_a_string_where_a_list_belongs_says_to_use_a_list(tmp_path):
    # `probes = "probes.jsonl"` was split into one path per character and failed after training
    problems = _problems(tmp_path, '[eval]\nprobes = "probes.jsonl"\nretention = "general.jsonl"\n'
                                   '[data]\nqa_files = "qa.jsonl"\n')
    assert len(problems) == 3
    (probes,) = [p for p in problems if p.startswith("eval.probes=")]
    assert "'probes.jsonl'" in probes and 'probes = ["probes.jsonl"]' in probes


def test_a_string_corpus_path_is_not_split_into_characters(tmp_path):
    path = tmp_path / "infuse.toml"
    path.write_text('[corpus]\npaths = "pages"\nurls = "http://127.0.0.1/"\n')
    with pytest.raises(ConfigError) as e:
        InfuseConfig.from_toml(path)
    assert sorted(p.split("=")[0] for p in e.value.problems) == ["corpus.paths", "corpus.urls"]
    assert 'paths = ["pages"]' in str(e.value)


def test_lists_of_non_strings_are_refused(tmp_path):
    (problem,) = _problems(tmp_path, "[eval]\nprobes = [1, 2]\n")
    assert problem.startswith("eval.probes=[1, 2]") and "list of text" in problem


def test_every_type_and_range_problem_listed_at_once(tmp_path):
    problems = _problems(tmp_path, 'chat = 1\n[train]\nlearning_rate = 1e400\nseed = "abc"\nepochs = inf\n'
                                   'lora_r = 0\n[data]\nquestions = 99\n[eval]\nprobes = "p.jsonl"\n')
    assert len(problems) == 7, problems


def test_python_values_are_checked_like_toml():
    cfg = InfuseConfig(corpus=CorpusConfig(paths=["p"]), train=TrainConfig(learning_rate=float("nan"), seed="1"))
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert sorted(p.split("=")[0] for p in e.value.problems) == ["train.learning_rate", "train.seed"]
    with pytest.raises(ConfigError, match="lora_r"):
        TrainConfig(lora_r="8").validate()


def test_flags_reach_the_same_rules(capsys):
    from kinfuse.cli import main

    # argparse reads "inf" and "nan" as floats; the config's rule refuses them, before any corpus loads
    assert main(["infuse", "--corpus.paths", "nowhere", "--train.learning_rate", "inf", "--train.epochs", "nan"]) == 2
    err = capsys.readouterr().err
    assert "train.learning_rate=inf" in err and "train.epochs=nan" in err and "nowhere" not in err


# -- probe, retention and Q&A files checked before the model loads (issue 21, item 9) --------


def test_missing_and_malformed_eval_files_are_listed_before_any_model_loads(tmp_path):
    from kinfuse.pipeline import infuse

    (tmp_path / "page.txt").write_text("The Zephyr router has four antennas.")
    (tmp_path / "retention.jsonl").write_text('{"question": "What is 2 + 2?"}\n')  # no answers
    (tmp_path / "qa.jsonl").write_text('{"question": "Antennas?"}\n')  # no answer
    config = InfuseConfig.from_dict({
        "model": str(tmp_path / "no-such-model"),  # never loaded: the files are checked first
        "out_dir": str(tmp_path / "out"),
        "corpus": {"paths": [str(tmp_path / "page.txt")]},
        "data": {"qa_files": [str(tmp_path / "qa.jsonl")]},
        "eval": {"probes": [str(tmp_path / "nope.json")], "retention": [str(tmp_path / "retention.jsonl")]},
    })
    with pytest.raises(ConfigError) as e:
        infuse(config, echo=lambda *_: None)
    problems = e.value.problems
    assert len(problems) == 3, problems
    (probes,) = [p for p in problems if p.startswith("eval.probes")]
    assert "nope.json" in probes and "no such" in probes
    (retention,) = [p for p in problems if p.startswith("eval.retention")]
    assert "answers" in retention
    (qa,) = [p for p in problems if p.startswith("data.qa_files")]
    assert "answer" in qa


def test_a_probes_file_that_is_not_jsonl_objects_is_refused_before_any_model_loads(tmp_path):
    from kinfuse.pipeline import infuse

    (tmp_path / "page.txt").write_text("The Zephyr router has four antennas.")
    (tmp_path / "probes.json").write_text('[{"question": "Antennas?", "answers": ["four"]}]\n')
    config = InfuseConfig.from_dict({
        "model": str(tmp_path / "no-such-model"), "out_dir": str(tmp_path / "out"),
        "corpus": {"paths": [str(tmp_path / "page.txt")]}, "eval": {"probes": [str(tmp_path / "probes.json")]},
    })
    with pytest.raises(ConfigError, match=r"eval\.probes.*probes\.json"):
        infuse(config, echo=lambda *_: None)
    (tmp_path / "probes.jsonl").write_bytes(b"\xff\xfe{\x00")  # not UTF-8: was a UnicodeDecodeError traceback
    config.eval.probes = [str(tmp_path / "probes.jsonl")]
    with pytest.raises(ConfigError, match=r"eval\.probes\[0\].*UTF-8"):
        infuse(config, echo=lambda *_: None)


# -- the run folder is the default train.output_dir; paths relative to the TOML (item 7) ----------


@pytest.mark.parametrize("field", ["resume", "save_every", "tensorboard"])
def test_resume_save_every_and_tensorboard_work_without_output_dir(field):
    # `set train.resume = true and run again` is the advice an interrupted run prints
    value = 10 if field == "save_every" else True
    cfg = InfuseConfig.from_dict({"out_dir": "/tmp/run", "corpus": {"paths": ["p"]}, "train": {field: value}})
    assert cfg.trainer_config().output_dir == "/tmp/run"  # checkpoints go in the run folder
    cfg.train.output_dir = "/elsewhere"
    assert cfg.trainer_config().output_dir == "/elsewhere"
    with pytest.raises(ConfigError, match="output_dir"):
        TrainConfig(**{field: value}).validate()  # a bare trainer still has nowhere to put them


def test_relative_output_paths_resolve_against_the_toml_not_the_current_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    path = project / "infuse.toml"
    path.write_text('out_dir = "run"\n[corpus]\npaths = ["pages"]\n'
                    '[train]\nresume = true\noutput_dir = "ckpt"\nresume_from = "old/checkpoints/step-4"\n')
    seen = []
    for cwd in (project, tmp_path):  # started from the project, resumed from elsewhere: the same run
        monkeypatch.chdir(cwd)
        cfg = InfuseConfig.from_toml(path if cwd == tmp_path else "infuse.toml")
        seen.append((cfg.out_dir, cfg.train.output_dir, cfg.train.resume_from, cfg.trainer_config().output_dir))
    assert seen[0] == seen[1] == (str(project / "run"), str(project / "ckpt"),
                                  str(project / "old/checkpoints/step-4"), str(project / "ckpt"))


def test_resume_with_only_out_dir_continues_in_the_run_folder_from_anywhere(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "infuse.toml").write_text('out_dir = "run"\n[corpus]\npaths = ["pages"]\n[train]\nresume = true\n')
    monkeypatch.chdir(tmp_path)
    cfg = InfuseConfig.from_toml("project/infuse.toml")
    assert cfg.trainer_config().output_dir == str(project / "run")


def test_a_section_of_the_wrong_type_is_named():
    cfg = InfuseConfig(corpus=CorpusConfig(paths=["p"]), train={"lora_r": 8})
    with pytest.raises(ConfigError, match=r"train=\{'lora_r': 8\}: must be a TrainConfig"):
        cfg.validate()


def test_python_callers_may_give_paths_as_path_objects(tmp_path):
    InfuseConfig(out_dir=tmp_path / "run", corpus=CorpusConfig(paths=[tmp_path / "pages"]),
                 train=TrainConfig(output_dir=tmp_path / "ckpt", resume=True)).validate()


def test_resume_started_from_another_folder_continues_the_same_run(tiny_model, tmp_path, monkeypatch):
    from kinfuse.pipeline import infuse

    project = tmp_path / "project"
    project.mkdir()
    (project / "page.txt").write_text("The Zephyr router has four antennas and supports a mesh of nine nodes.")
    (project / "infuse.toml").write_text(
        f'model = "{tiny_model}"\nout_dir = "run"\n[corpus]\npaths = ["page.txt"]\n'
        "[data]\nblock_size = 32\nquestions = 0\nreplay_ratio = 0.0\nself_distill = 0\nanchor_kl = false\n"
        '[train]\nquantize = "none"\nprogress = false\nmax_steps = 2\nsave_every = 1\ngradient_checkpointing = false\n'
        "[eval]\nperplexity = false\n")
    monkeypatch.chdir(project)
    first = infuse(InfuseConfig.from_toml("infuse.toml"), echo=lambda *_: None)  # no train.output_dir
    assert Path(first.train.checkpoint).parent == project / "run" / "checkpoints"
    shutil.rmtree(first.train.checkpoint)  # as if stopped after step 1
    step1 = (project / "run" / "checkpoints").glob("step-*")
    (step1,) = step1
    written = step1.stat().st_ino  # a fresh start would write step 1 again (a new folder)
    monkeypatch.chdir(tmp_path)  # the tool's advice, followed from another folder
    again = InfuseConfig.from_toml("project/infuse.toml", overrides={"train": {"resume": True}})
    second = infuse(again, echo=lambda *_: None)
    assert second.out_dir == project / "run" and not (tmp_path / "run").exists()
    assert step1.stat().st_ino == written  # continued from it
    assert Path(second.train.checkpoint).parent == step1.parent and second.train.steps == 2


def test_corpus_limits_are_config_fields_that_reach_the_loaders(tmp_path):
    """corpus.max_bytes / corpus.deadline: the same defaults as the Corpus constructors', checked."""
    import inspect

    from kinfuse import Corpus, CorpusError
    from kinfuse.config import CorpusConfig
    from kinfuse.pipeline import build_corpus

    defaults = CorpusConfig()
    for loader in (Corpus.from_urls, Corpus.from_paths):
        assert inspect.signature(loader).parameters["max_bytes"].default == defaults.max_bytes
    assert inspect.signature(Corpus.from_urls).parameters["deadline"].default == defaults.deadline
    with pytest.raises(ConfigError, match=r"(?s)max_bytes=0: must be a positive.*deadline=-1"):
        InfuseConfig.from_dict({"corpus": {"paths": ["x"], "max_bytes": 0, "deadline": -1}}).validate()
    page = tmp_path / "big.txt"
    page.write_text("A sentence about nothing in particular. " * 100)
    with pytest.raises(CorpusError, match="max_bytes=1000"):
        build_corpus(InfuseConfig.from_dict({"corpus": {"paths": [str(page)], "max_bytes": 1000}}))


def test_fsdp_rules_are_config_rules_so_a_toml_is_refused_before_any_launch(tmp_path):
    # `kinfuse sagemaker-job` reads the config with from_toml alone: what FSDP mode cannot run must
    # be refused there, not in the job's container.
    with pytest.raises(ConfigError) as e:
        TrainConfig(distributed="fsdp", train_lm_head=True, optimizer="paged_adamw_8bit", kernels="torch").validate()
    assert [p.split(" with ")[0] for p in e.value.problems] == [
        "train_embeddings / train_lm_head", 'optimizer = "paged_adamw_8bit"', 'kernels = "torch"']
    TrainConfig(distributed="fsdp").validate()  # the defaults run under FSDP ("auto": adamw, stock modules)
    path = tmp_path / "infuse.toml"
    path.write_text('[corpus]\npaths = ["p"]\n[train]\ndistributed = "fsdp"\n')
    with pytest.raises(ConfigError, match=r'train.distributed = "fsdp": kinfuse infuse builds the training mix'):
        InfuseConfig.from_toml(path)
