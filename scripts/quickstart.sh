#!/usr/bin/env bash
# Sets up .venv, trains the mini AlexNet on real Fashion-MNIST for two epochs on the CPU
# (about 5 minutes on 2 cores), prints its test-set report and exports it as a SavedModel
# for TF Serving under models/alexnet/<version>/.
# Runs again safely: a killed training resumes, a finished one is only re-evaluated,
# and a run already exported is not exported again.
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
if [ ! -f "$RUN_DIR/exported.txt" ]; then
  .venv/bin/tf-alexnet export "$RUN_DIR" --base-path models --name alexnet > "$RUN_DIR/exported.tmp"
  mv "$RUN_DIR/exported.tmp" "$RUN_DIR/exported.txt"
fi
cat "$RUN_DIR/exported.txt"
