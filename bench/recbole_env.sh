#!/usr/bin/env bash
# A separate virtualenv with RecBole 1.2.1 for side-by-side recommender benchmarks
# (bench/recbole_run.py runs inside it). RecBole is never an llmos dependency: it pins old
# numpy/pandas/scipy and pulls ray, tensorboard, thop, ... that llmos must not carry.
#   bash bench/recbole_env.sh            # creates ${RECBOLE_VENV:-~/.cache/llmos/recbole-venv}
#   "$(bash bench/recbole_env.sh | tail -1)" bench/recbole_run.py --data DIR --dataset NAME ...
# Idempotent: when the venv already imports recbole it only prints the venv's python.
set -euo pipefail
VENV=${RECBOLE_VENV:-$HOME/.cache/llmos/recbole-venv}
PY=$VENV/bin/python

if [ -x "$PY" ] && "$PY" -c "import recbole, torch" >/dev/null 2>&1; then
  echo "$PY"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
[ -x "$PY" ] || python3.11 -m venv "$VENV"
"$PY" -m pip install --quiet --upgrade pip >&2

# torch first, on its own: this machine's pip config finds a CPU-only wheel
# (torch-2.13.0+cpu) on local disk, and a local "+cpu" version sorts above the plain
# 2.13.0 on the index, so pip takes it. Checked below: a CUDA build (and its nvidia-*
# wheels, gigabytes) must never come in.
"$PY" -m pip install --quiet "torch==2.13.0" >&2
if ! "$PY" -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then
  echo "recbole_env.sh: a CUDA build of torch was installed; wanted the CPU wheel" >&2
  exit 1
fi

# RecBole 1.2.1 (2023) predates numpy 2 (its configurator aliases np.float = np.float_ etc.
# for its metrics code; numpy 2 removed np.float_), pandas 2.3 and scipy 1.12.
# setuptools<81 keeps pkg_resources, which the ray that RecBole requires (2.6.x here,
# imported by recbole.quick_start) still imports. No other pins were needed: RecBole pins
# colorama/colorlog itself, and thop, texttable and tensorboard import as resolved.
# torch is repeated so that the resolver keeps the CPU build in place.
"$PY" -m pip install --quiet "torch==2.13.0" "recbole==1.2.1" \
  "numpy<2" "pandas<2.3" "scipy<1.12" "setuptools<81" >&2

"$PY" -c "import recbole, recbole.quick_start, torch; print('recbole', recbole.__version__, \
'torch', torch.__version__)" >&2
echo "$PY"
