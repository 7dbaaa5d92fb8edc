#!/bin/bash
# 1,500 steps of the demo recipe (configs/train/demo.yaml: d_model 128, 2 layers, cell objective), padded vs
# packed, two seeds each, on the same cells: an atlas-profile corpus of 12,000 cells x 500 genes
# (117-314 genes per cell, 5-95%), context 512, batch 32 cells
cd /work/main
for seed in 0 1; do
  for pack in false true; do
    out=/tmp/packcurve/seed$seed-pack$pack
    rm -rf $out
    /usr/bin/time -f "%e s" .venv/bin/python -m training fit --config configs/train/demo.yaml --data.path /tmp/pc/zarr \
      --trainer.default_root_dir $out --trainer.max_steps 1500 --trainer.val_check_interval 250 \
      --data.context_length 512 --data.batch_size 32 \
      --trainer.enable_progress_bar false --seed_everything $seed --data.seed $seed --data.pack $pack > $out.log 2>&1
  done
done
echo done > /tmp/packcurve/DONE
