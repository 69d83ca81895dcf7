"""kinfuse.train.fsdp_load: FSDP loading shard by shard (fsdp_loading = "sharded", the default) under
`torchrun --nproc-per-node 2` on the CPU (gloo): the run is exactly the whole-model loading's (the
same losses, the same adapter bit for bit), no process ever holds the whole model's weights while
it loads (rank 1 included), and what the loader cannot read is refused with the way on."""

import json
from pathlib import Path

import pytest
import torch

import torchrun_run as tr
from kinfuse import ConfigError, ModelError, TrainConfig

RUN = dict(max_steps=4, micro_batch_size=1, max_grad_norm=1.0, lora_dropout=0.0, learning_rate=5e-3,
           lr_schedule="constant", quantize="nf4", compute_dtype="float32", kernels="none", distributed="fsdp")


def _run(tmp_path, model, sample_text, out, **overrides):
    tr.finish(tr.launch(tmp_path, model, sample_text, out, {**RUN, **overrides}), timeout=240)
    return tr.results(out)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_sharded_loading_trains_exactly_as_whole_loading(tied, tiny_model, request, sample_text, tmp_path):
    # tied: the output layer is the embeddings (SmolLM2, the default model): one tensor in the
    # file, sharded as the embeddings and whole as the output layer
    model = request.getfixturevalue("tied_model") if tied else tiny_model
    sharded = _run(tmp_path, model, sample_text, tmp_path / "sharded", fsdp_loading="sharded")
    whole = _run(tmp_path, model, sample_text, tmp_path / "whole", fsdp_loading="whole")
    for s, w in zip(sharded, whole):
        assert s["held"] == w["held"] and s["held"]["sharded"] and s["held"]["local"] * 2 == s["held"]["whole"]
        assert s["steps"] == w["steps"] == 4
        # The same bytes loaded (the NF4 of every weight, its quantization state, the LoRA init):
        # the runs are the same computation, so the numbers are equal, not close.
        assert [h["loss"] for h in s["history"]] == [h["loss"] for h in w["history"]]
    a, b = tr.adapter(tmp_path / "sharded/adapter"), tr.adapter(tmp_path / "whole/adapter")
    assert a.keys() == b.keys() and a and all(torch.equal(a[k], b[k]) for k in a)


def _deep_model(tiny_model, path):
    """The tiny model deeper and wider (random weights, its tokenizer), so that the decoder layers
    (which are sharded) outweigh the embeddings and the output layer (which every process holds
    whole) as in a real model."""
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_model)
    config.num_hidden_layers, config.hidden_size, config.intermediate_size = 24, 128, 256
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    for f in Path(tiny_model).iterdir():
        if "token" in f.name or f.suffix == ".jinja":
            (path / f.name).write_bytes(f.read_bytes())
    return str(path)


def test_no_process_holds_the_whole_model_while_loading(tiny_model, sample_text, tmp_path):
    deep = _deep_model(tiny_model, tmp_path / "deep")
    common = dict(track_load=True, build_only=True)
    whole = _run(tmp_path, deep, sample_text, tmp_path / "whole", fsdp_loading="whole", **common)
    sharded = _run(tmp_path, deep, sample_text, tmp_path / "sharded", fsdp_loading="sharded", **common)
    full = whole[0]["load"]["before_shard"]
    for w, s in zip(whole, sharded):
        w, s = w["load"], s["load"]
        # Whole-model loading: every process held the whole model (NF4) before FSDP cut it.
        assert w["before_shard"] == full and w["after"] < full
        # Sharded loading: at every tensor read, the process held its shards and that one
        # tensor (read whole, in the file's dtype), never the whole model; it ends holding
        # what the whole-model loading keeps after the cut.
        assert s["after"] == w["after"]
        assert s["peak"] <= s["after"] + s["largest_read"]
        assert s["peak"] < 0.7 * full, (s, full)


def test_what_the_sharded_loader_cannot_read_is_refused(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    from kinfuse.train import fsdp_load

    with pytest.raises(ConfigError, match=r'use_dora with fsdp_loading = "sharded".*set fsdp_loading = "whole"'):
        TrainConfig(distributed="fsdp", use_dora=True).validate()
    TrainConfig(distributed="fsdp", use_dora=True, fsdp_loading="whole").validate()
    with pytest.raises(ConfigError, match=r"fsdp_loading='bogus': choose one of sharded, whole"):
        TrainConfig(fsdp_loading="bogus").validate()

    # a checkpoint without safetensors files
    empty = tmp_path / "bin"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (empty / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelError, match=r"no model.safetensors.*sharded FSDP loader.*fsdp_loading = \"whole\""):
        fsdp_load.checkpoint_files(str(empty))

    # a checkpoint whose tensor names are not the model's
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for f in Path(tiny_model).iterdir():
        if f.name != "model.safetensors":
            (renamed / f.name).write_bytes(f.read_bytes())
    weights = load_file(Path(tiny_model) / "model.safetensors")
    weights["model.layers.0.mlp.up.weight"] = weights.pop("model.layers.0.mlp.up_proj.weight")
    save_file(weights, renamed / "model.safetensors", metadata={"format": "pt"})
    config = TrainConfig(distributed="fsdp", **{k: v for k, v in RUN.items() if k != "distributed"})
    with pytest.raises(ModelError, match=r"no tensors named \['model.layers.0.mlp.up_proj.weight'\].*"
                                         r'fsdp_loading = "whole"'):
        fsdp_load.build_meta_model(str(renamed), config, torch.float32)
