#!/usr/bin/env bash
# The DISAL ablation of docs/method.md: sign x direction x dynamic (lam 1 where the dynamic term is on),
# plus every baseline, on one dataset, in the simulator's default (frozen-encoder, head) mode.
# Usage: bench/ablation.sh bbc|r8 [seeds] [out]
set -euo pipefail
ds=${1:-bbc}; seeds=${2:-5}; out=${3:-bench/out/ablation-$ds}
variants=()
for sign in descent ascent; do
  for dir in accumulated segment remaining; do
    for dyn in none mean-prediction previous; do
      lam=1; [ "$dyn" = none ] && lam=0
      variants+=("disal:sign=$sign:direction=$dir:dynamic=$dyn:lam=$lam")
    done
  done
done
baselines=random,least_confidence,margin,entropy,bald,coreset,badge,static_influence:sign=descent,static_influence:sign=ascent
strategies=$(IFS=,; echo "${variants[*]}"),$baselines
exec "${PYTHON:-.venv/bin/python}" -m disal.bench --dataset "$ds" --seeds "$seeds" --strategies "$strategies" --out "$out"
