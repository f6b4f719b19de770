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
$PY - "$OUT" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for p in sorted(out.glob("eval_s*_*/metrics.json")):
    m = json.loads(p.read_text())
    bn = p.parent.name.split("_", 2)[2]
    rows.setdefault(bn, []).append((m["test/fid"], m["test/is"], m.get("test/sample_bn")))
for bn, vals in rows.items():
    fids = [v[0] for v in vals]
    sd = statistics.stdev(fids) if len(fids) > 1 else 0.0
    print(f"{bn:9s} seeds={len(fids)} FID {statistics.mean(fids):.4f} ± {sd:.4f} IS {statistics.mean(v[1] for v in vals):.3f}"
          f"  per seed FID {[round(f, 4) for f in fids]} recorded={vals[0][2]}")
PY
