"""Epoch times under MirroredStrategy, with and without autotuning in the per-device datasets.

`tf_alexnet.train` runs `fit` inside `pipeline.device_datasets_without_autotune()`: the datasets
TensorFlow builds to feed each replica (a `MultiDeviceIterator`'s) then run without tf.data's
model-based autotuning, as the project's own pipelines do. With autotuning on, freeing each
epoch's iterators waited for their tuning threads, whose sleep doubles while an iterator lives.
Each configuration trains the `quick` preset's `mini` under `--strategy mirrored` over 2
logical CPUs (`--cpu-devices 2`) on real Fashion-MNIST in a fresh process, configurations
alternating over rounds; an epoch's time is the wall time from its start to its end, its
validation included.

    python -m benchmarks.mirrored_epochs            # about 8 min on 2 cores
    python -m benchmarks.mirrored_epochs --smoke    # under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import pathlib
import tempfile
import time
from typing import Any

from benchmarks import common
from tf_alexnet import startup

SETTINGS = ("autotune-off", "autotune-on")
"""`autotune-off`: the per-device datasets as tf_alexnet trains; `autotune-on`: TensorFlow's."""


def measure(setting: str, epochs: int, examples: int) -> dict[str, Any]:
    """In this (fresh) process: one mirrored `quick` run; each epoch's wall seconds."""
    startup.prefer_cpu_settings()  # TensorFlow's kernels and pool as `tf-alexnet train` has them
    import keras

    from tf_alexnet import config as config_lib
    from tf_alexnet import train as train_module

    if setting == "autotune-on":  # TensorFlow's per-device datasets, as they come
        train_module.device_datasets_without_autotune = contextlib.nullcontext  # type: ignore[assignment]
    overrides: dict[str, Any] = {
        "strategy": "mirrored",
        "cpu_devices": 2,
        "epochs": epochs,
        "train_examples": examples,
        "manual_dir": str(common.MANUAL_DIR),
    }
    config = config_lib.resolve("quick", overrides=overrides)
    marks: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: marks.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: marks.append(time.perf_counter()),
    )
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        metrics = train_module.train(config, pathlib.Path(run_dir) / "run", callbacks=[timer])
        total = time.perf_counter() - start
    # An epoch: from its start to the next one's (its end, then freeing its iterators).
    starts = marks[0::2]
    epoch_seconds = [later - earlier for earlier, later in itertools.pairwise(starts)]
    epoch_seconds.append(marks[-1] - starts[-1])
    return {
        "epoch_seconds": epoch_seconds,
        "train_seconds": total,
        "val_accuracy": metrics.get("best_val_accuracy"),
        "replicas": metrics["replicas"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=common.positive_int, default=3)
    parser.add_argument("--epochs", type=common.positive_int, default=8)
    parser.add_argument(
        "--examples", type=common.positive_int, default=16384, help="training examples"
    )
    parser.add_argument("--smoke", action="store_true", help="one round of 2 short epochs")
    common.add_out_option(parser)
    parser.add_argument("--child", nargs=3, metavar=("SETTING", "EPOCHS", "EXAMPLES"))
    args = parser.parse_args(argv)
    common.prepare_out(parser, args)
    if args.child:
        setting, epochs, examples = args.child
        print(json.dumps(measure(setting, int(epochs), int(examples))))
        return
    rounds, epochs, examples = (
        (1, 2, 1024) if args.smoke else (args.rounds, args.epochs, args.examples)
    )
    runs: dict[str, list[dict[str, Any]]] = {setting: [] for setting in SETTINGS}
    for round_index in range(rounds):
        for setting in SETTINGS if round_index % 2 == 0 else SETTINGS[::-1]:
            child = ["--child", setting, str(epochs), str(examples)]
            result = common.run_json(["-m", "benchmarks.mirrored_epochs", *child])
            runs[setting].append(result)
            epochs_text = ", ".join(f"{s:.1f}" for s in result["epoch_seconds"])
            print(f"{setting}: epochs {epochs_text} s", flush=True)
    # Epoch 1 traces the step functions: the later epochs show the waits.
    later = {s: [sum(r["epoch_seconds"][1:]) for r in runs[s]] for s in SETTINGS}
    summary, rows = {}, []
    for setting in SETTINGS:
        per_round = [
            base / ours for ours, base in zip(later[setting], later["autotune-on"], strict=True)
        ]
        found = summary[setting] = {
            "later_epochs_seconds_median": common.median(later[setting]),
            "last_epoch_seconds_median": common.median(
                [r["epoch_seconds"][-1] for r in runs[setting]]
            ),
            "train_seconds_median": common.median([r["train_seconds"] for r in runs[setting]]),
            "speedup_over_autotune_on_median": common.median(per_round),
        }
        median_epochs = [
            common.median([r["epoch_seconds"][i] for r in runs[setting]]) for i in range(epochs)
        ]
        rows.append(
            [
                setting,
                ", ".join(f"{s:.1f}" for s in median_epochs),
                found["later_epochs_seconds_median"],
                f"{found['speedup_over_autotune_on_median']:.2f}x",
                found["train_seconds_median"],
            ]
        )
    markdown = (
        "# Epochs under MirroredStrategy: per-device datasets with and without autotuning\n\n"
        f"The `quick` preset under `--strategy mirrored --cpu-devices 2`, {examples:,} training "
        f"images, {epochs} epochs, in a fresh process per run, settings alternating over "
        f"{rounds} round(s). Epoch seconds: wall time from an epoch's start to the next one's "
        "(validation and the freeing of its iterators included), median per epoch over the "
        "rounds. Speed-up: each round's epochs 2 to the last with autotuning on, over the same "
        "without it.\n\n"
        + common.markdown_table(
            ["per-device datasets", "epoch s (median)", "epochs 2+ s", "speed-up", "train() s"],
            rows,
        )
        + "\n"
    )
    name = common.result_name("mirrored_epochs", args.smoke)
    common.write_results(
        name,
        {
            "epochs": epochs,
            "examples": examples,
            "rounds": rounds,
            "summary": summary,
            "runs": runs,
        },
        markdown,
        args.out,
    )


if __name__ == "__main__":
    common.run_main(main)
