"""Training throughput: tf-alexnet's d2l AlexNet against the same network in PyTorch.

Each measurement runs in a fresh process (so settings read at import, like
TF_ENABLE_ONEDNN_OPTS, take effect), on synthetic batches already in memory (the model
alone, not the input pipeline), after warm-up steps. The frameworks alternate inside each
round, so a noisy neighbour slows both alike; the ratio is taken per round, against PyTorch
in the same precision:

- like for like: `tf` / `torch` in float32, `tf-bf16` (Keras `mixed_bfloat16`) /
  `torch-bf16` (`torch.autocast("cpu", torch.bfloat16)`);
- default for default: `tf-default` is what `tf-alexnet train` does with no flags
  (`--mixed-precision auto` picks by hardware), against PyTorch with no flags (float32).

Results are kept one file per kind of CPU (`train_throughput_<kind>`), and
`python -m benchmarks.summary` lists one row per kind met.

    python -m benchmarks.train_throughput                # full run (about 30 min on 2 cores)
    python -m benchmarks.train_throughput --smoke        # seconds: tiny images, one step
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time
from typing import Any

from benchmarks import common
from tf_alexnet import startup

# TensorFlow settings tried against the baseline (oneDNN on, one step per call, no XLA).
TF_VARIANTS: dict[str, dict[str, Any]] = {
    "tf": {},
    "tf-steps-per-execution-4": {"steps_per_execution": 4},
    "tf-xla": {"jit_compile": True},
    # Eigen's kernels on malloc, as TensorFlow alone runs them on AVX2-only CPUs
    "tf-onednn-off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPU_ALLOCATOR_USE_BFC": "false"}},
    # TensorFlow's own memory pool in place of malloc (what `train` runs with oneDNN off) or of
    # oneDNN's pool
    "tf-onednn-off-bfc": {
        "env": {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPU_ALLOCATOR_USE_BFC": "true"}
    },
    "tf-bfc": {"env": {"TF_CPU_ALLOCATOR_USE_BFC": "true"}},
    # one op at a time: independent ops (a convolution's two gradients) no longer share the cores
    "tf-inter-op-1": {"env": {"TF_NUM_INTEROP_THREADS": "1"}},
}


def tf_worker(args: argparse.Namespace) -> dict[str, Any]:
    startup.prefer_cpu_settings()  # TensorFlow's kernels and pool as `tf-alexnet train` has them
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_alexnet import AlexNet

    if args.precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    shape = (args.image_size, args.image_size, 1)
    model = AlexNet(input_shape=shape, classes=10, variant=args.variant, width=args.width)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=args.jit_compile,
        steps_per_execution=args.steps_per_execution,
    )
    rng = np.random.default_rng(0)
    images = rng.random((args.batch, *shape), dtype=np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.batch)]
    data = tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(2)

    spe = args.steps_per_execution
    model.fit(data, steps_per_epoch=spe * args.warmup, epochs=1, verbose=0)  # trace + warm up
    marks: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: marks.append(time.perf_counter())
    )
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=spe * args.steps, epochs=1, verbose=0, callbacks=[timer])
    intervals = np.diff([start, *marks]) / spe  # callbacks fire once per execution
    return {"step_seconds": intervals.tolist()}


def torch_worker(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from benchmarks.torch_alexnet import synthetic_training_step

    step = synthetic_training_step(args.batch, args.image_size, args.precision)

    for _ in range(args.warmup):
        step()
    marks = [time.perf_counter()]
    for _ in range(args.steps):
        step()
        marks.append(time.perf_counter())
    return {"step_seconds": np.diff(marks).tolist(), "threads": torch.get_num_threads()}


def nchw_probe() -> str:
    """Whether TensorFlow's CPU kernels train a channels-first convolution."""
    import tensorflow as tf

    try:
        x = tf.random.uniform((2, 1, 32, 32))
        kernel = tf.Variable(tf.random.uniform((3, 3, 1, 4)))
        with tf.GradientTape() as tape:
            y = tf.nn.conv2d(x, kernel, 1, "SAME", data_format="NCHW")
        tape.gradient(y, kernel)
        return "works"
    except Exception as err:  # the message is the finding
        return f"fails: {type(err).__name__}: {str(err).splitlines()[0][:160]}"


