"""Input-pipeline headroom: the augmented tf.data pipeline alone, against the model's appetite.

For each preset, measures in fresh processes:
- the training pipeline (real Fashion-MNIST, the preset's resize and augmentation, batched)
  with every core and pinned to one core (the per-core rate sizes the CPUs a GPU needs);
- the model's training rate on synthetic batches of the same shape, on the same machine.
Headroom = pipeline rate / model rate; below 1 the pipeline would be the bottleneck.

    python -m benchmarks.pipeline            # both presets (about 10 min on 2 cores)
    python -m benchmarks.pipeline --smoke    # seconds: tiny slice, tiny model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any

from benchmarks import common

# The GPU recipe (224 px, resize-crop, flip, brightness/contrast) and the CPU recipe.
PRESETS = ("gpu", "cpu")


def pipeline_worker(args: argparse.Namespace) -> dict[str, Any]:
    if args.cores:
        os.sched_setaffinity(0, set(range(args.cores)))  # before TensorFlow starts its threads
    from tf_alexnet import config as config_lib
    from tf_alexnet.data import make_datasets
    from tf_alexnet.strategy import choose_precision

    overrides: dict[str, Any] = {"manual_dir": str(common.MANUAL_DIR)}
    if args.train_examples:
        overrides["train_examples"] = args.train_examples
    config = config_lib.resolve(args.preset, overrides=overrides)
    pipeline = dataclasses.replace(
        config.pipeline_spec(config.batch_size),
        autotune=args.autotune,
        deterministic=not args.free_order,
    )
    datasets = make_datasets(config.data_spec(), pipeline)
    epochs = []
    for _ in range(args.epochs):
        start, images = time.perf_counter(), 0
        for images_batch, _labels in datasets.train:
            images += int(images_batch.shape[0])
        epochs.append(images / (time.perf_counter() - start))
    return {
        "first_epoch_images_per_second": epochs[0],  # fills the cache
        "steady_images_per_second": common.median(epochs[1:]) if len(epochs) > 1 else epochs[0],
        "image_size": config.image_size,
        "batch_size": config.batch_size,
        "augmentation": {k: v for k, v in vars(config.augment).items() if v},
        "variant": config.variant,
        "width": config.width,
        # how the preset trains here: its dtype policy on this machine, its steps per call
        "policy": choose_precision(config.mixed_precision).policy,
        "steps_per_execution": config.steps_per_execution,
    }


def model_rate(info: dict[str, Any], smoke: bool) -> float:
    """Images/s the preset's model trains at, as the preset trains it, on synthetic batches."""
    steps = ["--steps=2", "--warmup=1"] if smoke else ["--steps=6", "--warmup=2"]
    precision = {"float32": "fp32", "mixed_bfloat16": "bf16"}[info["policy"]]
    result = common.run_json(
        [
            "-m",
            "benchmarks.train_throughput",
            "--worker=tf",
            f"--variant={info['variant']}",
            f"--width={info['width']}",
            f"--image-size={info['image_size']}",
            f"--batch={info['batch_size']}",
            f"--precision={precision}",
            f"--steps-per-execution={info['steps_per_execution']}",
            *steps,
        ]
    )
    return info["batch_size"] / common.median(result["step_seconds"])


