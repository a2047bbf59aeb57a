#!/usr/bin/env bash
# Sets up .venv, trains the mini AlexNet on real Fashion-MNIST for two epochs on the CPU
# (about 5 minutes on 2 cores), then prints its test-set report.
# Runs again safely: a killed training resumes, a finished one is only re-evaluated.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
RUN_DIR="${RUN_DIR:-runs/quick}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
# Offline machines: build Fashion-MNIST from its original files when they are beside the repo.
if [ -z "${TF_ALEXNET_MANUAL_DIR:-}" ] && [ -d ../shared/data/fashion-mnist ]; then
  export TF_ALEXNET_MANUAL_DIR="$PWD/../shared/data/fashion-mnist"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
if [ ! -f "$RUN_DIR/metrics.json" ]; then
  .venv/bin/tf-alexnet train --preset quick --run-dir "$RUN_DIR"
fi
.venv/bin/tf-alexnet evaluate "$RUN_DIR"
