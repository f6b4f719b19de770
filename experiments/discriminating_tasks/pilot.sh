#!/usr/bin/env bash
# Pilot calibration (one seed, equal wall-clock budget per run via trainer.max_time): FocalNet-micro with three
# mixers on pathfinder and cluttered_digits; the Image Transformer full vs local_1d on twin_digits (24 px).
# Usage: bash experiments/discriminating_tasks/pilot.sh OUT_DIR [MAX_TIME]   (MAX_TIME e.g. 00:00:02:30)
set -u
OUT=${1:?output folder}
T=${2:-00:00:02:30}
PY=${PYTHON:-python}
common="logger=csv callbacks=none trainer=cpu seed=0 trainer.max_time=$T trainer.max_epochs=${EPOCHS:-100}"
for data in pathfinder cluttered_digits; do
  for mixer in focal_modulation window_attention global_attention; do
    $PY -m attnbench data=$data data.num_train=4000 data.num_val=500 data.num_test=1000 \
      model.mixer=$mixer $common hydra.run.dir=$OUT/$data/$mixer || true
  done
done
for mixer in full local_1d; do
  $PY -m attnbench model=image_transformer data=twin_digits data.image_size=24 data.distance_jitter=2 \
    data.num_train=2000 data.num_val=200 data.num_test=500 model.mixer=$mixer model.net.dim=32 \
    model.net.depth=2 model.task.score_samples=0 model.task.sample_n=0 $common \
    hydra.run.dir=$OUT/twin_digits/$mixer || true
done
