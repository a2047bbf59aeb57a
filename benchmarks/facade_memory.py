"""The facade's memory under the largest uploads it accepts, and the wait of a small request
queued behind them.

Each request carries `MAX_FILES` images of `MAX_PIXELS` pixels (the facade's limits: 16 of
25 megapixels, a smooth gradient so that 16 fit in the 10 MB body limit), `concurrency` such
requests at once. For each load, on a `tf-alexnet serve` (local backend) started fresh per
model and image format: the server's resident memory before it, its peak during it (`VmHWM`,
reset through `/proc/PID/clear_refs` before each load) and after it, the wall time, and the
status codes. A one-image 28x28 request sent while the largest load runs measures how long a
small request waits behind big ones (the batcher takes requests in turn, and a model call
decodes at most `MAX_BATCH_PIXELS` pixels). The same loads of 28x28 images give the memory
the large images add.

The question it answers: does peak memory grow with the pixels a request carries, or with
the pixels in flight at once (the batcher's `MAX_BATCH_SIZE` images per model call)? Only the
first would call for a per-request pixel budget.

    python -m benchmarks.facade_memory --baseline eecf322  # about 10 min on 2 cores
    python -m benchmarks.facade_memory --smoke  # seconds
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import pathlib
import tempfile
import time
from typing import Any

from benchmarks import common
from benchmarks.facade_cost import baseline_source, server
from benchmarks.serving import export_models

LOADS = [(1, 1), (1, 16), (2, 16), (4, 16), (8, 16)]
"""(concurrent requests, images per request); 8 x 16 fills the default queue of 128 images."""


def gradient_image(side: int, kind: str) -> bytes:
    """A `side` x `side` RGB gradient as a `kind` (jpeg or png) file: large, small on disk."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = ((ramp[None, :] + ramp[:, None]) / 2).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(
        buffer, kind.upper(), **({"quality": 50} if kind == "jpeg" else {"optimize": True})
    )
    return buffer.getvalue()


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now (`VmRSS`) and at its peak (`VmHWM`), in MB."""
    fields = dict(
        line.split(":", 1) for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def reset_peak(pid: int) -> None:
    """Sets `VmHWM` back to the current resident memory (Linux's `clear_refs` value 5)."""
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")


def post(url: str, image: bytes, count: int) -> tuple[int, float]:
    """One multipart request of `count` copies of `image`: (status, seconds)."""
    import httpx

    files = [("file", (f"{i}.img", image, "application/octet-stream")) for i in range(count)]
    start = time.perf_counter()
    status = httpx.post(f"{url}/predict", files=files, timeout=600).status_code
    return status, time.perf_counter() - start


def load(
    url: str, pid: int, image: bytes, concurrency: int, per_request: int, probe: bytes | None
) -> dict[str, Any]:
    """`concurrency` requests of `per_request` images at once; with `probe`, a one-image
    request sent half a second in."""
    before = memory_mb(pid)["VmRSS"]
    reset_peak(pid)
    with concurrent.futures.ThreadPoolExecutor(concurrency + 1) as pool:
        futures = [pool.submit(post, url, image, per_request) for _ in range(concurrency)]
        probed = None
        if probe is not None:
            time.sleep(0.5)
            probed = pool.submit(post, url, probe, 1)
        answers = [future.result() for future in futures]
    after = memory_mb(pid)
    row = {
        "concurrency": concurrency,
        "images_per_request": per_request,
        "seconds": max(seconds for _, seconds in answers),
        "mean_seconds": sum(seconds for _, seconds in answers) / len(answers),
        "statuses": sorted(status for status, _ in answers),
        "rss_before_mb": before,
        "rss_peak_mb": after["VmHWM"],
        "rss_after_mb": after["VmRSS"],
    }
    if probed is not None:
        row["small_request_status"], row["small_request_seconds"] = probed.result()
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    side = int(args.pixels**0.5)
    small = gradient_image(28, "png")
    rows = []
    with tempfile.TemporaryDirectory() as folder, baseline_source(args.baseline) as old:
        servers: dict[str, tuple[pathlib.Path | None, dict[str, str]]] = {"this commit": (None, {})}
        servers |= {f"baseline {args.baseline}": (old, {})} if old else {}
        servers |= {name: (None, env) for name, env in args.settings.items()}
        bases = export_models(pathlib.Path(folder), args.models)
        for model, base in bases.items():
            for kind in [*args.formats, "small"]:
                image = small if kind == "small" else gradient_image(side, kind)
                for name, (source, env) in servers.items():
                    with server(base, source, extra_env=env) as (url, pid):
                        post(url, small, 1)  # warm-up: the first call traces the model
                        for concurrency, per_request in args.loads:
                            probe = small if (concurrency, per_request) == args.loads[-1] else None
                            row = load(url, pid, image, concurrency, per_request, probe)
                            row |= {"server": name, "model": model, "format": kind}
                            row["pixels"] = 28 * 28 if kind == "small" else side * side
                            row["file_bytes"] = len(image)
                            print(describe(row), flush=True)
                            rows.append(row)
        alone = []
        with server(next(iter(bases.values()))) as (url, _):
            post(url, small, 1)
            alone = [post(url, small, 1)[1] for _ in range(20)]
    return {
        "pixels_per_image": side * side,
        "loads": rows,
        "small_request_alone_seconds_median": common.median(alone),
    }


def describe(row: dict[str, Any]) -> str:
    probe = (
        f", small request {row['small_request_seconds']:.2f} s"
        if "small_request_seconds" in row
        else ""
    )
    return (
        f"{row['server']}, {row['model']} {row['format']}: "
        f"{row['concurrency']} x {row['images_per_request']} images, "
        f"{row['mean_seconds']:.1f} s mean, {row['seconds']:.1f} s max, "
        f"RSS {row['rss_before_mb']:.0f} -> peak {row['rss_peak_mb']:.0f} -> "
        f"{row['rss_after_mb']:.0f} MB, {row['statuses']}{probe}"
    )


def markdown(result: dict[str, Any]) -> str:
    megapixels = result["pixels_per_image"] / 1e6
    lines = [
        "# The facade's memory under its largest uploads",
        "",
        f"Multipart requests of images of {megapixels:.1f} megapixels (and, for comparison, "
        "28x28 PNGs), several at once, to `tf-alexnet serve` (local backend) started fresh per "
        "model and format: resident memory before, at the peak and after each load (MB); the "
        "seconds its requests took (mean and slowest); and the seconds a one-image 28x28 "
        "request sent half a second into the largest load took (alone: "
        f"{result['small_request_alone_seconds_median'] * 1000:.0f} ms, median of 20).",
        "",
    ]
    table = [
        [
            row["server"],
            row["model"],
            row["format"],
            f"{row['concurrency']} x {row['images_per_request']}",
            f"{row['concurrency'] * row['images_per_request'] * row['pixels'] / 1e6:,.3g}",
            row["mean_seconds"],
            row["seconds"],
            row["rss_before_mb"],
            row["rss_peak_mb"],
            row["rss_after_mb"],
            " ".join(map(str, sorted(set(row["statuses"])))),
            f"{row['small_request_seconds']:.2f}" if "small_request_seconds" in row else "",
        ]
        for row in result["loads"]
    ]
    headers = ["server", "model", "images", "requests x images", "megapixels sent"]
    headers += ["seconds (mean)", "seconds (max)"]
    headers += ["RSS before", "RSS peak", "RSS after", "statuses", "small request (s)"]
    lines.append(common.markdown_table(headers, table))
    return "\n".join(lines) + "\n"


def model_spec(text: str) -> tuple[str, int]:
    """`--models` values: `VARIANT:SIZE` (`mini:28`) as (variant, image size)."""
    variant, _, size = text.partition(":")
    if not variant or not size.isdigit() or int(size) < 1:
        raise argparse.ArgumentTypeError(
            "should be VARIANT:SIZE with a whole number of pixels, e.g. mini:28 or d2l:224. "
            f"Received: {text!r}"
        )
    return variant, int(size)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pixels", type=common.positive_int, default=25_000_000, help="pixels per large image"
    )
    parser.add_argument("--formats", nargs="+", default=["jpeg", "png"])
    parser.add_argument(
        "--models",
        nargs="+",
        type=model_spec,
        default=[("mini", 28), ("d2l", 224)],
        metavar="VARIANT:SIZE",
        help="models exported and served (default: mini:28 d2l:224)",
    )
    parser.add_argument("--baseline", help="also serve this git ref's facade, side by side")
    common.add_setting_option(parser)
    parser.add_argument("--smoke", action="store_true", help="seconds-long check of the harness")
    common.add_out_option(parser)
    parser.add_argument("--name")
    args = parser.parse_args(argv)
    args.loads = LOADS
    try:
        args.settings = common.parse_settings(args.setting)
    except ValueError as error:
        parser.error(str(error))
    if args.smoke:
        args.pixels, args.formats, args.models = 250_000, ["jpeg"], [("mini", 28)]
        args.loads = [(1, 1), (2, 4)]
    common.check_git_ref(parser, args.baseline, "--baseline")
    common.prepare_out(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = run(args)
    name = common.result_name("facade_memory", args.smoke, args.name)
    common.write_results(name, result, markdown(result), args.out)


if __name__ == "__main__":
    common.run_main(main)
