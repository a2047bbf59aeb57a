"""A bounded, closed-loop HTTP load generator for `POST /predict` (asyncio + httpx).

`concurrency` clients each send one PNG, wait for the answer, and send the next, for a fixed
time after a warm-up; every request has a timeout, so a stuck server cannot hang the run.

    python -m benchmarks.loadgen http://127.0.0.1:8000 --concurrency 8 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from typing import Any

from benchmarks import common

REQUEST_TIMEOUT_S = 60.0


def fashion_mnist_pngs(count: int) -> list[bytes]:
    """The first `count` real Fashion-MNIST test images, PNG-encoded."""
    from tf_alexnet.sources import sample_images
    from tf_alexnet.specs import DataSpec

    return sample_images(DataSpec(manual_dir=str(common.MANUAL_DIR)), count=count)


def batch_histogram(url: str) -> tuple[float, float]:
    """(sum, count) of the facade's images-per-model-call histogram."""
    import httpx

    total = count = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("tf_alexnet_batch_size_sum"):
            total = float(line.split()[-1])
        elif line.startswith("tf_alexnet_batch_size_count"):
            count = float(line.split()[-1])
    return total, count


def request_body(png: bytes, body: str) -> dict[str, Any]:
    """httpx arguments for one PNG: a multipart `file` part, or the raw bytes (`image/png`)."""
    if body == "binary":
        return {"content": png, "headers": {"Content-Type": "image/png"}}
    return {"files": {"file": ("image.png", png, "image/png")}}


async def _load(
    url: str,
    pngs: list[bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    body: str = "multipart",
) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    images = itertools.cycle(pngs)
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup
    stop_at = measure_from + seconds

    async def client(http: httpx.AsyncClient) -> None:
        while loop.time() < stop_at:
            request = request_body(next(images), body)
            start = loop.time()
            try:
                response = await http.post(f"{url}/predict", **request)
                failed = None if response.status_code == 200 else str(response.status_code)
            except httpx.HTTPError as err:
                failed = type(err).__name__
            end = loop.time()
            if start >= measure_from and end <= stop_at:
                if failed:
                    errors[failed] = errors.get(failed, 0) + 1
                else:
                    latencies.append(end - start)

    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S) as http:
        await asyncio.sleep(0)
        warm_task = asyncio.gather(*(client(http) for _ in range(concurrency)))
        await asyncio.sleep(max(0.0, measure_from - loop.time()))
        before = await asyncio.to_thread(batch_histogram, url)
        cpu_before = time.process_time()
        await warm_task
        own_cpu = time.process_time() - cpu_before
        after = await asyncio.to_thread(batch_histogram, url)
    calls = after[1] - before[1]
    return {
        "own_cpu_seconds": own_cpu,
        "latencies": latencies,
        "errors": errors,
        "mean_batch_size": (after[0] - before[0]) / calls if calls else None,
    }


def measure(
    url: str,
    pngs: list[bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    body: str = "multipart",
) -> dict[str, Any]:
    """Latency percentiles (ms) and completed requests per second at one concurrency.

    `loadgen_cpu_share`: the load generator's own CPU time over the measured span, as a
    share of one core (it runs on the same machine as the server).
    """
    start = time.perf_counter()
    found = asyncio.run(_load(url, pngs, concurrency, seconds, warmup, body))
    latencies = found["latencies"]
    if not latencies:
        raise RuntimeError(f"no request completed in {time.perf_counter() - start:.0f} s")
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "requests_per_second": len(latencies) / seconds,
        "p50_ms": common.percentile(latencies, 50) * 1000,
        "p95_ms": common.percentile(latencies, 95) * 1000,
        "p99_ms": common.percentile(latencies, 99) * 1000,
        "errors": found["errors"],
        "mean_batch_size": found["mean_batch_size"],
        "loadgen_cpu_share": found["own_cpu_seconds"] / seconds,
    }


def cells(row: dict[str, Any]) -> list[Any]:
    return [
        row["p50_ms"],
        row["p95_ms"],
        row["p99_ms"],
        row["requests_per_second"],
        sum(row["errors"].values()),
    ]


def describe(row: dict[str, Any]) -> str:
    errors = sum(row["errors"].values())
    return (
        f"c={row['concurrency']:>3}: {row['requests_per_second']:8.1f} req/s, p50 "
        f"{row['p50_ms']:7.1f} ms, p99 {row['p99_ms']:7.1f} ms, errors {errors}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the facade's base URL")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--images", type=int, default=64, help="distinct PNGs to cycle through")
    args = parser.parse_args(argv)
    pngs = fashion_mnist_pngs(args.images)
    for concurrency in args.concurrency:
        row = measure(args.url.rstrip("/"), pngs, concurrency, args.seconds, args.warmup)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
