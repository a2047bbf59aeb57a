"""Where a training step's time goes: the op table of each framework, side by side.

TensorFlow runs independent ops at once on its inter-op threads (a step's op times add up to
more than its wall time); PyTorch runs them one after another from the Python thread, each
parallel inside. Compare shares, and each framework's op time with its own step time.

TensorFlow: `tf.profiler.experimental` traces a few `train_on_batch` steps; the host plane of
its XSpace (the trace TensorBoard's profiler reads) gives every op run on the CPU threads,
summed here by op type. PyTorch: `torch.profiler` over the same number of steps, summed by
operator (self CPU time). Same d2l network, synthetic batch, precision as asked. Times are
summed over all threads, so on 2 cores they can exceed the wall time.

    python -m benchmarks.profile_ops --precision bf16     # about 3 min on 2 cores
    python -m benchmarks.profile_ops --smoke
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import tempfile
import time
from collections.abc import Callable
from typing import Any

from benchmarks import common
from tf_alexnet import startup

TOP = 12
ENCLOSING_EVENTS = frozenset({"Process"})
"""TF executor events that enclose the kernels they run (counting them would count twice)."""


def tf_worker(args: argparse.Namespace) -> dict[str, Any]:
    startup.prefer_cpu_settings()  # TensorFlow's kernels and pool as `tf-alexnet train` has them
    import keras
    import numpy as np

    from tf_alexnet import AlexNet

    if args.precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    shape = (args.image_size, args.image_size, 1)
    model = AlexNet(input_shape=shape, classes=10, variant="d2l")
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    images = rng.random((args.batch, *shape), dtype=np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.batch)]
    for _ in range(2):
        model.train_on_batch(images, labels)
    totals, wall = traced_op_seconds(lambda: model.train_on_batch(images, labels), args.steps)
    return table(totals, wall, args.steps)


def traced_op_seconds(
    step: Callable[[], Any], steps: int
) -> tuple[collections.Counter[str], float]:
    """Runs `step` `steps` times under TensorFlow's profiler: seconds by op type, summed over
    the executor threads (the host plane of the trace's XSpace), and the wall time."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        (path,) = pathlib.Path(logdir).rglob("*.xplane.pb")
        space = xplane_pb2.XSpace.FromString(path.read_bytes())
    totals: collections.Counter[str] = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            # Executor threads run the kernels; the Python thread's events are whole steps.
            if not re.search(r"tf_|Eigen|oneDNN|inter|intra|pool", line.name, re.I):
                continue
            for event in line.events:
                kind = op_type(plane.event_metadata[event.metadata_id].name)
                if kind not in ENCLOSING_EVENTS:
                    totals[kind] += event.duration_ps / 1e12
    return totals, wall


def op_type(name: str) -> str:
    """`model/conv1/Conv2D:_MklNativeConv2D` or `Conv2DBackpropFilter` -> the op type."""
    return name.split(":")[-1].split("/")[-1] if ":" in name else name.split("/")[-1]


def torch_worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks.torch_alexnet import synthetic_training_step

    step = synthetic_training_step(args.batch, args.image_size, args.precision)

    for _ in range(2):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as profile:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall = time.perf_counter() - start
    totals: collections.Counter[str] = collections.Counter()
    for event in profile.key_averages():
        totals[event.key] += event.self_cpu_time_total / 1e6
    return table(totals, wall, args.steps)


def table(totals: collections.Counter[str], wall: float, steps: int) -> dict[str, Any]:
    busy = sum(totals.values())
    return {
        "wall_seconds_per_step": wall / steps,
        "op_seconds_per_step": busy / steps,
        "top_ops": [
            {"op": name, "seconds_per_step": seconds / steps, "share": seconds / busy}
            for name, seconds in totals.most_common(TOP)
        ],
    }


def markdown(result: dict[str, Any]) -> str:
    settings = result["settings"]
    parts = [
        f"# Op tables: one d2l training step, batch {settings['batch']}, "
        f"{settings['image_size']} px, {settings['precision']}",
        "",
        "Seconds per step summed over the CPU threads (2 cores: up to 2x the wall time), "
        f"mean of {settings['steps']} profiled steps after 2 warm-up steps.",
        "",
    ]
    for framework, found in result["frameworks"].items():
        parts += [
            f"## {framework}: {found['wall_seconds_per_step']:.2f} s per step (wall), "
            f"{found['op_seconds_per_step']:.2f} s of ops",
            "",
            common.markdown_table(
                ["op", "s per step", "share"],
                [
                    [row["op"], row["seconds_per_step"], f"{row['share']:.0%}"]
                    for row in found["top_ops"]
                ],
            ),
            "",
        ]
    return "\n".join(parts)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("tf", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--batch", type=common.positive_int, default=128)
    parser.add_argument("--steps", type=common.positive_int, default=3)
    parser.add_argument("--image-size", type=common.positive_int, default=224)
    parser.add_argument("--smoke", action="store_true", help="seconds-long check of the harness")
    common.add_out_option(parser)
    parser.add_argument("--name")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.steps, args.image_size = 4, 1, 67
    common.prepare_out(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        worker = tf_worker if args.worker == "tf" else torch_worker
        print(json.dumps(worker(args)))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    flags = [
        f"--precision={args.precision}",
        f"--batch={args.batch}",
        f"--steps={args.steps}",
        f"--image-size={args.image_size}",
    ]
    frameworks = {}
    for framework, label in (("tf", "TensorFlow"), ("torch", "PyTorch")):
        frameworks[label] = common.run_json(["-m", __spec__.name, f"--worker={framework}", *flags])
        print(f"{label}: {frameworks[label]['wall_seconds_per_step']:.2f} s/step", flush=True)
    settings = {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()}
    result = {"settings": settings, "frameworks": frameworks}
    default = f"profile_ops_{args.precision}_{common.cpu_kind()}"
    name = args.name or ("profile_ops" if args.smoke else default)
    common.write_results(name, result, markdown(result), args.out)


if __name__ == "__main__":
    common.run_main(main)
