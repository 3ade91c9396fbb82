#!/usr/bin/env bash
# Issue 24, part 4: does BEVFusion's recipe (CBGS + GT-paste, and for fusion the staged start from
# the LiDAR-only run) help the demo teachers? Trains, for each seed, the LiDAR-only and the fusion
# demo teacher with today's recipe (demo_lidar.yaml, demo_fusion.yaml) and with BEVFusion's
# (demo_lidar_recipe.yaml, demo_fusion_recipe.yaml started from that seed's recipe LiDAR run), one
# run at a time (they need the cores to themselves), validating once at the end, then prints the
# table (benchmarks/recipe_table.py). Not run by tests or CI.
#
#   benchmarks/recipe_seed_runs.sh WORLD OUT [SEEDS] [--set k=v ...]
#
# Then (EQUAL_STEPS=0 skips it) the fusion teacher with today's recipe for 1440 steps: the staged
# recipe's fusion run has had the LiDAR-only stage's 720 steps before its own 720.
#
# WORLD: a world with a long tail in its training split and every class in every val scene, e.g.
#   bevsimdet simulate --out WORLD --version v1.0-trainval --scenes 28 --samples-per-scene 40 \
#       --val-scenes 20 --val-samples-per-scene 10 --long-tail 0.25
# (then the runs need --set data.version=v1.0-trainval --set data.train_split=train
#  --set data.val_split=val, which this script passes when WORLD has a v1.0-trainval folder).
set -euo pipefail
WORLD=${1:?world dataroot}; OUT=${2:?output folder}; SEEDS=${3:-"0 1 2"}; shift $(( $# < 3 ? $# : 3 ))
PY=${PY:-python}
SETS=(--set train.val_interval=100000 "$@")   # one validation, at the end
if [ -d "$WORLD/v1.0-trainval" ]; then
  SETS+=(--set data.version=v1.0-trainval --set data.train_split=train --set data.val_split=val)
fi
mkdir -p "$OUT"
train() {  # name config seed [extra --set ...]
  local run="$OUT/$1_s$3" config=$2 seed=$3; shift 3
  [ -f "$run/metrics.json" ] && return 0
  /usr/bin/time -f "$run %e s" $PY -m bevsimdet train "configs/$config" --dataroot "$WORLD" --work-dir "$run" \
    --set seed="$seed" "${SETS[@]}" "$@" --no-progress 2>>"$OUT/times.txt" >"$run.log" || { echo "failed: $run (log: $run.log)"; return 1; }
}
# The LiDAR pairs of every seed first: they are half the cost, and each fusion_recipe run starts from them.
for seed in $SEEDS; do
  train lidar demo_lidar.yaml "$seed"
  train lidar_recipe demo_lidar_recipe.yaml "$seed"
done
for seed in $SEEDS; do
  train fusion demo_fusion.yaml "$seed"
  train fusion_recipe demo_fusion_recipe.yaml "$seed" --set train.init_from.path="$OUT/lidar_recipe_s$seed/checkpoints/latest.safetensors"
done
# The control for the staged start's extra training: the fusion run with today's recipe for as many
# steps as the LiDAR-only and the fusion stage together (720 + 720), schedule stretched to match.
if [ "${EQUAL_STEPS:-1}" = 1 ]; then
  for seed in $SEEDS; do
    train fusion_1440 demo_fusion.yaml "$seed" --set train.max_steps=1440
  done
fi
$PY benchmarks/recipe_table.py "$OUT" --world "$WORLD"
