"""A bounded, closed-loop HTTP load generator for `POST /predict` (asyncio, raw HTTP/1.1).

`concurrency` clients each send one PNG, wait for the answer, and send the next, for a fixed
time after a warm-up; every request has a timeout, so a stuck server cannot hang the run.

It runs on the same cores as the server it loads, so it is built to cost little CPU: each
client holds one keep-alive connection and writes requests encoded in advance (one per PNG),
reading back only the status line, the `Content-Length` and the body. (An httpx client used
about 4 ms of CPU per request, a third of a core at 75 requests/s; see
docs/benchmarks/facade_cost_*.md.) Its own CPU share is reported with every result.

    python -m benchmarks.loadgen http://127.0.0.1:8000 --concurrency 8 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import time
import urllib.parse
from typing import Any

from benchmarks import common

REQUEST_TIMEOUT_S = 60.0
BOUNDARY = "tf-alexnet-loadgen-boundary"
BODIES = ("multipart", "json", "binary")


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
    """httpx arguments for one PNG: a multipart `file` part, TF Serving-style JSON (`b64`), or
    the raw bytes (`image/png`)."""
    if body == "binary":
        return {"content": png, "headers": {"Content-Type": "image/png"}}
    if body == "json":
        return {"json": {"instances": [{"b64": base64.b64encode(png).decode()}]}}
    return {"files": {"file": ("image.png", png, "image/png")}}


def encode_request(url: str, png: bytes, body: str) -> bytes:
    """The whole `POST /predict` request for one PNG, as bytes on the wire (keep-alive)."""
    if body == "binary":
        content_type, content = "image/png", png
    elif body == "json":
        content_type = "application/json"
        content = json.dumps({"instances": [{"b64": base64.b64encode(png).decode()}]}).encode()
    elif body == "multipart":
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
        content = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="image.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
            + png
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
    else:
        raise ValueError(f"`body` should be one of {', '.join(BODIES)}. Received: {body!r}")
    parts = urllib.parse.urlsplit(url)
    path = f"{parts.path.rstrip('/')}/predict"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(content)}\r\n\r\n"
    )
    return head.encode() + content


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests and reads answers."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"`url` should be http://HOST:PORT. Received: url={url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, request: bytes) -> int:
        """Sends `request`, reads the whole answer, returns its status code."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = None
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"connection" and b"close" in value.lower():
                    self._streams = None  # the server closes after this answer
            if length is None:
                raise ConnectionError("an answer without Content-Length")
            await reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        return status

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _load(
    url: str,
    pngs: list[bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    body: str = "multipart",
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    requests = itertools.cycle([encode_request(url, png, body) for png in pngs])
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup
    stop_at = measure_from + seconds

    async def client() -> None:
        connection = Connection(url)
        try:
            while loop.time() < stop_at:
                request = next(requests)
                start = loop.time()
                try:
                    status = await asyncio.wait_for(connection.send(request), REQUEST_TIMEOUT_S)
                    failed = None if status == 200 else str(status)
                except (OSError, EOFError, ValueError, TimeoutError) as err:
                    failed = type(err).__name__
                end = loop.time()
                if start >= measure_from and end <= stop_at:
                    if failed:
                        errors[failed] = errors.get(failed, 0) + 1
                    else:
                        latencies.append(end - start)
        finally:
            connection.close()

    warm_task = asyncio.gather(*(client() for _ in range(concurrency)))
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
    parser.add_argument(
        "--concurrency", type=common.positive_int, nargs="+", default=[1, 8, 32, 64]
    )
    parser.add_argument("--seconds", type=common.positive_float, default=10)
    parser.add_argument("--warmup", type=common.non_negative_float, default=2)
    parser.add_argument(
        "--images", type=common.positive_int, default=64, help="distinct PNGs to cycle through"
    )
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        parser.error(f"`url` should be http://HOST:PORT, the facade's base URL. Received: {url}")
    import httpx

    try:
        httpx.get(f"{url}/metrics", timeout=10)
    except httpx.HTTPError as error:
        parser.error(f"`url` should be a running facade; nothing answers at {url} ({error})")
    pngs = fashion_mnist_pngs(args.images)
    for concurrency in args.concurrency:
        row = measure(url, pngs, concurrency, args.seconds, args.warmup)
        print(json.dumps(row))


if __name__ == "__main__":
    common.run_main(main)
