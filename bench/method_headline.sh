#!/usr/bin/env bash
# The headline table of docs/method.md: default DISAL beside every baseline, same model and budget.
# Usage: bench/method_headline.sh bbc|r8 [seeds]
set -euo pipefail
ds=${1:-bbc}; seeds=${2:-5}
exec "${PYTHON:-.venv/bin/python}" -m disal.bench --dataset "$ds" --seeds "$seeds" --out "bench/out/headline-$ds" \
  --strategies disal,static_influence,random,least_confidence,margin,entropy,bald,coreset,badge
