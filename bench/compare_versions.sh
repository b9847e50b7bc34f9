#!/usr/bin/env bash
# Two versions of llmos on the same checkpoints, in turns: an older checkout (OLD, e.g. a
# `git worktree add ../llmos-old <commit>`) and this one. Each side runs its own bench scripts
# with PYTHONPATH=<side>/src; bench/api_throughput.py runs from this checkout against both.
#   bash bench/compare_versions.sh ../llmos-old runs
set -u
OLD=$(cd "${1:?usage: compare_versions.sh OLD_CHECKOUT MODELS_DIR}" && pwd)
MODELS=$(cd "${2:?usage: compare_versions.sh OLD_CHECKOUT MODELS_DIR}" && pwd)
NEW=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$NEW/.venv/bin/python}
side() {  # name checkout
  echo "== $1: $2"
  (cd "$2" && PYTHONPATH="$2/src" "$PY" "$NEW/bench/api_throughput.py" --models "$MODELS")
}
for round in 1 2; do
  side "old (round $round)" "$OLD"
  side "new (round $round)" "$NEW"
done
for root in "$OLD" "$NEW"; do
  echo "== classify_throughput: $root"
  (cd "$root" && PYTHONPATH="$root/src" "$PY" bench/classify_throughput.py \
    --checkpoint "$MODELS/sentiment-zh/checkpoint" --dataset sentiment-zh)
done
for root in "$OLD" "$NEW"; do
  echo "== serve_load: $root"
  (cd "$root" && PYTHONPATH="$root/src" "$PY" bench/serve_load.py \
    --checkpoint "$MODELS/sentiment-zh/checkpoint" --clients 32 --seconds 10)
done