PRECISION_PAIRS = {"fp32": ("tf", "torch"), "bf16": ("tf-bf16", "torch-bf16")}
"""Per precision: the TensorFlow configuration and its PyTorch peer."""


def reference(name: str) -> str:
    """The PyTorch configuration a configuration is compared with (same precision)."""
    return "torch-bf16" if name.endswith("bf16") else "torch"


def default_precision() -> dict[str, str]:
    """What `--mixed-precision auto` (tf-alexnet's default) picks on this machine, and why."""
    from tf_alexnet.strategy import choose_precision

    chosen = choose_precision("auto")
    return {"policy": chosen.policy, "reason": chosen.reason}


def measure(name: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    settings = TF_VARIANTS.get(name, {})
    worker = ["--worker", "torch" if name.startswith("torch") else "tf"]
    flags = [
        f"--precision={'bf16' if name.endswith('bf16') else 'fp32'}",
        f"--batch={batch}",
        f"--image-size={args.image_size}",
        f"--warmup={args.warmup}",
        f"--steps={max(args.min_steps, args.images // batch)}",
        f"--steps-per-execution={settings.get('steps_per_execution', 1)}",
    ]
    if settings.get("jit_compile"):
        flags.append("--jit-compile")
    result = common.run_json(["-m", __spec__.name, *worker, *flags], env=settings.get("env"))
    steps = result["step_seconds"]
    rate = batch / common.median(steps)
    print(f"  {name:28s} batch {batch:4d}: {rate:8.2f} img/s", flush=True)
    return {"name": name, "batch": batch, "images_per_second": rate, "steps": len(steps)}


def run(args: argparse.Namespace) -> None:
    names = [name for precision in args.precisions for name in PRECISION_PAIRS[precision]]
    names += [v for v in args.variants if v not in names]
    default = default_precision()
    runs: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        for batch in args.batches:
            # Rotate the order each round so neither framework always goes first.
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                if name in TF_VARIANTS and name != "tf" and batch != args.batches[-1]:
                    continue  # the TF settings are compared at one batch size only
                runs.append({"round": round_index, **measure(name, batch, args)})
    summary = summarize(runs, args) + default_rows(runs, args, default["policy"])
    settings = {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()}
    result = {
        "settings": settings,
        "cpu_kind": common.cpu_kind(),
        "default_precision": default,
        "nchw_on_cpu": nchw_probe(),
        "runs": runs,
        "summary": summary,
    }
    name = args.name or f"train_throughput_{common.cpu_kind()}"
    common.write_results(name, result, markdown(result["summary"], result), args.out)
    plot(result["summary"], args.out / f"{name}.png")


def default_rows(
    runs: list[dict[str, Any]], args: argparse.Namespace, policy: str
) -> list[dict[str, Any]]:
    """Default for default: no flags on either side.

    PyTorch's default is float32; ours is what `auto` picked here (`policy`), measured under its
    precision's name and compared with `torch` (float32) round by round.
    """
    picked = "tf-bf16" if policy == "mixed_bfloat16" else "tf"
    as_default = [{**r, "name": "tf-default"} for r in runs if r["name"] == picked]
    torch = [r for r in runs if r["name"] == "torch"]
    rows = summarize(as_default + torch, args)
    return [{**row, "same_as": picked} for row in rows if row["name"] == "tf-default"]


def summarize(runs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for batch in args.batches:
        for name in dict.fromkeys(r["name"] for r in runs if r["batch"] == batch):
            mine = [r for r in runs if r["batch"] == batch and r["name"] == name]
            torch_by_round = {
                r["round"]: r["images_per_second"]
                for r in runs
                if r["batch"] == batch and r["name"] == reference(name)
            }
            ratios = [
                r["images_per_second"] / torch_by_round[r["round"]]
                for r in mine
                if r["round"] in torch_by_round
            ]
            rows.append(
                {
                    "name": name,
                    "batch": batch,
                    "median_images_per_second": common.median(
                        [r["images_per_second"] for r in mine]
                    ),
                    "runs": len(mine),
                    "median_ratio_to_torch": common.median(ratios) if ratios else None,
                }
            )
    return rows


def markdown(summary: list[dict[str, Any]], result: dict[str, Any]) -> str:
    table = common.markdown_table(
        [
            "configuration",
            "batch",
            "images/s (median)",
            "runs",
            "x PyTorch, same precision; tf-default: x PyTorch with no flags (median of rounds)",
        ],
        [
            [
                r["name"] + (f" (= {r['same_as']})" if r.get("same_as") else ""),
                r["batch"],
                r["median_images_per_second"],
                r["runs"],
                r["median_ratio_to_torch"],
            ]
            for r in summary
        ],
    )
    settings = result["settings"]
    return (
        "# Training throughput: tf-alexnet (d2l AlexNet) vs PyTorch\n\n"
        f"{settings['image_size']}x{settings['image_size']}x1 synthetic batches in memory, "
        "SGD lr 0.01, steady state after "
        f"{settings['warmup']} warm-up step(s); each configuration in a fresh process, "
        f"frameworks alternating within each of {settings['rounds']} round(s). "
        '`-bf16`: Keras `mixed_bfloat16` and `torch.autocast("cpu", torch.bfloat16)`; '
        "`tf-default`: tf-alexnet with no flags, which here means "
        f"{result['default_precision']['policy']} ({result['default_precision']['reason']}), "
        "against PyTorch with no flags (`torch`, float32).\n\n"
        f"{table}\n\n"
        f"Channels-first (NCHW) convolutions on TensorFlow's CPU kernels: "
        f"{result['nchw_on_cpu']}.\n"
    )


def plot(summary: list[dict[str, Any]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['name']}\nbatch {r['batch']}" for r in summary]
    values = [r["median_images_per_second"] for r in summary]
    colors = ["tab:orange" if r["name"].startswith("torch") else "tab:blue" for r in summary]
    fig, ax = plt.subplots(figsize=(max(6, len(labels) * 1.3), 3.5))
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_ylabel("training images / s (median)")
    ax.set_title("d2l AlexNet training throughput, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("tf", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--steps-per-execution", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--jit-compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="d2l", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument(
        "--precisions", nargs="+", choices=list(PRECISION_PAIRS), default=list(PRECISION_PAIRS)
    )
    parser.add_argument("--batches", type=common.positive_int, nargs="+", default=[128, 32])
    parser.add_argument("--rounds", type=common.positive_int, default=3)
    parser.add_argument(
        "--images", type=common.positive_int, default=512, help="images timed per run"
    )
    parser.add_argument("--min-steps", type=common.positive_int, default=4)
    parser.add_argument("--warmup", type=common.non_negative_int, default=2)
    parser.add_argument("--image-size", type=common.positive_int, default=224)
    parser.add_argument(
        "--variants",
        nargs="*",
        default=list(TF_VARIANTS),
        help="TF settings measured beside the plain runs (default: all; --variants alone: none)",
    )
    parser.add_argument("--smoke", action="store_true", help="seconds-long check of the harness")
    common.add_out_option(parser)
    parser.add_argument("--name", help="results file name (default: train_throughput_<cpu kind>)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(TF_VARIANTS) - {"torch"})
    if unknown:
        parser.error(f"unknown --variants {unknown}; choose from {sorted(TF_VARIANTS)}")
    if args.smoke:
        args.batches, args.rounds, args.images, args.min_steps = [4], 1, 4, 1
        args.warmup, args.image_size, args.variants = 1, 67, []
        args.name = args.name or "train_throughput"
    common.prepare_out(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        worker = tf_worker if args.worker == "tf" else torch_worker
        print(json.dumps(worker(args)))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run(args)


if __name__ == "__main__":
    common.run_main(main)
