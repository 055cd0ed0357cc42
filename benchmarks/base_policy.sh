#!/usr/bin/env bash
# The built-in benchmark's base policy from nothing, in one command:
#   bash benchmarks/base_policy.sh [OUT_DIR]          (default artifacts/base_policy; about 75 min on 2 cores)
#
# 1. expert demonstrations of the id split (`rlrc-sim demos`): 2000 clean, 2000 with DART action noise
#    (labels stay the expert's), 1000 stack episodes and 2000 pick episodes for the first two stages;
# 2. an orientation stage (1200 steps on the pick demos; 95 % of each batch asks "how is the <colour> bar
#    turned?" or where an object is);
# 3. a pair stage from it (1000 steps on counterfactual stack pairs: a frame with its instruction, and the
#    same frame with the colours swapped and the expert's action for that; with the role-attention term
#    and 15 % questions so the orientation is kept);
# 4. the main run from that model (5600 steps on the 4000 demos with 20 % grounding questions, 6.25 %
#    counterfactual pairs and the role-attention term), preset base-96 (OpenVLA's architecture at 96 px);
# 5. rlrc-eval, EPISODES per family (default 100) on each of SPLITS (default: id ood id_clutter).
# ACTION_CHUNK=K (default 1) trains the same recipe with OpenVLA-OFT-style parallel decoding of K-action
# chunks (rlrc-train --action-chunk K) and evaluates it with EVAL_EXTRA (default "--chunk-mode open_loop");
# its results are copied as eval_base_chunkK_*.
# Every stage is `rlrc-sim train` (rlrc-train plus the benchmark's recipe, sim/recipes/tabletop.py) with
# soft action targets (HL-Gauss, 2 bins), sine-cosine position init and the exact target-row head.
# Every stage is skipped when its output exists and training resumes from its last state, so a run cut off
# by a restart continues where it stopped. Training is deterministic on a given CPU type: the same command
# gives the same weights bit for bit. Wall times go to OUT/wall_time.txt; evaluations to OUT/eval_*.json,
# copied to benchmarks/results/eval_base_*.json/.png (`git diff benchmarks/results` compares two runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
OUT=${1:-artifacts/base_policy}
SPLITS=${SPLITS:-id ood id_clutter}
EPISODES=${EPISODES:-100}
ACTION_CHUNK=${ACTION_CHUNK:-1}
EVAL_EXTRA=${EVAL_EXTRA:---chunk-mode open_loop}
CHUNK=()
NAME=eval_base
if [ "$ACTION_CHUNK" != 1 ]; then
  CHUNK=(--action-chunk "$ACTION_CHUNK")  # the later stages inherit it from their --init
  NAME=eval_base_chunk$ACTION_CHUNK
fi
BIN=.venv/bin
mkdir -p "$OUT" benchmarks/results

demos() {  # demos FILE ARGS...: write FILE unless it exists
  local file=$1
  shift
  [ -f "$OUT/$file" ] || $BIN/rlrc-sim demos --out "$OUT/$file" --workers 2 "$@"
}
t0=$(date +%s)
demos demos_id_2000.hdf5 --episodes 2000 --seed 0
demos demos_id_dart_2000.hdf5 --episodes 2000 --seed 50000 --action-noise 0.3
demos demos_stack_1000.hdf5 --episodes 1000 --families stack --seed 800000
demos demos_pick_2000.hdf5 --episodes 2000 --families pick --seed 900000
[ -f "$OUT/wall_time.txt" ] || echo "demos wall time: $(( $(date +%s) - t0 )) s" | tee "$OUT/wall_time.txt"

COMMON=(--preset base-96 --batch-size 64 --lr 7e-4 --label-sigma 2 --pos-init sincos --head-rows targets --log-every 50)
stage() {  # stage NAME DIR ARGS...: train DIR/final unless it exists
  local name=$1 dir=$2
  shift 2
  if [ ! -f "$dir/final/config.json" ]; then
    local start
    start=$(date +%s)
    $BIN/rlrc-sim train --out "$dir" "${COMMON[@]}" "$@"
    echo "$name wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/wall_time.txt"
  fi
}
stage "orientation stage" "$OUT/orient" --data "$OUT/demos_pick_2000.hdf5" --dataset-key orient_stage "${CHUNK[@]}" \
  --steps 1200 --warmup-steps 50 --min-lr-ratio 1 --save-every 400 --keep-checkpoints 3 \
  --ground-frac 0.95 --ground-orient --ground-orient-weight 20
stage "pair stage" "$OUT/pairs" --data "$OUT/demos_stack_1000.hdf5,$OUT/demos_pick_2000.hdf5" \
  --init "$OUT/orient/final" --dataset-key stack_pairs_orient \
  --steps 1000 --warmup-steps 100 --min-lr-ratio 1 --save-every 500 --keep-checkpoints 1 \
  --counterfactual-frac 0.8 --ground-frac 0.15 --ground-orient --ground-orient-weight 20 \
  --attn-role 1.0 --attn-role-tokens 2
stage "training" "$OUT/run" --data "$OUT/demos_id_2000.hdf5,$OUT/demos_id_dart_2000.hdf5" \
  --init "$OUT/pairs/final" \
  --steps 5600 --warmup-steps 200 --save-every 500 --keep-checkpoints 3 \
  --ground-frac 0.2 --ground-task --ground-orient --ground-orient-weight 8 --counterfactual-frac 0.0625 \
  --attn-role 1.0 --attn-role-tokens 2

for split in $SPLITS; do
  if [ ! -f "$OUT/eval_${split}.json" ]; then
    # shellcheck disable=SC2086  # EVAL_EXTRA is a list of options
    $BIN/rlrc-eval --policy "$OUT/run/final" --split "$split" --episodes "$EPISODES" --workers 2 \
      --json "$OUT/eval_${split}.json" --plot "$OUT/eval_${split}.png" $EVAL_EXTRA
  fi
  cp "$OUT/eval_${split}.json" "benchmarks/results/${NAME}_${split}.json"
  cp "$OUT/eval_${split}.png" "benchmarks/results/${NAME}_${split}.png"
done
