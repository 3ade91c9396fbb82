#!/usr/bin/env bash
# Issue 23, part 3: does the fast training mode learn what float32 does? Trains the demo baseline
# and the demo student (distilled from TEACHER) over 3 seeds in each mode, one run at a time (the
# runs need the cores to themselves: ~2 x 3 x (5 + 9) min on 2 cores), and prints each run's
# final validation. Not run by tests or CI.
#
#   benchmarks/speed_seed_runs.sh WORLD TEACHER_CHECKPOINT OUT [SEEDS]
#
# Modes: fp32 = float32, NCHW (train.channels_last=false); fast = train.amp (bf16 where the CPU
# has it natively, else float32 with one line) + train.channels_last. Both run the fused head
# (float32-equivalent to the plain branches: tests/test_speed_paths.py).
set -euo pipefail
WORLD=${1:?world dataroot}; TEACHER=${2:?teacher checkpoint}; OUT=${3:?output folder}; SEEDS=${4:-"0 1 2"}
PY=${PY:-python}
declare -A MODE=(
  [fp32]="--set train.amp=false --set train.channels_last=false"
  [fast]="--set train.amp=true --set train.amp_dtype=bfloat16 --set train.channels_last=true --set distill.teacher_amp=bfloat16"
)
mkdir -p "$OUT"
for seed in $SEEDS; do
  for mode in fp32 fast; do
    run="$OUT/camera_${mode}_s$seed"
    [ -f "$run/metrics.json" ] || { /usr/bin/time -f "$run %e s" $PY -m bevsimdet train configs/demo_camera.yaml --dataroot "$WORLD" \
      --work-dir "$run" --set seed=$seed ${MODE[$mode]} --no-progress 2>>"$OUT/times.txt"; }
    run="$OUT/student_${mode}_s$seed"
    [ -f "$run/metrics.json" ] || { /usr/bin/time -f "$run %e s" $PY -m bevsimdet distill configs/demo_student.yaml --teacher "$TEACHER" \
      --dataroot "$WORLD" --work-dir "$run" --set seed=$seed ${MODE[$mode]} --no-progress 2>>"$OUT/times.txt"; }
  done
done
for m in "$OUT"/*/metrics.json; do
  $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-2], *(f'{k} {d[k]:.4f}' for k in ('mAP','NDS','mATE','mAOE','mAVE') if k in d))" "$m"
done
