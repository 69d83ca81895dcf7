#!/usr/bin/env bash
# One prepared device call (see benchmarks/README.md): bring-up tests on CUDA, then the
# training benchmark on a random-weight Llama-2-7B. Expects .whl/ from ../shared/device/wheels.sh.
#   OUT=/some/dir bash benchmarks/gpu_check.sh
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
timeout 70 python3 -m pytest -q -x tests/test_trainer.py tests/test_chunker.py -p no:cacheprovider 2>&1 \
  | tail -20 | tee "$OUT/pytest-cuda.log"
timeout "${BENCH_SECONDS:-300}" python3 benchmarks/bench_train.py --arch llama-2-7b --micro-batch 4 --steps 6 \
  --warmup 2 --timeout 140 --workdir /tmp/kb --results-dir "$OUT" 2>&1 | tail -30
