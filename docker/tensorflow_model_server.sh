#!/usr/bin/env bash
# The stand-in image's `tensorflow_model_server`: the official server's flags, the project's
# TF Serving stand-in behind them (serving/tfserving_standin/__main__.py says what it honours).
set -euo pipefail
exec python -m tfserving_standin "$@"
