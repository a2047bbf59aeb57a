#!/usr/bin/env bash
# The whole main job in one command, on the embedded default (Fashion-MNIST, on the CPU):
#   1. set up .venv with the package and its `serve` extra (FastAPI, uvicorn);
#   2. train the `quick` preset: the `mini` variant (the small CPU AlexNet) at 28 px, 2 epochs;
#   3. print its test-set report, and export it as a SavedModel under models/alexnet/<version>/;
#   4. serve it with the facade (`tf-alexnet serve`, local backend) on 127.0.0.1:$PORT, classify
#      examples/images/shirt.png over HTTP, and print the curl line that sends another image.
# Then it keeps serving in the foreground until Ctrl-C (QUICKSTART_SERVE=once stops after the
# first prediction instead, for scripts and CI).
#
# Running it again is safe and quick: the install is skipped while pyproject.toml is unchanged,
# a killed training resumes, a finished one is not retrained, evaluated or exported again.
#
# Settings (environment): PYTHON (python3), VENV (.venv), QUICKSTART_INSTALL (1; 0 uses the
# environment in $VENV as it is), RUN_DIR (runs/quick), MODEL_BASE_PATH (models), PORT (8000),
# QUICKSTART_SERVE (forever | once), QUICKSTART_TRAIN_FLAGS (extra `tf-alexnet train` flags).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
RUN_DIR="${RUN_DIR:-runs/quick}"
MODEL_BASE_PATH="${MODEL_BASE_PATH:-models}"
PORT="${PORT:-8000}"
SERVE="${QUICKSTART_SERVE:-forever}"
IMAGE=examples/images/shirt.png
CLI="$VENV/bin/tf-alexnet"

step() { printf '\n== %s\n' "$*"; }

if [ "${QUICKSTART_INSTALL:-1}" = 1 ]; then
  step "1/4 Setting up $VENV (the package with its serve extra)"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  stamp="$VENV/.tf-alexnet-quickstart"
  wanted="$(cksum < pyproject.toml)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[serve]'
    echo "$wanted" > "$stamp"
  else
    echo "Already installed (pyproject.toml unchanged)."
  fi
fi

# Offline machines: build Fashion-MNIST from its original files when they are beside the repo.
if [ -z "${TF_ALEXNET_MANUAL_DIR:-}" ] && [ -d ../shared/data/fashion-mnist ]; then
  export TF_ALEXNET_MANUAL_DIR="$PWD/../shared/data/fashion-mnist"
fi

if [ -n "${QUICKSTART_TRAIN_FLAGS:-}" ]; then  # they may change the epochs, the variant...
  step "2/4 Training the quick preset with $QUICKSTART_TRAIN_FLAGS into $RUN_DIR"
else
  step "2/4 Training the quick preset (mini AlexNet, 28 px, 2 epochs) into $RUN_DIR"
fi
if [ -f "$RUN_DIR/metrics.json" ]; then
  echo "Already trained (delete $RUN_DIR to train again)."
else
  # shellcheck disable=SC2086  # extra flags, split on purpose
  "$CLI" train --preset quick --run-dir "$RUN_DIR" ${QUICKSTART_TRAIN_FLAGS:-}
fi

step "3/4 Test-set report and export to $MODEL_BASE_PATH/alexnet/"
if [ ! -f "$RUN_DIR/evaluation.txt" ]; then
  "$CLI" evaluate "$RUN_DIR" > "$RUN_DIR/evaluation.tmp"
  mv "$RUN_DIR/evaluation.tmp" "$RUN_DIR/evaluation.txt"
fi
cat "$RUN_DIR/evaluation.txt"
if [ ! -f "$RUN_DIR/exported.txt" ]; then
  "$CLI" export "$RUN_DIR" --model-base-path "$MODEL_BASE_PATH" --model-name alexnet > "$RUN_DIR/exported.tmp"
  mv "$RUN_DIR/exported.tmp" "$RUN_DIR/exported.txt"
fi
cat "$RUN_DIR/exported.txt"

step "4/4 Serving it on http://127.0.0.1:$PORT (tf-alexnet serve, local backend)"
# Another server already there would answer the readiness check below before ours starts (or
# fails to): the example image was classified by it, and the quickstart said "Done." with
# its answer. So the port must be free first.
"$VENV/bin/python" - "$PORT" <<'PY'
import socket
import sys

port = int(sys.argv[1])
with socket.socket() as probe:
    probe.settimeout(2)
    if probe.connect_ex(("127.0.0.1", port)) == 0:
        sys.exit(
            f"quickstart: port {port} is already in use (something answers on "
            f"127.0.0.1:{port}): stop it, or set PORT=... to another port"
        )
PY
"$CLI" serve --model-base-path "$MODEL_BASE_PATH" --host 127.0.0.1 --port "$PORT" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
"$VENV/bin/python" - "$PORT" "$IMAGE" "$server" <<'PY'
import json
import os
import sys
import time

import httpx

port, image, server = sys.argv[1], sys.argv[2], int(sys.argv[3])
url = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 180
while True:
    try:
        if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
            break
    except httpx.TransportError:
        pass
    try:
        os.kill(server, 0)
    except ProcessLookupError:
        sys.exit(f"quickstart: the server stopped (is port {port} already in use? set PORT=...)")
    if time.monotonic() > deadline:
        sys.exit("quickstart: the server was not ready after 180 s")
    time.sleep(0.5)
with open(image, "rb") as file:
    answer = httpx.post(
        f"{url}/predict", params={"top_k": 3}, files={"file": (image, file, "image/png")}
    )
answer.raise_for_status()
body = answer.json()
result = body["predictions"][0]
print(f"\n{image} (a Shirt from the Fashion-MNIST test set) -> {result['class_name']}")
print(json.dumps(body, indent=2))
print(
    "\nSend another image (examples/images/ has one per class):\n"
    f"  curl -F file=@examples/images/sneaker.png 'http://127.0.0.1:{port}/predict?top_k=3'\n"
    f"Or open http://127.0.0.1:{port}/ in a browser and drop an image on the page."
)
PY
if [ "$SERVE" = once ]; then
  echo "Stopping the server (QUICKSTART_SERVE=once); it says \"terminated\" as it stops."
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  echo "Done."
  exit 0
fi
echo "Serving until Ctrl-C."
trap 'echo; echo "Stopped serving."; exit 0' INT TERM
wait "$server"
