#!/usr/bin/env bash
# Smoke test of the whole Docker Compose stack, on a machine with a Docker engine:
#   1. `docker compose up -d --build` with a tiny training run (1 epoch on 2,000 images),
#   2. waits until the facade is ready, posts a real Fashion-MNIST PNG to /predict, checks
#      the JSON answer and TF Serving's Prometheus metrics,
#   3. retrains, which publishes version 2, while polling /predict: every request must succeed,
#      and the facade must end up on version 2,
#   4. tears everything down (`docker compose down -v`), also on failure.
# Uses its own compose project (tf-alexnet-smoke) and ports 8000, 8500 and 8501.
# Offline: FASHION_MNIST_DIR=/folder/with/the/four/.gz/files bash scripts/compose_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

API="http://localhost:8000"
TFSERVING="http://localhost:8501"
MODEL_NAME="alexnet"
TIMEOUT_S="${SMOKE_TIMEOUT_S:-1200}"
read -r -a COMPOSE <<< "${COMPOSE:-docker compose}"
COMPOSE+=(-p tf-alexnet-smoke -f docker-compose.yml)
export TRAIN_EPOCHS="${TRAIN_EPOCHS:-1}" TRAIN_EXAMPLES="${TRAIN_EXAMPLES:-2000}" RUN_NAME=smoke-1
work="$(mktemp -d)"

log() { echo "compose_smoke: $*" >&2; }
fail() {
  log "FAILED: $*"
  "${COMPOSE[@]}" ps >&2 || true
  "${COMPOSE[@]}" logs --tail 80 >&2 || true
  exit 1
}
cleanup() {
  if [ -n "${poller:-}" ]; then kill "$poller" 2>/dev/null || true; fi
  "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# wait_for DESCRIPTION COMMAND...: retries COMMAND every 3 s until it succeeds or TIMEOUT_S.
wait_for() {
  local what="$1" deadline=$((SECONDS + TIMEOUT_S))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${TIMEOUT_S}s waiting for $what"
    sleep 3
  done
  log "$what: ok after ${SECONDS}s"
}
served_version() {  # the version in the facade's /readyz answer
  curl -fsS "$API/readyz" | python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])'
}
serves_version_2() { [ "$(served_version)" = 2 ]; }
trainer_run() {  # docker compose run of the trainer, with the offline data folder if given
  local mount=()
  [ -n "${FASHION_MNIST_DIR:-}" ] && mount=(-v "$FASHION_MNIST_DIR:/data/manual:ro")
  # ${a[@]+...}: an empty array under `set -u` in macOS's bash 3.2
  "${COMPOSE[@]}" run --rm -T ${mount[@]+"${mount[@]}"} "$@"
}

log "building the images"
"${COMPOSE[@]}" build
log "training and exporting version 1 (RUN_NAME=$RUN_NAME)"
trainer_run trainer || fail "the trainer failed"
log "starting TF Serving and the facade"
"${COMPOSE[@]}" up -d || fail "docker compose up failed"
wait_for "the facade's /readyz" curl -fsS "$API/readyz"

# A real Fashion-MNIST test image, taken from the dataset the trainer prepared.
trainer_run --entrypoint python trainer -c '
import sys
import tensorflow as tf
import tensorflow_datasets as tfds
image = next(iter(tfds.load("fashion_mnist", split="test", data_dir="/data/tfds")))["image"]
sys.stdout.buffer.write(tf.io.encode_png(image).numpy())
' > "$work/image.png" || fail "could not extract a test image"
[ "$(head -c 4 "$work/image.png" | tail -c 3)" = "PNG" ] || fail "the test image is not a PNG"

curl -fsS -F "file=@$work/image.png" "$API/predict?top_k=3" > "$work/answer.json" \
  || fail "POST /predict failed"
python3 - "$work/answer.json" "$MODEL_NAME" <<'PY' || fail "unexpected /predict answer"
import json, sys
answer = json.load(open(sys.argv[1]))
print("compose_smoke: /predict answered", json.dumps(answer)[:300], file=sys.stderr)
assert answer["model"]["name"] == sys.argv[2], answer["model"]
(prediction,) = answer["predictions"]
assert 0 <= prediction["class_id"] < 10 and prediction["class_name"], prediction
assert 0.0 <= prediction["score"] <= 1.0 and len(prediction["top_k"]) == 3, prediction
PY
curl -fsS "$TFSERVING/monitoring/prometheus/metrics" | grep -q ':tensorflow:serving:' \
  || fail "TF Serving's Prometheus metrics are missing"
[ "$(served_version)" = 1 ] || fail "the facade does not serve version 1"

log "retraining (RUN_NAME=smoke-2) while polling /predict"
: > "$work/poll.log"
(
  while :; do
    code="$(curl -s -o /dev/null -w '%{http_code}' -F "file=@$work/image.png" "$API/predict")"
    echo "$code" >> "$work/poll.log"
    sleep 0.2
  done
) &
poller=$!
RUN_NAME=smoke-2 trainer_run trainer || fail "the retraining failed"
wait_for "version 2 behind the facade" serves_version_2
sleep 5  # keep polling while TF Serving unloads version 1
kill "$poller"
poller=""
total="$(wc -l < "$work/poll.log")"
failed="$(grep -vc '^200$' "$work/poll.log" || true)"
log "$total requests during the version change, $failed failed"
[ "$total" -gt 0 ] || fail "no request was made during the version change"
[ "$failed" = 0 ] || fail "requests failed during the version change: $(sort "$work/poll.log" | uniq -c)"
log "PASSED"
