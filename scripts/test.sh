#!/usr/bin/env bash
# The test command: set up (first run only), then the default CPU suite. Extra arguments go to
# pytest, e.g. `bash scripts/test.sh -m slow` for the slow tests, `-k parity` for a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
if [ $# -eq 0 ]; then set -- -m "not slow"; fi
exec .venv/bin/python -m pytest "$@"