def run(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    rows = []
    for preset in args.presets:
        measured: dict[str, Any] = {}
        rates: dict[str, list[float]] = {}
        for _round in range(args.rounds):  # each round measures every setting in turn
            for label, pinned, *options in (
                ("all_cores", 0),
                ("one_core", 1),
                ("all_cores_autotune", 0, "--autotune"),
                ("all_cores_free_order", 0, "--free-order"),
            ):
                flags = [f"--preset={preset}", f"--cores={pinned}", f"--epochs={args.epochs}"]
                flags += options
                if args.train_examples:
                    flags.append(f"--train-examples={args.train_examples}")
                measured[label] = common.run_json(["-m", __spec__.name, "--worker", *flags])
                rate = measured[label]["steady_images_per_second"]
                rates.setdefault(label, []).append(rate)
                print(f"  {preset}: pipeline on {label}: {rate:,.0f} img/s", flush=True)
        median = {label: common.median(values) for label, values in rates.items()}
        info = measured["all_cores"]  # the last round's settings, the same in every round
        consumed = model_rate(info, args.smoke)
        print(f"  {preset}: model trains at {consumed:,.1f} img/s", flush=True)
        pipeline_rate = median["all_cores"]
        rows.append(
            {
                "preset": preset,
                "variant": info["variant"],
                "width": info["width"],
                "image_size": info["image_size"],
                "batch_size": info["batch_size"],
                "policy": info["policy"],
                "augmentation": info["augmentation"],
                "pipeline_images_per_second": pipeline_rate,
                "pipeline_first_epoch_images_per_second": info["first_epoch_images_per_second"],
                "pipeline_one_core_images_per_second": median["one_core"],
                # tf.data's model-based autotuning, which the pipeline turns off (pipeline.py)
                "pipeline_autotune_images_per_second": median["all_cores_autotune"],
                # parallel maps free to hand over what finishes first (the seed no longer
                # fixes the order; `deterministic: false`)
                "pipeline_free_order_images_per_second": median["all_cores_free_order"],
                "rounds": rates,
                "model_images_per_second": consumed,
                "headroom": pipeline_rate / consumed,
                "cores_for_3000_images_per_second": 3000 / median["one_core"],
            }
        )
    result = {"settings": vars(args), "cores": cores, "rows": rows}
    common.write_results(args.name, result, markdown(rows, cores, args.rounds), args.out)


def markdown(rows: list[dict[str, Any]], cores: int, rounds: int) -> str:
    table = common.markdown_table(
        [
            "preset",
            "input",
            "augmentation",
            f"pipeline img/s ({cores} cores)",
            "pipeline img/s (1 core)",
            f"pipeline img/s, tf.data autotuning ({cores} cores)",
            f"pipeline img/s, free order ({cores} cores)",
            "model trains img/s",
            "headroom",
            "cores to feed 3,000 img/s",
        ],
        [
            [
                r["preset"],
                f"{common.model_label(r)}, batch {r['batch_size']}, {r.get('policy', 'float32')}",
                ", ".join(f"{k}={v}" for k, v in r["augmentation"].items()) or "none",
                r["pipeline_images_per_second"],
                r["pipeline_one_core_images_per_second"],
                r.get("pipeline_autotune_images_per_second", "not measured"),
                r.get("pipeline_free_order_images_per_second", "not measured"),
                r["model_images_per_second"],
                r["headroom"],
                r["cores_for_3000_images_per_second"],
            ]
            for r in rows
        ],
    )
    return (
        "# Input pipeline headroom\n\n"
        "Real Fashion-MNIST through the preset's training pipeline (cache at 28 px, shuffle, "
        "per-image resize and augmentation, batch), steady state (second and later epochs), "
        "against the model's training rate on synthetic batches on the same machine, in the "
        "preset's dtype policy there and with its steps per execution. "
        "Headroom > 1 means the model, not the pipeline, sets the pace; the one-core rate "
        "tells how many cores keep a GPU fed (published AlexNet rates: ~3,000 img/s per GPU). "
        "The pipeline runs without tf.data's model-based autotuning (each epoch's iterator "
        "waited out its sleep when freed); the autotuning column measures it with it, each "
        "pass's iterator freed inside the timed pass, as Keras frees it between epochs. "
        "The pipeline keeps the order the seed draws; the free-order column lets its parallel "
        "maps hand over what finishes first (`deterministic: false`). "
        f"Pipeline figures: the median of {rounds} round(s), every setting measured in turn "
        "in each round.\n\n"
        f"{table}\n"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="gpu", help=argparse.SUPPRESS)
    parser.add_argument("--cores", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--autotune", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--free-order", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument(
        "--epochs", type=common.positive_int, default=2, help="passes; the first fills the cache"
    )
    parser.add_argument("--train-examples", type=common.positive_int, default=None)
    parser.add_argument(
        "--rounds",
        type=common.positive_int,
        default=1,
        help="rounds of every setting in turn; medians reported",
    )
    parser.add_argument("--smoke", action="store_true", help="seconds-long check of the harness")
    common.add_out_option(parser)
    parser.add_argument("--name", default="pipeline")
    args = parser.parse_args(argv)
    if args.smoke:
        args.presets, args.train_examples = ["cpu"], 1024
    common.prepare_out(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        print(json.dumps(pipeline_worker(args)))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run(args)


if __name__ == "__main__":
    common.run_main(main)
