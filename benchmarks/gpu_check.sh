#!/usr/bin/env bash
# One prepared device call (see benchmarks/README.md): bring-up tests on CUDA (the Triton ops in
# bf16 included), then the training benchmark on a random-weight Llama-2-7B: the reference
# recipe against kinfuse's default (Triton), stock-module and activation-offload paths with a profile of each,
# the longest block at micro-batch 1 under a memory cap, and the per-op kernel benchmark.
# Expects .whl/ from ../shared/device/wheels.sh. Every step has its own time limit, so a slow
# one costs only its own results; all logs and JSON land in $OUT.
#   OUT=/some/dir bash benchmarks/gpu_check.sh
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm --format=csv
t0=$SECONDS
timeout "${TEST_SECONDS:-90}" python3 -m pytest -q -p no:cacheprovider --timeout 60 tests/train/test_train_*.py \
  tests/kernels/test_kernels_qlora_linear.py tests/kernels/test_kernels_cross_entropy.py \
  tests/kernels/test_kernels_norm_rope_swiglu.py tests/kernels/test_kernels_nf4.py tests/kernels/test_kernels_dispatch.py \
  > "$OUT/pytest-cuda.log" 2>&1
echo "pytest rc=$? in $((SECONDS - t0)) s"; grep -E "passed|failed|error" "$OUT/pytest-cuda.log" | tail -3
t0=$SECONDS
timeout "${BENCH_SECONDS:-330}" python3 benchmarks/bench_train.py --arch llama-2-7b \
  --micro-batch "${MICRO_BATCH:-8}" --steps 5 --warmup 2 \
  --recipes "${RECIPES:-reference,kinfuse,kinfuse-stock,kinfuse-offload}" --profile \
  --max-block --max-block-recipes reference,kinfuse-offload --max-block-sizes 16384,32768,65536,131072 \
  --max-block-steps 1 --max-block-memory-gib "${CAP_GIB:-24}" \
  --timeout 150 --workdir /tmp/kb --results-dir "$OUT" > "$OUT/bench-train.log" 2>&1
echo "bench_train rc=$? in $((SECONDS - t0)) s"; tail -12 "$OUT/bench-train.log"
t0=$SECONDS
timeout "${KERNELS_SECONDS:-45}" python3 benchmarks/bench_kernels.py --arch llama-2-7b --tokens 16384 \
  --ops qlora_linear,fused_linear_cross_entropy,rms_norm,swiglu --results-dir "$OUT" > "$OUT/bench-kernels.log" 2>&1
echo "bench_kernels rc=$? in $((SECONDS - t0)) s"; tail -14 "$OUT/bench-kernels.log"
