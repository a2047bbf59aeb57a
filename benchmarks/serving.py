"""Serving: latency and throughput of `POST /predict` against the raw SavedModel ceiling.

- Raw ceiling: the exported `serving_default` signature (PNG bytes in) called in process,
  at several batch sizes; the best images/s is the ceiling, the batch-1 call the floor.
- Facade: `tf-alexnet serve` (local backend) in its own process on a loopback port; a closed-
  loop asyncio load generator (`loadgen.py`) sends one Fashion-MNIST PNG per request at
  concurrency 1, 8, 32 and 64, with micro-batching on (max batch 32) and off (max batch 1).
- Client paths: the facade's TF Serving REST and gRPC backends against the test TF Serving
  server (serving/tfserving_standin/, Python). These numbers are client-side overhead
  only; they say nothing about the real TF Serving binary.

The models are randomly initialised (speed does not depend on the weights) and exported
with `tf_alexnet.export.export`, exactly as a trained run would be.

    python -m benchmarks.serving            # about 10 min on 2 cores
    python -m benchmarks.serving --smoke    # seconds: mini model, short loads
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from benchmarks import common, loadgen
from tf_alexnet.hardware import bf16_support

MODEL_NAME = "alexnet"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not become ready in {timeout:.0f} s")


@contextlib.contextmanager
def process(
    command: list[str], env: dict[str, str] | None = None, cwd: pathlib.Path | None = None
) -> Iterator[Any]:
    """A background process in `cwd` (default: this checkout), terminated (then killed) on
    exit."""
    proc = subprocess.Popen(
        command,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd or common.REPO,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def facade(base: pathlib.Path, **settings: Any) -> Iterator[str]:
    """`tf-alexnet serve` on a free loopback port, with TF_ALEXNET_SERVE_* settings."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {f"TF_ALEXNET_SERVE_{k.upper()}": str(v) for k, v in settings.items()}
    command = [sys.executable, "-m", "tf_alexnet.cli", "serve", "--port", str(port)]
    with process([*command, "--model-base-path", str(base)], env) as proc:
        wait_ready(url, proc)
        yield url


def export_models(folder: pathlib.Path, variants: list[tuple[str, int]]) -> dict[str, pathlib.Path]:
    """Exports a randomly initialised model per (variant, size); returns model base paths."""
    import keras

    from tf_alexnet import AlexNet
    from tf_alexnet.export import export
    from tf_alexnet.sources import sample_images
    from tf_alexnet.specs import DataSpec

    images = sample_images(DataSpec(manual_dir=str(common.MANUAL_DIR)), count=4)
    bases = {}
    for variant, size in dict.fromkeys(variants):
        keras.utils.set_random_seed(0)
        model = AlexNet(input_shape=(size, size, 1), variant=variant)
        weights = folder / f"{variant}-{size}.keras"
        model.save(weights)
        base = folder / f"{variant}-{size}"
        export(weights, base, MODEL_NAME, 1, sample_images=images)
        bases[f"{variant}-{size}"] = base
    return bases


