#!/usr/bin/env bash
# The GPU paths in one call, on a machine with an NVIDIA GPU and no network (e.g. the `device` tool):
#   bash scripts/gpu_check.sh [OUT_DIR]        (default: $OUT if set, else artifacts/gpu_check; < 8 minutes)
# Uses the machine's python3 and torch with this checkout on PYTHONPATH (nothing is downloaded); GPU
# extras that are not installed there (tensorrt, onnxruntime-gpu) are installed from wheels in .whl/
# when that folder exists. What it checks and writes: scripts/gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-artifacts/gpu_check}}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
if ! nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT_DIR/nvidia_smi.txt" 2>&1; then
  echo "[gpu_check] no NVIDIA GPU here (nvidia-smi failed); the CPU paths are covered by bash scripts/test.sh" >&2
  exit 2
fi
cat "$OUT_DIR/nvidia_smi.txt"
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_site .whl/*.whl \
    && export PYTHONPATH=/tmp/gpu_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
timeout 450 $PY scripts/gpu_check.py --out "$OUT_DIR" "${@:2}" 2>&1 | tee "$OUT_DIR/log.txt"
exit "${PIPESTATUS[0]}"
