"""Serving with and without oneDNN where TensorFlow leaves it off: one-image calls and batches.

    python -m benchmarks.onednn_serving [--rounds 2] [--smoke]

TensorFlow 2.21 runs oneDNN's CPU kernels by itself only on CPUs with AVX512_VNNI, AVX512_BF16,
AVX_VNNI or AMX. The training commands turn it on everywhere (`startup.prefer_onednn`); this
measures whether `tf-alexnet serve` should too. Per model (randomly initialised `mini` at 28 px
and d2l at 224 px, exported), each in a fresh process, TensorFlow's own choice and
`TF_ENABLE_ONEDNN_OPTS=1` alternating over rounds: CPU and wall time of a one-image call of the
bytes signature (as the facade makes at concurrency 1), and images/s at batches 1, 8 and 32.
One result per CPU kind.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
from typing import Any

from benchmarks import common
from benchmarks.facade_cost import MODEL_NAME
from benchmarks.serving import export_models
from tf_alexnet import startup

SETTINGS = {"tensorflow's choice": {}, "oneDNN on": {startup.ONEDNN: "1"}}
BATCHES = [1, 8, 32]


def measure(base: pathlib.Path, env: dict[str, str], calls: int) -> dict[str, Any]:
    """`facade_cost.raw_worker` in a fresh process with `env`."""
    result: dict[str, Any] = common.run_json(
        ["-c", "import json; from benchmarks.facade_cost import raw_worker; "
         f"print(json.dumps(raw_worker({str(base / MODEL_NAME / '1')!r}, {calls}, {BATCHES!r})))"],
        env=env,
    )  # fmt: skip
    return result


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for model, settings in result["summary"].items():
        base = settings["tensorflow's choice"]
        for name, row in settings.items():
            rows.append(
                [
                    model,
                    name,
                    f"{row['cpu_ms_per_call']:.2f}",
                    f"{row['wall_ms_per_call']:.2f}",
                    f"{row['wall_ms_per_call'] / base['wall_ms_per_call']:.2f}x",
                    *(f"{row['images_per_second'][str(b)]:,.0f}" for b in BATCHES),
                    f"{row['images_per_second']['32'] / base['images_per_second']['32']:.2f}x",
                ]
            )
    headers = ["model", "kernels", "CPU ms per one-image call", "wall ms", "x TF's choice"]
    headers += [f"img/s, batch {b}" for b in BATCHES] + ["batch 32, x TF's choice"]
    return (
        "# Serving with and without oneDNN\n\n"
        f"`serving_image_bytes` calls in fresh processes, median of {result['rounds']} round(s), "
        f"{result['calls']} one-image calls each; `oneDNN on` is `TF_ENABLE_ONEDNN_OPTS=1`; "
        f"TensorFlow's choice here: oneDNN {'on' if result['onednn_by_default'] else 'off'}.\n\n"
        + common.markdown_table(headers, rows)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=common.positive_int, default=2)
    parser.add_argument("--calls", type=common.positive_int, default=100)
    parser.add_argument("--smoke", action="store_true", help="mini only, one round, few calls")
    common.add_out_option(parser)
    args = parser.parse_args(argv)
    common.prepare_out(parser, args)
    models = [("mini", 28)] if args.smoke else [("mini", 28), ("d2l", 224)]
    rounds, calls = (1, 10) if args.smoke else (args.rounds, args.calls)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        bases = export_models(pathlib.Path(folder), models)
        for round_index in range(rounds):
            order = list(SETTINGS.items())[:: 1 if round_index % 2 == 0 else -1]
            for model, base in bases.items():
                for name, env in order:
                    found = measure(base, env, calls)
                    runs.append({"round": round_index, "model": model, "kernels": name, **found})
                    print(
                        f"{model} {name}: {found['wall_ms_per_call_median']:.2f} ms per call, "
                        f"{found['images_per_second_by_batch']['32']:,.0f} img/s at batch 32",
                        flush=True,
                    )
    summary: dict[str, dict[str, Any]] = {}
    for model in bases:
        for name in SETTINGS:
            mine = [r for r in runs if r["model"] == model and r["kernels"] == name]
            summary.setdefault(model, {})[name] = {
                "cpu_ms_per_call": common.median([r["cpu_ms_per_call"] for r in mine]),
                "wall_ms_per_call": common.median([r["wall_ms_per_call_median"] for r in mine]),
                "images_per_second": {
                    str(b): common.median([r["images_per_second_by_batch"][str(b)] for r in mine])
                    for b in BATCHES
                },
            }
    probe = "from tf_alexnet import startup; startup.start_tensorflow(onednn=False); "
    probe += "print('true' if startup.onednn_in_use() else 'false')"
    result = {
        "rounds": rounds,
        "calls": calls,
        "onednn_by_default": common.run_json(["-c", probe]),
        "summary": summary,
        "runs": runs,
    }
    name = common.result_name("onednn_serving", args.smoke)
    common.write_results(name, result, markdown(result), args.out)


if __name__ == "__main__":
    common.run_main(main)
