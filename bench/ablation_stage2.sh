#!/usr/bin/env bash
# Stage 2 of the DISAL ablation (docs/method.md): around the stage-1 winner (sign=descent,
# direction=accumulated), the weight lam of each dynamic term, and the number of checkpoints K.
# Usage: bench/ablation_stage2.sh bbc|r8 [seeds]
set -euo pipefail
ds=${1:-bbc}; seeds=${2:-5}
py=${PYTHON:-.venv/bin/python}
v=()
for dyn in mean-prediction previous; do
  for lam in 0.1 0.3; do v+=("disal:sign=descent:direction=accumulated:dynamic=$dyn:lam=$lam"); done
done
"$py" -m disal.bench --dataset "$ds" --seeds "$seeds" --out "bench/out/ablation2-$ds-lam" \
  --strategies "$(IFS=,; echo "${v[*]}"),random"
for k in 2 10 20; do
  "$py" -m disal.bench --dataset "$ds" --seeds "$seeds" --checkpoints "$k" --out "bench/out/ablation2-$ds-K$k" \
    --strategies "disal:sign=descent:direction=accumulated:dynamic=none:lam=0,disal:sign=descent:direction=accumulated:dynamic=mean-prediction:lam=0.3,disal:sign=descent:direction=segment:dynamic=none:lam=0,random"
done