def raw_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Calls the bytes signature in process: images/s per batch size, batch-1 latency."""
    import tensorflow as tf

    from tf_alexnet import contract
    from tf_alexnet.hardware import enable_bf16_rewrite

    enable_bf16_rewrite("auto")  # the facade's default (BF16=auto): compare like with like

    signature = tf.saved_model.load(args.model_dir).signatures[contract.SIGNATURE_IMAGE_BYTES]
    png = loadgen.fashion_mnist_pngs(1)[0]
    results = {}
    for batch in args.raw_batches:
        inputs = tf.constant([png] * batch)
        for _ in range(3):
            signature(**{contract.INPUT_IMAGE_BYTES: inputs})
        times = []
        deadline = time.perf_counter() + args.raw_seconds
        while time.perf_counter() < deadline or len(times) < 5:
            start = time.perf_counter()
            signature(**{contract.INPUT_IMAGE_BYTES: inputs})
            times.append(time.perf_counter() - start)
        results[str(batch)] = {
            "median_call_seconds": common.median(times),
            "images_per_second": batch / common.median(times),
            "calls": len(times),
        }
    return results


def run(args: argparse.Namespace) -> None:
    pngs = loadgen.fashion_mnist_pngs(64)
    support = bf16_support()  # BF16=auto, the facade's default; the raw calls follow it too
    with tempfile.TemporaryDirectory() as tmp:
        bases = export_models(pathlib.Path(tmp), [(args.variant, args.image_size), ("mini", 28)])
        main_base = bases[f"{args.variant}-{args.image_size}"]
        print(f"raw signature ({args.variant} {args.image_size}px)", flush=True)
        raw = common.run_json(
            ["-m", __spec__.name, "--worker=raw", f"--model-dir={main_base / MODEL_NAME / '1'}"]
            + [f"--raw-seconds={args.raw_seconds}", "--raw-batches"]
            + [str(b) for b in args.raw_batches]
        )
        for batch, row in raw.items():
            print(f"  batch {batch:>3}: {row['images_per_second']:8.1f} img/s", flush=True)
        facade_rows = []
        for mode, settings in (
            ("batching on", {"max_batch_size": args.max_batch_size, "max_batch_wait_ms": 2}),
            ("batching off", {"max_batch_size": 1}),
        ):
            with facade(main_base, **settings) as url:
                for concurrency in args.concurrency:
                    row = loadgen.measure(url, pngs, concurrency, args.seconds, args.warmup)
                    facade_rows.append({"mode": mode, **row})
                    print(f"  {mode:12s} {loadgen.describe(row)}", flush=True)
        client_rows = client_overhead(bases["mini-28"], pngs, args)
    result = {
        "settings": vars(args),
        "bf16_rewrite": {"enabled": support.available, "reason": support.reason},
        "raw": raw,
        "facade": facade_rows,
        "client_paths": client_rows,
        "goals": goals(raw, facade_rows),
    }
    common.write_results(args.name, result, markdown(result), args.out)
    plot(result, args.out / f"{args.name}.png")


def client_overhead(
    base: pathlib.Path, pngs: list[bytes], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The mini model served three ways: local, via TF Serving REST, via TF Serving gRPC."""
    rest_port, grpc_port = free_port(), free_port()
    stub = ["-m", __spec__.name, "--worker=tfserving", f"--model-dir={base}"]
    stub += [f"--rest-port={rest_port}", f"--grpc-port={grpc_port}"]
    rows = []
    with process([sys.executable, *stub]):
        backends = {
            "local": {},
            "tfserving-rest": {"tfserving_rest_url": f"http://127.0.0.1:{rest_port}"},
            "tfserving-grpc": {"tfserving_grpc_address": f"127.0.0.1:{grpc_port}"},
        }
        for backend, settings in backends.items():
            with facade(base, backend=backend, **settings) as url:
                for concurrency in (1, 8):
                    row = loadgen.measure(url, pngs, concurrency, args.seconds / 2, args.warmup)
                    rows.append({"backend": backend, **row})
                    print(f"  mini via {backend:15s} {loadgen.describe(row)}", flush=True)
    return rows


