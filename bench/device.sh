#!/usr/bin/env bash
# Every GPU figure in one prepared device call (README, "Benchmarks"), each step under its own time limit, logs in $OUT:
#   run: bash bench/device.sh            (device machine: carry .whl/, see the README; timeout_s 600)
#   SMALL=1 PYTHON=.venv/bin/python bash bench/device.sh   (the same steps on this CPU, small shapes: a dry run)
# With an untracked bridge_variant.py in the repository root (e.g. `git show own-modules-experiment:headscope/backends/
# bridge.py > bridge_variant.py`), the sweep also runs on that variant of the backend, after the main one (an A/B).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/headscope-device}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import transformer_lens" 2>/dev/null && [ -d .whl ]; then  # the device machine lacks it
  "$PYTHON" -m pip install -q --no-deps --target /tmp/site .whl/*.whl >"$OUT/pip.log" 2>&1 \
    || echo "wheel install failed (see $OUT/pip.log)"
fi
export PYTHONPATH=/tmp/site:. HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
shape=() circuit=(--gpu) pattern_tokens=4096
if [ -n "${SMALL:-}" ]; then shape=(--small --device cpu) circuit=(--small --device cpu) pattern_tokens=256; fi

step() {  # step NAME SECONDS SCRIPT ARGS...: one bench script, its output kept even when it runs out of time
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit} s)"
  timeout "$limit" "$PYTHON" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]}"
}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
step sweep 200 bench/gpu_sweep.py "${shape[@]}" --naive-layers 2 --large 64x20 --profile
if [ -f bridge_variant.py ]; then
  cp headscope/backends/bridge.py "$OUT/bridge_main.py"
  cp bridge_variant.py headscope/backends/bridge.py
  step sweep-variant 140 bench/gpu_sweep.py "${shape[@]}" --naive-layers 1 --profile
  cp "$OUT/bridge_main.py" headscope/backends/bridge.py
fi
step circuit 150 bench/circuit.py "${circuit[@]}"
step patterns 80 bench/gpu_sweep.py "${shape[@]}" --patterns "$pattern_tokens"
