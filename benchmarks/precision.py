"""Inference precision: what an export of a bf16-trained model costs on this CPU, per path.

A model trained under `mixed_bfloat16` can be exported two ways:

- `float32 graph` (what `tf-alexnet export` stores): the same weights computing in float32;
  optionally run with grappler's `auto_mixed_precision_onednn_bfloat16` rewrite (`bf16
  rewrite`), which is what the facade's `TF_ALEXNET_SERVE_BF16=auto` and
  `serving/tfserving/session_bf16.config` turn on where the CPU has bf16 units;
- `bf16 graph`: the model exported as trained, computing in bf16.

Each configuration runs `serving_pixels` on a fixed batch in a fresh process, the
configurations alternating over rounds; `ONEDNN_MAX_CPU_ISA=AVX2` rows show a CPU without
bf16 units on a machine that has them. Weights are random (speed does not depend on them).

    python -m benchmarks.precision            # d2l at 224 px, batch 32: a few minutes
    python -m benchmarks.precision --smoke    # seconds: mini at 28 px
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time
from typing import Any

from benchmarks import common

CONFIGS = [
    # (label, export, bf16 rewrite, extra environment)
    ("float32 graph", "float32", False, {}),
    ("float32 graph + bf16 rewrite", "float32", True, {}),
    ("bf16 graph", "bf16", False, {}),
    ("float32 graph, ONEDNN_MAX_CPU_ISA=AVX2", "float32", False, {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("bf16 graph, ONEDNN_MAX_CPU_ISA=AVX2", "bf16", False, {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    # oneDNN's kernels where TensorFlow leaves them off (AVX2-only CPUs), as training has them
    ("float32 graph, TF_ENABLE_ONEDNN_OPTS=1", "float32", False, {"TF_ENABLE_ONEDNN_OPTS": "1"}),
]


def export_both(folder: pathlib.Path, variant: str, size: int, channels: int) -> None:
    """Writes `folder/float32` and `folder/bf16`: one bf16-trained model, exported both ways."""
    import keras

    from tf_alexnet import AlexNet
    from tf_alexnet.export import build_archive, float32_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    trained = AlexNet(input_shape=(size, size, channels), variant=variant)
    keras.mixed_precision.set_global_policy("float32")
    names = [str(i) for i in range(trained.output_shape[-1])]
    build_archive(float32_model(trained), names).write_out(str(folder / "float32"), verbose=False)
    build_archive(trained, names).write_out(str(folder / "bf16"), verbose=False)


def measure(folder: str, rewrite: bool, batch: int, calls: int) -> dict[str, Any]:
    """In this (fresh) process: images/s of `serving_pixels` on a fixed batch."""
    import tensorflow as tf

    from tf_alexnet import contract

    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": rewrite})
    signature = tf.saved_model.load(folder).signatures[contract.SIGNATURE_IMAGE_TENSOR]
    shape = signature.structured_input_signature[1][contract.INPUT_IMAGE_TENSOR].shape
    pixels = tf.random.stateless_uniform((batch, *shape[1:]), seed=(1, 2))
    for _ in range(2):  # warm-up: graph rewrite, oneDNN primitive creation
        probabilities = signature(**{contract.INPUT_IMAGE_TENSOR: pixels})
    times, cpu_times = [], []
    for _ in range(calls):
        start, start_cpu = time.perf_counter(), time.process_time()
        probabilities = signature(**{contract.INPUT_IMAGE_TENSOR: pixels})
        probabilities[contract.OUTPUT_PROBABILITIES].numpy()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    return {
        "images_per_second": batch / common.median(times),
        # CPU time is what the process itself spent: far less sensitive than wall time to
        # neighbours on a shared machine (both are reported).
        "images_per_cpu_second": batch / common.median(cpu_times),
        "probabilities": probabilities[contract.OUTPUT_PROBABILITIES].numpy()[:4].tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="mini at 28 px, a few calls")
    parser.add_argument("--rounds", type=common.positive_int, default=2)
    common.add_out_option(parser)
    parser.add_argument("--child", nargs=4, metavar=("FOLDER", "REWRITE", "BATCH", "CALLS"))
    args = parser.parse_args(argv)
    common.prepare_out(parser, args)
    if args.child:
        folder, rewrite, batch, calls = args.child
        print(json.dumps(measure(folder, rewrite == "1", int(batch), int(calls))))
        return
    variant, size, batch, calls = ("mini", 28, 8, 3) if args.smoke else ("d2l", 224, 32, 5)
    configs = [CONFIGS[0], CONFIGS[2]] if args.smoke else CONFIGS
    rounds = 1 if args.smoke else args.rounds
    from tf_alexnet.hardware import bf16_support

    support = bf16_support()
    load_at_start = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        common.run_json(
            ["-c", f"from benchmarks.precision import export_both; import pathlib; "
             f"export_both(pathlib.Path({str(folder)!r}), {variant!r}, {size}, 1); print('{{}}')"]
        )  # fmt: skip
        for round_index in range(rounds):
            order = configs if round_index % 2 == 0 else configs[::-1]
            for label, export, rewrite, env in order:
                try:
                    result = common.run_json(
                        ["-m", "benchmarks.precision", "--child", str(folder / export),
                         "1" if rewrite else "0", str(batch), str(calls)],
                        env=env,
                    )  # fmt: skip
                except RuntimeError as err:  # a path that cannot run here is a result too
                    lines = str(err).strip().splitlines()
                    failure = next(
                        (line for line in reversed(lines) if "rror" in line or "xception" in line),
                        lines[-1],
                    ).strip()[:300]
                    runs[label].append({"error": failure})
                    print(f"{label}: failed: {failure}", flush=True)
                    continue
                runs[label].append(result)
                print(
                    f"{label}: {result['images_per_second']:.1f} img/s, "
                    f"{result['images_per_cpu_second']:.1f} img/CPU-s",
                    flush=True,
                )
    baseline = common.median([r["images_per_second"] for r in runs["float32 graph"]])
    cpu_baseline = common.median([r["images_per_cpu_second"] for r in runs["float32 graph"]])
    reference = runs["float32 graph"][0]["probabilities"]
    rows, summary = [], {}
    for label, all_results in runs.items():
        results = [r for r in all_results if "error" not in r]
        if not results:
            error = all_results[0]["error"]
            summary[label] = {"error": error}
            rows.append([label, "failed", "", "", "", error.split(",")[0][:120]])
            continue
        rate = common.median([r["images_per_second"] for r in results])
        cpu_rate = common.median([r["images_per_cpu_second"] for r in results])
        difference = max(
            abs(a - b)
            for row_a, row_b in zip(results[0]["probabilities"], reference, strict=True)
            for a, b in zip(row_a, row_b, strict=True)
        )
        summary[label] = {
            "images_per_second_median": rate,
            "images_per_cpu_second_median": cpu_rate,
            "max_abs_difference": difference,
        }
        rows.append(
            [label, rate, rate / baseline, cpu_rate, cpu_rate / cpu_baseline, f"{difference:.1e}"]
        )
    markdown = (
        f"# Inference precision: {variant} at {size} px, `serving_pixels`, batch {batch}\n\n"
        f"bf16 units here: **{'yes' if support.available else 'no'}** ({support.reason}).\n"
        f"Median of {rounds} fresh process(es) per row, {calls} timed calls each. "
        f"Load average at the start: {load_at_start:.1f} on {os.cpu_count()} cores "
        "(img/CPU-s holds up better than wall time when neighbours share the machine); "
        "max abs diff: probabilities against the float32 graph.\n\n"
        + common.markdown_table(
            ["path", "img/s (wall)", "x float32", "img/CPU-s", "x float32", "max abs diff"], rows
        )
    )
    # One result per kind of CPU (AMX, AVX512-BF16 without AMX, AVX2, ...): never compared
    # across machines.
    name = common.result_name("precision", args.smoke)
    common.write_results(
        name,
        {
            "variant": variant,
            "image_size": size,
            "batch": batch,
            "bf16_support": {"available": support.available, "reason": support.reason},
            "load_average_at_start": load_at_start,
            "configs": summary,
            "runs": runs,
        },
        markdown,
        args.out,
    )


if __name__ == "__main__":
    common.run_main(main)
