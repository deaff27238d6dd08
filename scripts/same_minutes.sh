#!/usr/bin/env bash
# Quality per minute: two checkouts of this project (say, before and after a change to the training
# step) train the same preset side by side for the same wall-clock minutes -- one thread each, started
# together, stopped together by SIGTERM, which checkpoints -- then each checkpoint's kNN on the test
# split is computed by its own checkout. A faster step shows as more steps, and a better model, in the
# same minutes; the shared machine's noise falls on both runs alike.
#
#   bash scripts/same_minutes.sh BEFORE_DIR AFTER_DIR MINUTES OUT_DIR [TINY_IMAGENET_DIR]
#
# Runs the fmnist preset, and the tinyimagenet preset when its folder is given. Tiny-ImageNet's decoded
# caches (each checkout's own cache key) are built before the timed minutes. Writes OUT_DIR/<preset>_<side>/
# (the runs), <preset>_<side>.log and <preset>_<side>_knn.json.
set -u
if [ $# -lt 4 ]; then sed -n 2,12p "$0"; exit 2; fi
BEFORE=$(realpath "$1"); AFTER=$(realpath "$2"); MIN=$3; OUT=$(realpath -m "$4"); TINY=${5:-}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
checkout() { [ "$1" = before ] && echo "$BEFORE" || echo "$AFTER"; }
presets="fmnist"; [ -n "$TINY" ] && presets="fmnist tinyimagenet"
for preset in $presets; do
  extra=(); [ "$preset" = tinyimagenet ] && extra=(--data-dir "$(realpath "$TINY")")
  if [ "$preset" = tinyimagenet ]; then  # the caches are built before a run's first line: start, wait for it, stop
    for side in before after; do
      (cd "$(checkout $side)" && exec env PYTHONPATH=src "$PY" -m simsiam pretrain --preset $preset "${extra[@]}" \
         --out-dir "$OUT/warm_${preset}_$side" > "$OUT/warm_${preset}_$side.log" 2>&1) &
      warm=$!
      until grep -q "^run " "$OUT/warm_${preset}_$side.log" 2>/dev/null || ! kill -0 $warm 2>/dev/null; do sleep 2; done
      kill -KILL $warm 2>/dev/null; wait $warm 2>/dev/null
    done
  fi
  pids=()
  for side in before after; do
    (cd "$(checkout $side)" && exec env PYTHONPATH=src "$PY" -m simsiam pretrain --preset $preset "${extra[@]}" \
       --out-dir "$OUT/${preset}_$side" monitor.baselines=false > "$OUT/${preset}_$side.log" 2>&1) &
    pids+=($!)
  done
  sleep $((MIN * 60))
  kill -TERM "${pids[@]}"; wait "${pids[@]}"
  for side in before after; do
    (cd "$(checkout $side)" && PYTHONPATH=src "$PY" -m simsiam knn "$OUT/${preset}_$side" "${extra[@]}" \
       --json "$OUT/${preset}_${side}_knn.json" > "$OUT/${preset}_${side}_knn.log" 2>&1)
    echo "$preset $side: $(grep -o 'stopped by SIGTERM at step [0-9]*' "$OUT/${preset}_$side.log"), kNN $(grep -o '"k=200,t=0.1": [0-9.]*' "$OUT/${preset}_${side}_knn.json")"
  done
done
