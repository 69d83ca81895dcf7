"""Load an export with plain transformers (and peft) and save its logits on the prompts given.

kinfuse verify runs this file's text in a fresh interpreter (`python -I -c`), so the export is
loaded exactly as a server or a user without kinfuse would: it imports only torch,
transformers, peft and safetensors, and fails if anything imported kinfuse.

    argv[1]: JSON {"kind": "adapter"|"merged", "path", "base", "tokenizer", "compute_dtype",
                   "texts": [...], "chat": a user message, "out": a path without suffix}
    writes OUT.safetensors (logits_0, logits_1, ...) and OUT.json (token ids, chat prompt, load report)
"""
import json
import sys
import warnings

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

args = json.loads(sys.argv[1])
dtype = getattr(torch, args["compute_dtype"])
info = {"warnings": []}
tok = AutoTokenizer.from_pretrained(args["tokenizer"])
info["chat"] = (tok.apply_chat_template([{"role": "user", "content": args["chat"]}], tokenize=False,
                                        add_generation_prompt=True) if getattr(tok, "chat_template", None) else None)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if args["kind"] == "adapter":
        from peft import PeftModel
        base = AutoModelForCausalLM.from_pretrained(args["base"], dtype=dtype)
        model = PeftModel.from_pretrained(base, args["path"])
    else:
        model, loading = AutoModelForCausalLM.from_pretrained(args["path"], dtype=dtype, output_loading_info=True)
        info["missing_keys"] = sorted(loading.get("missing_keys") or [])
        info["unexpected_keys"] = sorted(loading.get("unexpected_keys") or [])
        info["mismatched_keys"] = [str(k) for k in (loading.get("mismatched_keys") or [])]
        info["quantization_config"] = hasattr(model.config, "quantization_config")
info["warnings"] = [str(w.message)[:300] for w in caught if "adapter" in str(w.message).lower() and (
    "missing" in str(w.message).lower() or "unexpected" in str(w.message).lower())]
model.eval()
logits, ids_all = {}, []
with torch.no_grad():
    for i, text in enumerate(args["texts"]):
        ids = tok(text, return_tensors="pt").input_ids
        logits[f"logits_{i}"] = model(input_ids=ids).logits[0].float().contiguous()
        ids_all.append(ids[0].tolist())
info["ids"] = ids_all
info["kinfuse_imported"] = "kinfuse" in sys.modules
assert "kinfuse" not in sys.modules, "the export check imported kinfuse"
save_file(logits, args["out"] + ".safetensors")
with open(args["out"] + ".json", "w") as f:
    json.dump(info, f)
