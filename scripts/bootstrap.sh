#!/usr/bin/env bash
# Set up everything the project needs on a fresh Debian 12 machine with Python 3.11:
# Debian packages (scripts/apt-packages.txt) and a project-local virtual environment (.venv)
# with the project installed in editable mode. A second run reuses what is there: the venv is
# rebuilt only when setup.py, this script or the package list change.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
EXTRAS=${RLRC_EXTRAS:-export,sim,ros,realsense,onnx,dev}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

LOG=${TMPDIR:-/tmp}/rlrc-bootstrap.log
: >"$LOG"
# Run a set-up step with its output in $LOG; on failure show the last lines and name the log.
quiet() {
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[bootstrap] failed: $*" >&2
    tail -n 20 "$LOG" >&2
    echo "[bootstrap] full log: $LOG" >&2
    exit 1
  fi
}

apt_install() {
  quiet $SUDO apt-get update -qq
  quiet $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
while read -r pkg; do
  case "$pkg" in ''|'#'*) continue ;; esac
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < scripts/apt-packages.txt
if [ ${#missing[@]} -gt 0 ]; then
  echo "[bootstrap] installing Debian packages: ${missing[*]}"
  apt_install "${missing[@]}"
fi

stamp=.venv/.rlrc-installed
want=$(cat setup.py scripts/bootstrap.sh scripts/apt-packages.txt | sha256sum | cut -c1-16)-$EXTRAS
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; then
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv"
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    # Debian's system Python ships venv/ensurepip separately.
    rm -rf .venv
    apt_install python3-venv
    "$PYTHON" -m venv .venv
  fi
fi
echo "[bootstrap] installing Python packages into .venv (extras: $EXTRAS)"
# torch first and pinned: the local 2.13.0 CPU build; an unpinned resolve would pull the CUDA build.
echo "[bootstrap]   torch 2.13.0 (CPU build) ..."
quiet .venv/bin/python -m pip install -q "torch==2.13.0"
# compat mode: a path entry, so packages added later (and by other engineers) import without a reinstall.
echo "[bootstrap]   the project and its dependencies ..."
quiet .venv/bin/python -m pip install -q -e ".[${EXTRAS}]" --config-settings editable_mode=compat
echo "$want" > "$stamp"
echo "[bootstrap] done"
