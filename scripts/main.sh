#!/usr/bin/env bash
# The main job on the embedded defaults: build the small OpenVLA-format demo checkpoint (once) and
# run one instruction through it on a test scene, printing the action and per-stage latency.
# This grows into export -> bundle -> benchmark as those stages land; the command stays the same.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
CKPT=${RLRC_DEMO_CKPT:-artifacts/demo/tiny}
if [ ! -f "$CKPT/config.json" ]; then
  .venv/bin/rlrc-export make-tiny --out "$CKPT" --preset tiny
fi
.venv/bin/rlrc-export inspect "$CKPT"
.venv/bin/rlrc-predict --policy "$CKPT" --instruction "pick up the red block" --repeat 3
