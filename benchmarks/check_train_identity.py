"""Single-process training, run by a given source tree: the loss of every step and a SHA-256 of
the adapter's bytes, as JSON on stdout, to compare two commits bit for bit (see README.md,
"Data parallel under torchrun").

    git archive START --prefix=base/ | tar -x -C /tmp
    PYTHONPATH=/tmp/base python benchmarks/check_train_identity.py /tmp/base > before.json
    PYTHONPATH=$PWD python benchmarks/check_train_identity.py $PWD > after.json
"""

import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, sys.argv[1])  # the tree under test: its tests/conftest.py builds the tiny model

from tests.conftest import TEXT, build_tiny_model  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from kinfuse import Chunker, QLoRATrainer, TrainConfig  # noqa: E402

RUNS = {  # NF4 with dropout and accumulation; fp32 with warmup and a cosine schedule
    "nf4_dropout": dict(quantize="nf4", lora_dropout=0.1, grad_accum=2, max_steps=5, micro_batch_size=1),
    "none_fp32": dict(quantize="none", compute_dtype="float32", max_steps=5, micro_batch_size=2, warmup_steps=1,
                      lr_schedule="cosine"),
}

with tempfile.TemporaryDirectory() as tmp:
    model = build_tiny_model(Path(tmp) / "tiny")
    blocks = Chunker(AutoTokenizer.from_pretrained(model), block_size=64)([{"text": t} for t in TEXT.splitlines()])
    out = {}
    for name, settings in RUNS.items():
        trainer = QLoRATrainer(str(model), TrainConfig(progress=False, **settings))
        result = trainer.train(blocks)
        weights = {k: v for k, v in trainer.model.state_dict().items() if "lora_" in k}
        digest = hashlib.sha256(b"".join(weights[k].cpu().numpy().tobytes() for k in sorted(weights))).hexdigest()
        out[name] = {"losses": [row["loss"] for row in result.history], "adapter_sha256": digest}
print(json.dumps(out, indent=1))