def goals(raw: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    def find(mode: str, concurrency: int) -> dict[str, Any] | None:
        return next(
            (r for r in rows if r["mode"] == mode and r["concurrency"] == concurrency), None
        )

    ceiling = max(r["images_per_second"] for r in raw.values())
    on32, off32, on1 = find("batching on", 32), find("batching off", 32), find("batching on", 1)
    single_call = raw["1"]["median_call_seconds"] if "1" in raw else None
    found: dict[str, Any] = {"raw_ceiling_images_per_second": ceiling}
    if on32 and off32:
        found["batched_c32_share_of_ceiling"] = on32["requests_per_second"] / ceiling
        found["batched_over_unbatched_c32"] = (
            on32["requests_per_second"] / off32["requests_per_second"]
        )
    if on1 and single_call:
        found["p50_c1_over_single_raw_call"] = on1["p50_ms"] / 1000 / single_call
    found["met"] = {
        ">=80% of ceiling at c32": found.get("batched_c32_share_of_ceiling", 0) >= 0.8,
        ">=3x unbatched at c32": found.get("batched_over_unbatched_c32", 0) >= 3,
        "p50 c1 within 1.3x raw": found.get("p50_c1_over_single_raw_call", 99) <= 1.3,
    }
    return found


def markdown(result: dict[str, Any]) -> str:
    settings = result["settings"]
    raw_table = common.markdown_table(
        ["batch", "median call (ms)", "images/s"],
        [
            [b, r["median_call_seconds"] * 1000, r["images_per_second"]]
            for b, r in result["raw"].items()
        ],
    )
    columns = ["p50 ms", "p95 ms", "p99 ms", "requests/s", "errors"]
    facade_table = common.markdown_table(
        ["mode", "concurrency", *columns, "mean batch"],
        [
            [r["mode"], r["concurrency"], *loadgen.cells(r), r.get("mean_batch_size", "")]
            for r in result["facade"]
        ],
    )
    client_table = common.markdown_table(
        ["backend", "concurrency", *columns],
        [[r["backend"], r["concurrency"], *loadgen.cells(r)] for r in result["client_paths"]],
    )
    goals = result["goals"]
    met = "\n".join(f"- {'met' if ok else 'MISSED'}: {goal}" for goal, ok in goals["met"].items())
    figures = {k: v for k, v in goals.items() if k != "met"}
    return (
        f"# Serving: {settings['variant']} AlexNet at {settings['image_size']} px\n\n"
        "## Raw SavedModel signature, in process (PNG bytes in)\n\n"
        f"{raw_table}\n\n"
        "## `POST /predict`, one PNG per request, local backend\n\n"
        f"{settings['seconds']} s per level after {settings['warmup']} s warm-up, closed loop.\n\n"
        f"{facade_table}\n\n"
        "## Goals\n\n"
        f"{met}\n\n```json\n{json.dumps(figures, indent=2)}\n```\n\n"
        "## Client paths (mini model at 28 px; client-side overhead only)\n\n"
        "The facade's TF Serving backends against the Python test server that follows TF "
        "Serving's protocol: the difference to `local` is the cost of the client path, not a "
        "measurement of TF Serving.\n\n"
        f"{client_table}\n"
    )


def plot(result: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode in ("batching on", "batching off"):
        rows = [r for r in result["facade"] if r["mode"] == mode]
        levels = [r["concurrency"] for r in rows]
        left.plot(levels, [r["requests_per_second"] for r in rows], marker="o", label=mode)
        right.plot(levels, [r["p50_ms"] for r in rows], marker="o", label=f"{mode} p50")
        right.plot(levels, [r["p99_ms"] for r in rows], marker="x", ls="--", label=f"{mode} p99")
    ceiling = result["goals"]["raw_ceiling_images_per_second"]
    left.axhline(ceiling, color="grey", ls=":", label="raw ceiling")
    left.set(xscale="log", xlabel="concurrency", ylabel="requests/s", title="Throughput")
    right.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="ms", title="Latency")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tfserving_worker(args: argparse.Namespace) -> None:
    """The test TF Serving server (REST and gRPC) over `--model-dir`, until terminated."""
    import grpc
    import uvicorn

    from serving.tfserving_standin.server import TFServingGRPC, TFServingREST

    servables = TFServingREST(pathlib.Path(args.model_dir), MODEL_NAME)

    async def serve() -> None:
        server = grpc.aio.server()
        TFServingGRPC(servables).add_to(server)
        server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
        await server.start()
        config = uvicorn.Config(
            servables.app, host="127.0.0.1", port=args.rest_port, log_level="warning"
        )
        await uvicorn.Server(config).serve()
        await server.stop(None)

    asyncio.run(serve())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("raw", "tfserving"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--rest-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="d2l", help="model served (default: the chapter's)")
    parser.add_argument("--image-size", type=common.positive_int, default=224)
    parser.add_argument(
        "--concurrency", type=common.positive_int, nargs="+", default=[1, 8, 32, 64]
    )
    parser.add_argument(
        "--seconds", type=common.positive_float, default=20, help="measured per level"
    )
    parser.add_argument(
        "--warmup", type=common.non_negative_float, default=3, help="unmeasured seconds per level"
    )
    parser.add_argument(
        "--max-batch-size", type=common.positive_int, default=32, help="facade micro-batch"
    )
    parser.add_argument(
        "--raw-batches", type=common.positive_int, nargs="+", default=[1, 8, 16, 32, 64]
    )
    parser.add_argument("--raw-seconds", type=common.positive_float, default=8)
    parser.add_argument("--smoke", action="store_true", help="seconds-long check of the harness")
    common.add_out_option(parser)
    parser.add_argument("--name", default="serving")
    args = parser.parse_args(argv)
    if args.smoke:
        args.variant, args.image_size, args.concurrency = "mini", 28, [1, 8]
        args.seconds, args.warmup, args.raw_batches, args.raw_seconds = 1, 0.5, [1, 8], 0.5
    common.prepare_out(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker == "raw":
        print(json.dumps(raw_worker(args)))
    elif args.worker == "tfserving":
        tfserving_worker(args)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        run(args)


if __name__ == "__main__":
    common.run_main(main)
