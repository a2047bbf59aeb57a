"""What the fused batch norm buys the `cpu` preset: `mini` trained with each batch-norm layer.

`mini` normalizes after every convolution. Keras 3's `BatchNormalization` runs about ten ops
per layer (moments, float32 casts under a bf16 policy, broadcasts); tf_alexnet's
`FusedBatchNormalization` runs TensorFlow's one fused kernel. Each configuration trains the
`cpu` preset's model (28 px, its batch size, steps per execution, optimizer and loss) on
synthetic batches in a fresh process, configurations alternating over rounds; bf16 rows only
where the CPU has bf16 units. Then one profiled stretch gives the op table of each.

    python -m benchmarks.batch_norm            # about 6 min on 2 cores
    python -m benchmarks.batch_norm --smoke    # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from benchmarks import common
from benchmarks.profile_ops import table, traced_op_seconds
from tf_alexnet import startup

LAYERS = ("keras", "fused")


def measure(layer: str, policy: str, steps: int, smoke: bool) -> dict[str, Any]:
    """In this (fresh) process: the preset's `mini` training on synthetic batches."""
    startup.prefer_cpu_settings()  # TensorFlow's kernels and pool as `tf-alexnet train` has them
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_alexnet import config as config_lib
    from tf_alexnet import model as model_module
    from tf_alexnet.optim import compile_model

    if layer == "keras":  # the layer mini had before: Keras's own
        model_module.FusedBatchNormalization = keras.layers.BatchNormalization  # type: ignore[misc]
    keras.mixed_precision.set_global_policy(policy)
    config = config_lib.resolve("cpu", overrides={"mixed_precision": "off"})
    if smoke:
        config = config_lib.from_dict(
            {**config.to_dict(), "batch_size": 16, "steps_per_execution": 2}
        )
    size, batch, per_call = config.image_size, config.batch_size, config.steps_per_execution
    model = model_module.AlexNet(
        input_shape=(size, size, 1), classes=10, dropout=config.dropout, variant=config.variant
    )
    compile_model(model, config, steps_per_epoch=steps)
    rng = np.random.default_rng(0)
    images = rng.random((batch * per_call, size, size, 1), dtype=np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch * per_call)]
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).cache().repeat()
    # As the project's pipelines (tf_alexnet/pipeline.py): with tf.data's autotuning on, freeing
    # each timed fit's iterator waited out its tuning thread's sleep (timed rates stuck at
    # 1,000.3 img/s whatever the layer).
    options = tf.data.Options()
    options.autotune.enabled = False
    data = data.with_options(options)

    def fit(count: int) -> None:
        model.fit(data, steps_per_epoch=count, epochs=1, verbose=0)

    fit(2 * per_call)  # warm-up: tracing, oneDNN primitives
    start, start_cpu = time.perf_counter(), time.process_time()
    fit(steps)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    profiled = max(per_call, steps // 5)
    totals, profiled_wall = traced_op_seconds(lambda: fit(profiled), 1)
    return {
        "images_per_second": steps * batch / wall,
        "images_per_cpu_second": steps * batch / cpu,
        "batch_norm_layer": type(model.get_layer("conv1_bn")).__name__,
        "op_table": table(totals, profiled_wall, profiled),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=common.positive_int, default=3)
    parser.add_argument(
        "--steps", type=common.positive_int, default=320, help="timed steps per process"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny batches, a few steps")
    common.add_out_option(parser)
    parser.add_argument("--child", nargs=4, metavar=("LAYER", "POLICY", "STEPS", "SMOKE"))
    args = parser.parse_args(argv)
    common.prepare_out(parser, args)
    if args.child:
        layer, policy, steps, smoke = args.child
        print(json.dumps(measure(layer, policy, int(steps), smoke == "1")))
        return
    from tf_alexnet.hardware import bf16_support

    support = bf16_support()
    policies = ["float32"] + (["mixed_bfloat16"] if support.available else [])
    rounds, steps = (1, 4) if args.smoke else (args.rounds, args.steps)
    configs = [(policy, layer) for policy in policies for layer in LAYERS]
    runs: dict[str, list[dict[str, Any]]] = {f"{p} {layer}": [] for p, layer in configs}
    load_at_start = os.getloadavg()[0]
    for round_index in range(rounds):
        for policy, layer in configs if round_index % 2 == 0 else configs[::-1]:
            result = common.run_json(
                ["-m", "benchmarks.batch_norm", "--child", layer, policy, str(steps),
                 "1" if args.smoke else "0"]
            )  # fmt: skip
            runs[f"{policy} {layer}"].append(result)
            print(f"{policy} {layer}: {result['images_per_second']:.1f} img/s", flush=True)
    summary, rows = {}, []
    for policy in policies:
        rates = {
            layer: [r["images_per_second"] for r in runs[f"{policy} {layer}"]] for layer in LAYERS
        }
        cpu_rates = {
            layer: [r["images_per_cpu_second"] for r in runs[f"{policy} {layer}"]]
            for layer in LAYERS
        }
        for layer in LAYERS:
            key = f"{policy} {layer}"
            per_round = [
                ours / base for ours, base in zip(rates[layer], rates["keras"], strict=True)
            ]
            summary[key] = {
                "images_per_second_median": common.median(rates[layer]),
                "images_per_cpu_second_median": common.median(cpu_rates[layer]),
                # side by side: each round's ratio to Keras's layer in the same round
                "ratio_to_keras_median": common.median(per_round),
                "cpu_ratio_to_keras_median": common.median(
                    [o / b for o, b in zip(cpu_rates[layer], cpu_rates["keras"], strict=True)]
                ),
                "op_ms_per_step_median": 1e3
                * common.median([r["op_table"]["op_seconds_per_step"] for r in runs[key]]),
            }
            found = summary[key]
            rows.append(
                [
                    policy,
                    runs[key][0]["batch_norm_layer"],
                    found["images_per_second_median"],
                    f"{found['ratio_to_keras_median']:.2f}x",
                    found["images_per_cpu_second_median"],
                    f"{found['cpu_ratio_to_keras_median']:.2f}x",
                    found["op_ms_per_step_median"],
                    ", ".join(f"{rate:,.0f}" for rate in rates[layer]),
                ]
            )
    tables = []
    for key, results in runs.items():
        ops = results[0]["op_table"]
        tables += [
            f"### {key} (round 1): {ops['wall_seconds_per_step'] * 1e3:.1f} ms per step, "
            f"{ops['op_seconds_per_step'] * 1e3:.1f} ms of ops",
            "",
            common.markdown_table(
                ["op", "ms per step", "share"],
                [
                    [row["op"], row["seconds_per_step"] * 1e3, f"{row['share']:.0%}"]
                    for row in ops["top_ops"]
                ],
            ),
            "",
        ]
    markdown = (
        "# Batch norm in the `cpu` preset's `mini`: Keras's layer against the fused one\n\n"
        f"bf16 units here: **{'yes' if support.available else 'no'}** ({support.reason}). "
        f"Median of {rounds} fresh process(es) per row, {steps} timed training steps each; "
        "x Keras: the median of each round's ratio to Keras's layer in the same policy. "
        "img/CPU-s counts the process's own CPU time (steadier than wall time when neighbours "
        f"share the machine). Load average at the start: {load_at_start:.1f} on "
        f"{os.cpu_count()} cores. Op ms: executor op time per step, summed over threads.\n\n"
        + common.markdown_table(
            [
                "policy",
                "batch norm",
                "img/s",
                "x Keras",
                "img/CPU-s",
                "x Keras",
                "op ms/step",
                "img/s per round",
            ],
            rows,
        )
        + "\n\n## Op tables\n\n"
        + "\n".join(tables)
    )
    name = common.result_name("batch_norm", args.smoke)
    common.write_results(
        name,
        {
            "steps": steps,
            "rounds": rounds,
            "bf16_support": {"available": support.available, "reason": support.reason},
            "load_average_at_start": load_at_start,
            "summary": summary,
            "runs": runs,
        },
        markdown,
        args.out,
    )


if __name__ == "__main__":
    common.run_main(main)
