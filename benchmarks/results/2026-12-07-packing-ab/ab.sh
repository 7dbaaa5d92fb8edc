#!/bin/bash
# plain streaming, before (4c4a8f3) vs after (HEAD), alternating fresh processes; packed on the after side
py=/work/main/.venv/bin/python
common=(--batch-size 64 --context-length 2048 --seed 0 --max-batches 250 --epochs 3)
for r in 0 1 2 3 4 5 6; do
  for side in before after after-packed; do
    root=/tmp/before; extra=()
    [ "$side" != before ] && root=/work/main
    [ "$side" = after-packed ] && extra=(--pack)
    line=$(cd $root && PYTHONPATH=$root $py -m shards stream /tmp/demo/zarr "${common[@]}" "${extra[@]}" 2>&1 | tail -1)
    [ $r -gt 0 ] && echo "$r $side $line"
  done
done
