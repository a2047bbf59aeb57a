#!/usr/bin/env bash
# The compose `trainer`: trains a run, then exports it as the next version of the served model.
#
# Idempotent and resumable, like scripts/quickstart.sh: a killed training resumes from its last
# finished epoch, a finished run is not trained again, and an exported run is not exported again
# (so a second `docker compose up` starts serving at once). A new RUN_NAME trains a new run and
# publishes it as the next version, which TF Serving picks up by itself.
#
# Settings (empty means "the preset's value"): TRAIN_PRESET (quick), TRAIN_DATASET,
# TRAIN_VARIANT, TRAIN_IMAGE_SIZE, TRAIN_EPOCHS, TRAIN_BATCH_SIZE, TRAIN_EXAMPLES,
# TRAIN_IMAGE_FOLDER, TRAIN_ARGS (more `tf-alexnet train` flags), RUN_NAME (default: the
# preset), RUNS_DIR (/runs), EXPORT_BASE_PATH (/models), EXPORT_MODEL_NAME (alexnet).
set -euo pipefail

preset="${TRAIN_PRESET:-quick}"
run_dir="${RUNS_DIR:-/runs}/${RUN_NAME:-$preset}"
base_path="${EXPORT_BASE_PATH:-/models}"
model_name="${EXPORT_MODEL_NAME:-alexnet}"

# Offline Fashion-MNIST: the original .gz files bind-mounted here (see docs/docker.md).
if [ -z "${TF_ALEXNET_MANUAL_DIR:-}" ] && [ -f /data/manual/train-images-idx3-ubyte.gz ]; then
  export TF_ALEXNET_MANUAL_DIR=/data/manual
fi

mkdir -p "$base_path/$model_name"
if [ ! -w "$base_path/$model_name" ]; then
  echo "train-and-export: error: cannot write to $base_path/$model_name (uid $(id -u))." >&2
  exit 2
fi

if [ -f "$run_dir/exported.txt" ]; then
  echo "train-and-export: $run_dir is already exported (its record below); set RUN_NAME to" \
    "train a new version."
  cat "$run_dir/exported.txt"
  exit 0
fi

data_flags=()
[ -n "${TRAIN_DATASET:-}" ] && data_flags+=(--dataset "$TRAIN_DATASET")
[ -n "${TRAIN_IMAGE_FOLDER:-}" ] && data_flags+=(--image-folder "$TRAIN_IMAGE_FOLDER")
train_flags=(--preset "$preset" --run-dir "$run_dir")
[ -n "${TRAIN_VARIANT:-}" ] && train_flags+=(--variant "$TRAIN_VARIANT")
[ -n "${TRAIN_IMAGE_SIZE:-}" ] && train_flags+=(--image-size "$TRAIN_IMAGE_SIZE")
[ -n "${TRAIN_EPOCHS:-}" ] && train_flags+=(--epochs "$TRAIN_EPOCHS")
[ -n "${TRAIN_BATCH_SIZE:-}" ] && train_flags+=(--batch-size "$TRAIN_BATCH_SIZE")
[ -n "${TRAIN_EXAMPLES:-}" ] && train_flags+=(--train-examples "$TRAIN_EXAMPLES")
# Word splitting is wanted here: TRAIN_ARGS holds extra flags.
# shellcheck disable=SC2206
extra_flags=(${TRAIN_ARGS:-})

# `docker stop` sends SIGTERM to this script (the init passes it to its child, this bash); bash
# would die and leave the command it waits for to be killed. Pass the signal on instead: the
# command stops cleanly ("tf-alexnet: terminated", status 143) and a rerun resumes. A stop that
# comes before the command's PID is known, or between two commands, is kept (`stopped`) and
# passed on once it is, or ends the script before the next command: none is lost, and none is
# sent to a command just forked, which may lose it before it has started.
child=""
stopped=""
trap 'stopped=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true' TERM INT
forward_stop() {
  [ -z "$stopped" ] || return 143
  "$@" &
  child=$!
  [ -z "$stopped" ] || kill -TERM "$child" 2>/dev/null || true
  local status=0
  wait "$child" || status=$?
  if kill -0 "$child" 2>/dev/null; then  # the signal cut the wait short: wait for the stop
    status=0
    wait "$child" || status=$?
  fi
  child=""
  return "$status"
}

if [ ! -f "$run_dir/metrics.json" ]; then
  status=0
  forward_stop tf-alexnet train "${train_flags[@]}" "${data_flags[@]}" "${extra_flags[@]}" \
    || status=$?
  if [ "$status" -eq 2 ]; then  # a setting refused: its line names the flag, not the variable
    echo "train-and-export: under Compose, a flag named above is set by its variable: --preset" \
      "TRAIN_PRESET, --dataset TRAIN_DATASET, --variant TRAIN_VARIANT, --image-size" \
      "TRAIN_IMAGE_SIZE, --epochs TRAIN_EPOCHS, --batch-size TRAIN_BATCH_SIZE, --train-examples" \
      "TRAIN_EXAMPLES, --image-folder TRAIN_IMAGE_FOLDER; any other in TRAIN_ARGS" \
      "(docs/docker.md, Training settings)." >&2
  fi
  [ "$status" -eq 0 ] || exit "$status"
fi
# A stop between the export's publish and its record below left the run published but not
# recorded: record the version that names this run as its source rather than publish it again.
for metadata in "$base_path/$model_name"/*/assets.extra/metadata.json; do
  if [ -f "$metadata" ] && grep -qF "\"source\": \"$run_dir/" "$metadata"; then
    version_dir="${metadata%/assets.extra/metadata.json}"
    echo "Exported version ${version_dir##*/} to $version_dir (found published: the export" \
      "that published it was stopped before it was recorded)" > "$run_dir/exported.tmp"
    mv "$run_dir/exported.tmp" "$run_dir/exported.txt"
    cat "$run_dir/exported.txt"
    exit 0
  fi
done
forward_stop tf-alexnet export "$run_dir" --model-base-path "$base_path" --model-name "$model_name" \
  > "$run_dir/exported.tmp"
mv "$run_dir/exported.tmp" "$run_dir/exported.txt"
cat "$run_dir/exported.txt"
