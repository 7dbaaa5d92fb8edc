#!/usr/bin/env bash
# Two checkouts of cellshard streaming the same shard set, alternating, each run a fresh process:
#   bash benchmarks/ab_versions.sh BEFORE_CHECKOUT AFTER_CHECKOUT SHARD_SET ROUNDS OUT_FILE
# Each line of OUT_FILE: round, version, mode, the loader's own "epoch 0: ..." line (cells/s).
# Modes: plain; weighted (weighting by cell_type, with replacement); grouped by dataset_id in the exact
# schedule (the old default, `--group-exact` on the after side) so both sides run the same algorithm.
set -euo pipefail
before=$1 after=$2 set=$3 rounds=$4 out=$5
py=${PYTHON:-python}
common=(--batch-size 64 --context-length 2048 --seed 0 --max-batches 400)
: > "$out"
# round 0 warms each checkout's numba cache (a cold compile takes seconds): not written to OUT_FILE
for r in $(seq 0 "$rounds"); do
  for mode in plain weighted grouped; do
    for side in before after; do
      root=$before; [ "$side" = after ] && root=$after
      extra=()
      case $mode in
        weighted) extra=(--weighting '{"column": "cell_type", "scheme": "inverse"}' --replacement) ;;
        grouped) extra=(--group-by dataset_id --remainder pad); [ "$side" = after ] && extra+=(--group-exact) ;;
      esac
      line=$(cd "$root" && PYTHONPATH="$root" "$py" -m shards stream "$set" "${common[@]}" "${extra[@]}" | tail -1)
      if [ "$r" -gt 0 ]; then echo "$r $side $mode $line" | tee -a "$out"; fi
    done
  done
done
