#!/usr/bin/env bash
# Soft vs hard vs no attention on the embedded digit_captions (Show, Attend and Tell), default settings.
# Usage: experiments/captioning_attention/run.sh [SEEDS...]   (default seed: 0; ATTENTIONS="soft hard none")
# Each run goes to experiments/captioning_attention/runs/<attention>_s<seed>/; then RESULTS.md is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/captioning_attention
PY=${PY:-.venv/bin/python}
SEEDS=${*:-0}
for seed in $SEEDS; do
  for attention in ${ATTENTIONS:-soft hard none}; do
    out=$HERE/runs/${attention}_s${seed}
    [ -f "$out/metrics.json" ] && { echo "skip $out (already run)"; continue; }
    WANDB_MODE=offline $PY -m attnbench model=show_attend_tell data=digit_captions \
      model.attention=$attention seed=$seed logger=csv trainer=cpu callbacks.progress_bar=null \
      hydra.run.dir=$out
  done
done
$PY $HERE/make_results.py
