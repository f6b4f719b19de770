#!/usr/bin/env bash
# The EMA generator's domain FID on digits with each model.task.sample_bn choice (issue 23): per seed, one
# short SAGAN training (model=sagan, EPOCHS epochs), then its last checkpoint evaluated three times, once per
# choice (train=false: the checkpoint is only read). Usage: sample_bn.sh OUT_DIR [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$1; shift
SEEDS=${*:-0}
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-20}
EVAL=(model.task.test_samples=5000 model.task.test_splits=10 logger=csv trainer=cpu callbacks.progress_bar=null)
for seed in $SEEDS; do
  run=$OUT/train_s$seed
  [ -f "$run/metrics.json" ] || WANDB_MODE=offline $PY -m attnbench model=sagan seed=$seed \
      trainer.max_epochs=$EPOCHS "${EVAL[@]}" hydra.run.dir=$run
  for bn in running standing batch; do
    ev=$OUT/eval_s${seed}_$bn
    [ -f "$ev/metrics.json" ] || WANDB_MODE=offline $PY -m attnbench model=sagan seed=$seed train=false \
        ckpt_path=$run/checkpoints/last.ckpt model.task.sample_bn=$bn "${EVAL[@]}" hydra.run.dir=$ev
  done
done
$PY experiments/sagan_paper_scale/sample_bn_table.py "$OUT"
