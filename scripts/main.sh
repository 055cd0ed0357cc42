#!/usr/bin/env bash
# The main job on the embedded defaults: checkpoint -> compressed bundle (rlrc-export pipeline) ->
# latency benchmark against the checkpoint (rlrc-bench --compare) -> the ROS 2 node on the bundle
# with the simulated robot in the loop (rlrc-closed-loop) -> one screen of summary.
# Flags (scripts/main_job.py --help): --checkpoint CKPT --data demos.hdf5 --quantize int8|int4 --work DIR
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
exec .venv/bin/python scripts/main_job.py "$@"
