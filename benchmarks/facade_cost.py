"""The facade's own cost: server CPU per request against the raw signature call, side by side.

CPU time is what a process itself spent (`/proc/PID/task/*/schedstat`, every thread, in
nanoseconds), so it holds up better than wall time when neighbours share the machine.

- Raw: the exported `serving_default` signature (PNG bytes in) called in a fresh process,
  one image per call, `--requests` times in a row: CPU and wall time per call.
- Facade: `tf-alexnet serve` (local backend) on a loopback port, `--requests` one-image
  requests in a row from one keep-alive client, per body kind (multipart `file`, TF
  Serving-style JSON `b64`, and a binary `image/png` body where the server has it): the
  server's CPU time per request. Facade overhead = that minus the raw call's CPU. Every
  server runs at once and the requests go in `--chunks` chunks, the servers taking turns, so a
  neighbour that slows the host for a while slows each of them; each figure is the median
  over the chunks, the raw call's the median of a run before and one after them. The event
  loop thread's own CPU (the facade's Python: HTTP, parsing, the answer) is shown beside it.
- Throughput: at concurrency 32 (closed loop) the facade's images/s over the raw ceiling
  (the best images/s of the signature called in process with batches), with the load
  generator's own CPU share beside it, since it runs on the same cores. `--rounds` rounds,
  the ceiling measured before, between and after them; the goal is judged on the median
  round (one round's share moved by 5-10 points between runs on a shared host). Each round
  starts each server afresh, one at a time; a run whose rounds load the CPU section's model
  (`--smoke`, or `--variant mini --image-size 28`) keeps that section's servers instead.

`--baseline REF` also serves the facade of an earlier commit (a temporary `git worktree`),
so old and new are measured in one run on one machine; `--setting NAME=VAR=VALUE` serves this
commit's facade again under other environment variables (an allocator, say), side by side.

    python -m benchmarks.facade_cost --baseline 5d578fa   # about 10 min on 2 cores
    python -m benchmarks.facade_cost --smoke              # seconds
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

from benchmarks import common, loadgen
from benchmarks.serving import MODEL_NAME, export_models, free_port, process, wait_ready
from tf_alexnet.hardware import bf16_support

BODIES = loadgen.BODIES
Servers = dict[str, tuple[pathlib.Path | None, dict[str, str]]]
"""Per server's name: the checkout it runs (None: this one) and the variables it adds."""
GOAL_BASELINE = "5d578fa"
"""The facade the overhead goal (at most half its overhead) is set against."""


def judges_overhead_goal(baseline: str | None) -> bool:
    """Whether a run's `--baseline` is the facade the overhead goal is set against."""
    return bool(baseline) and len(baseline) >= 7 and GOAL_BASELINE.startswith(baseline[:7])


def overhead_verdict(baseline: str | None, ratio: float) -> str:
    """MET or MISSED against the goal's facade; COMPARED against any other baseline."""
    if not judges_overhead_goal(baseline):
        return "COMPARED"
    return "MET" if ratio <= 0.5 else "MISSED"


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of a live process: (every thread, its main thread), from the scheduler's
    nanosecond counters (`/proc/PID/task/TID/schedstat`; a thread gone since is not counted,
    and the server's threads live as long as it does)."""
    total = main = 0.0
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            seconds = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError):  # the thread ended while listed
            continue
        total += seconds
        if task.name == str(pid):
            main = seconds
    return total, main


def raw_worker(model_dir: str, requests: int, batches: list[int]) -> dict[str, Any]:
    """In this (fresh) process: CPU and wall time per one-image call; images/s per batch."""
    import tensorflow as tf

    from tf_alexnet import contract
    from tf_alexnet.hardware import enable_bf16_rewrite

    enable_bf16_rewrite("auto")  # the facade's default (BF16=auto): compare like with like

    signature = tf.saved_model.load(model_dir).signatures[contract.SIGNATURE_IMAGE_BYTES]
    pngs = loadgen.fashion_mnist_pngs(64)
    for png in pngs[:8]:  # warm-up
        signature(**{contract.INPUT_IMAGE_BYTES: tf.constant([png])})
    walls = []
    cpu_start = time.process_time()
    for i in range(requests):
        start = time.perf_counter()
        outputs = signature(**{contract.INPUT_IMAGE_BYTES: tf.constant([pngs[i % len(pngs)]])})
        outputs[contract.OUTPUT_PROBABILITIES].numpy()
        walls.append(time.perf_counter() - start)
    cpu_per_call = (time.process_time() - cpu_start) / requests
    ceiling = {}
    for batch in batches:
        inputs = tf.constant([pngs[i % len(pngs)] for i in range(batch)])
        signature(**{contract.INPUT_IMAGE_BYTES: inputs})
        times = []
        for _ in range(max(5, 128 // batch)):
            start = time.perf_counter()
            signature(**{contract.INPUT_IMAGE_BYTES: inputs})
            times.append(time.perf_counter() - start)
        ceiling[str(batch)] = batch / common.median(times)
    return {
        "cpu_ms_per_call": cpu_per_call * 1000,
        "wall_ms_per_call_median": common.median(walls) * 1000,
        "images_per_second_by_batch": ceiling,
    }


@contextlib.contextmanager
def launch(
    base: pathlib.Path,
    source: pathlib.Path | None = None,
    batch_wait_ms: float | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`tf-alexnet serve` started on a free port, with its default settings, not yet waited for:
    this checkout's, or the one in `source`; `batch_wait_ms` overrides MAX_BATCH_WAIT_MS;
    `extra_env` adds variables."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # What BF16=auto picks in this checkout, set explicitly so that a baseline with an older
    # hardware rule computes in the same precision (and the raw call, too).
    env = {"TF_ALEXNET_SERVE_BF16": "on" if bf16_support().available else "off"}
    if batch_wait_ms is not None:
        env["TF_ALEXNET_SERVE_MAX_BATCH_WAIT_MS"] = str(batch_wait_ms)
    env |= extra_env or {}
    if source is not None:  # an earlier commit's code first on the path
        env["PYTHONPATH"] = os.pathsep.join([str(source), str(source / "serving")])
    command = [sys.executable, "-m", "tf_alexnet.cli", "serve", "--port", str(port)]
    # Run from `source`: `python -m` puts the working folder before PYTHONPATH, and this
    # checkout's `tf_alexnet` there would start this checkout's server with the old settings.
    with process([*command, "--model-base-path", str(base)], env, cwd=source) as proc:
        yield url, proc


@contextlib.contextmanager
def server(
    base: pathlib.Path,
    source: pathlib.Path | None = None,
    batch_wait_ms: float | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """`launch`, then wait until the server is ready: (url, pid)."""
    with launch(base, source, batch_wait_ms, extra_env) as (url, proc):
        wait_ready(url, proc)
        yield url, proc.pid


def raw_run(base: pathlib.Path, args: argparse.Namespace) -> dict[str, Any]:
    """`raw_worker` in a fresh process."""
    result: dict[str, Any] = common.run_json(
        ["-c", "import json, sys; from benchmarks.facade_cost import raw_worker; "
         f"print(json.dumps(raw_worker({str(base / MODEL_NAME / '1')!r}, "
         f"{args.requests}, {args.raw_batches!r})))"]
    )  # fmt: skip
    return result


def answers(client: Any, url: str, png: bytes, body: str) -> bool:
    """Whether the server takes this body kind (an older server may lack the binary body)."""
    status: int = client.post(f"{url}/predict", **loadgen.request_body(png, body)).status_code
    return status == 200


def sequential_chunk(
    client: Any, url: str, pid: int, pngs: list[bytes], body: str, requests: int
) -> dict[str, Any]:
    """`requests` one-image requests in a row: the server's CPU per request (all threads, and
    its event loop's thread), the client's, and each request's wall time."""
    walls = []
    (cpu_start, loop_start), client_start = process_cpu_seconds(pid), time.process_time()
    for i in range(requests):
        start = time.perf_counter()
        response = client.post(f"{url}/predict", **loadgen.request_body(pngs[i % len(pngs)], body))
        walls.append(time.perf_counter() - start)
        response.raise_for_status()
    cpu_end, loop_end = process_cpu_seconds(pid)
    return {
        "server_cpu_ms_per_request": (cpu_end - cpu_start) / requests * 1000,
        "loop_cpu_ms_per_request": (loop_end - loop_start) / requests * 1000,
        "client_cpu_ms_per_request": (time.process_time() - client_start) / requests * 1000,
        "walls_ms": [wall * 1000 for wall in walls],
    }


def sequential_costs(
    live: dict[str, tuple[str, int]], pngs: list[bytes], requests: int, chunks: int
) -> dict[str, dict[str, Any]]:
    """Per server and body: the median over `chunks` chunks of `requests` in all. In each turn
    every body is sent to every server, a chunk each, the servers' order reversed every other
    turn, so a slow spell of the host falls on all of them alike."""
    import httpx

    size = max(1, requests // chunks)
    found: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in live}
    with httpx.Client(timeout=60) as client:
        takers = {  # per body, the servers that take it
            body: [name for name, (url, _) in live.items() if answers(client, url, pngs[0], body)]
            for body in BODIES
        }
        for body, names in takers.items():
            for name in names:
                sequential_chunk(client, *live[name], pngs, body, 16)  # warm-up
        for number in range(chunks):  # each turn: every body, every server
            for body, names in takers.items():
                for name in names if number % 2 == 0 else reversed(names):
                    found[name].setdefault(body, []).append(
                        sequential_chunk(client, *live[name], pngs, body, size)
                    )
    return {
        name: {body: _chunk_medians(rows) for body, rows in bodies.items()}
        for name, bodies in found.items()
    }


def _chunk_medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [wall for row in rows for wall in row["walls_ms"]]
    keys = ("server_cpu_ms_per_request", "loop_cpu_ms_per_request", "client_cpu_ms_per_request")
    return {
        **{key: common.median([row[key] for row in rows]) for key in keys},
        "server_cpu_ms_per_request_by_chunk": [row["server_cpu_ms_per_request"] for row in rows],
        "p50_ms": common.percentile(walls, 50),
        "requests": len(walls),
        "chunks": len(rows),
    }


@contextlib.contextmanager
def baseline_source(ref: str | None) -> Iterator[pathlib.Path | None]:
    """A temporary worktree of `ref` (None: no baseline)."""
    if ref is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp) / "baseline"
        git = ["git", "-C", str(common.REPO)]
        subprocess.run([*git, "worktree", "add", "--detach", str(folder), ref], check=True)
        try:
            yield folder
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(folder)], check=False)


def run(args: argparse.Namespace) -> dict[str, Any]:
    variants = [("mini", 28), (args.variant, args.image_size)]
    support = bf16_support()
    result: dict[str, Any] = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "bf16_rewrite": {"enabled": support.available, "reason": support.reason},
        "setting_env": args.settings,
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        baseline_source(args.baseline) as old,
        contextlib.ExitStack() as shared,
    ):
        bases = export_models(pathlib.Path(tmp), variants)
        servers: Servers = {"this commit": (None, {})}
        servers |= {f"baseline {args.baseline}": (old, {})} if old else {}
        servers |= {name: (None, env) for name, env in args.settings.items()}
        pngs = loadgen.fashion_mnist_pngs(64)  # the request images, read once for the run
        cost_base = bases["mini-28"]
        load_base = bases[f"{args.variant}-{args.image_size}"]
        # One model for both sections (a smoke run, or --variant mini --image-size 28): the
        # cost section's servers stay up for the rounds, idle but for the one under load, and
        # its closing raw run is the first round's ceiling (nothing runs between the two).
        same = load_base == cost_base
        result["cost"], live = cost_section(
            cost_base, servers, pngs, args, shared if same else None
        )
        first = result["cost"]["raw"]["runs"][-1]["images_per_second_by_batch"] if same else None
        result["throughput"] = throughput_section(load_base, servers, pngs, args, live, first)
    result["goals"] = goals(result)
    return result


def start_servers(
    stack: contextlib.ExitStack, base: pathlib.Path, servers: Servers, args: argparse.Namespace
) -> dict[str, tuple[str, int]]:
    """Every server on `base`, each on its own port, until `stack` closes: name -> (url, pid).
    They start at once (their start-up is most of a smoke run), then each is waited for."""
    launched = {
        name: stack.enter_context(launch(base, source, args.batch_wait_ms, env))
        for name, (source, env) in servers.items()
    }
    for url, proc in launched.values():
        wait_ready(url, proc)
    return {name: (url, proc.pid) for name, (url, proc) in launched.items()}


def cost_section(
    base: pathlib.Path,
    servers: Servers,
    pngs: list[bytes],
    args: argparse.Namespace,
    keep: contextlib.ExitStack | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[str, int]] | None]:
    """The raw call's CPU before and after; between them, every server's CPU per sequential
    request, per body kind, the servers taking turns. With `keep`, the servers stay up until it
    closes, and are returned with the section (else None: they stop before the second raw run)."""
    raw_runs = [raw_run(base, args)]
    with contextlib.ExitStack() as own:
        live = start_servers(keep or own, base, servers, args)
        rows = sequential_costs(live, pngs, args.requests, args.chunks)
    raw_runs.append(raw_run(base, args))
    raw = {
        key: common.median([run[key] for run in raw_runs])
        for key in ("cpu_ms_per_call", "wall_ms_per_call_median")
    }
    print(f"mini 28px raw: {raw['cpu_ms_per_call']:.2f} ms CPU/call", flush=True)
    for name, bodies in rows.items():
        for body, row in bodies.items():
            print(
                f"  {name} {body}: {row['server_cpu_ms_per_request']:.2f} ms server CPU/request "
                f"({row['loop_cpu_ms_per_request']:.2f} on the event loop), "
                f"p50 {row['p50_ms']:.1f} ms",
                flush=True,
            )
    section = {
        "model": "mini 28px",
        "raw": {**raw, "runs": raw_runs},
        "chunks": args.chunks,
        "servers": rows,
    }
    return section, live if keep else None


def throughput_section(
    base: pathlib.Path,
    servers: Servers,
    pngs: list[bytes],
    args: argparse.Namespace,
    live: dict[str, tuple[str, int]] | None = None,
    first_ceiling: dict[str, float] | None = None,
) -> dict[str, Any]:
    """`args.rounds` rounds of concurrency-32 loads, the raw ceiling measured between them.

    Each round's loads are compared with the ceiling measured just before and just after it
    (the median of the two), so a neighbour that slows the host for a while moves both. Each
    round starts each server afresh, one at a time, unless `live` servers are given (already up
    on `base`); `first_ceiling` is a raw run just made on `base`, the first round's "before".
    """
    import httpx

    if first_ceiling is None:
        first_ceiling = raw_run(base, args)["images_per_second_by_batch"]
    raw_runs = [first_ceiling]
    rounds: list[dict[str, dict[str, Any]]] = []
    for number in range(1, args.rounds + 1):
        loads: dict[str, dict[str, Any]] = {}
        for name, (source, env) in servers.items():
            serving = (
                contextlib.nullcontext(live[name])
                if live
                else server(base, source, args.batch_wait_ms, env)
            )
            with serving as (url, _), httpx.Client(timeout=60) as client:
                loads[name] = {}
                for body in ("multipart", "binary"):
                    if not answers(client, url, pngs[0], body):  # no binary body there
                        continue
                    row = loadgen.measure(url, pngs, 32, args.seconds, args.warmup, body)
                    loads[name][body] = row
                    print(f"  round {number} {name} {body}: {loadgen.describe(row)}", flush=True)
        rounds.append(loads)
        raw_runs.append(raw_run(base, args)["images_per_second_by_batch"])
    return {
        "model": f"{args.variant} {args.image_size}px",
        "raw": {"images_per_second_by_batch_runs": raw_runs},
        "servers_started_per_round": live is None,
        "rounds": rounds,
    }


def _ceilings(before: dict[str, float], after: dict[str, float]) -> tuple[float, float]:
    """The raw ceiling around one round (best batch; best batch <= 32, the facade's largest)."""
    by_batch = {int(b): common.median([before[b], after[b]]) for b in before}
    return max(by_batch.values()), max(v for b, v in by_batch.items() if b <= 32)


def goals(result: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    cost = result["cost"]
    raw_cpu = cost["raw"]["cpu_ms_per_call"]
    for rows in cost["servers"].values():
        for row in rows.values():
            row["overhead_cpu_ms"] = row["server_cpu_ms_per_request"] - raw_cpu
            row["overhead_p50_ms"] = row["p50_ms"] - cost["raw"]["wall_ms_per_call_median"]
    throughput = result["throughput"]
    raw_runs = throughput["raw"]["images_per_second_by_batch_runs"]
    # The facade's default MAX_BATCH_SIZE is 32: it never forms a larger batch.
    for loads, (before, after) in zip(throughput["rounds"], pairwise(raw_runs), strict=True):
        ceiling, reachable = _ceilings(before, after)
        for rows in loads.values():
            for row in rows.values():
                row["raw_ceiling_images_per_second"] = ceiling
                row["share_of_ceiling"] = row["requests_per_second"] / ceiling
                row["share_of_ceiling_batch_up_to_32"] = row["requests_per_second"] / reachable
    # Per server and body: the median over rounds of each figure.
    throughput["servers"] = {
        name: {
            body: {
                key: _median([loads[name][body][key] for loads in throughput["rounds"]])
                for key in MEDIAN_KEYS
            }
            for body in throughput["rounds"][0][name]
        }
        for name in throughput["rounds"][0]
    }
    new = cost["servers"]["this commit"]
    old = next(
        (rows for name, rows in cost["servers"].items() if name.startswith("baseline ")), None
    )
    if old:
        before = old["multipart"]["overhead_cpu_ms"]
        found["overhead_cpu_over_baseline"] = {
            body: row["overhead_cpu_ms"] / before for body, row in new.items()
        }
        found["overhead_p50_over_baseline"] = {
            body: row["overhead_p50_ms"] / old["multipart"]["overhead_p50_ms"]
            for body, row in new.items()
        }
    found["c32_share_of_ceiling"] = {
        body: row["share_of_ceiling"] for body, row in throughput["servers"]["this commit"].items()
    }
    settings = result.get("setting_env", {})
    if settings:  # each setting against this commit's defaults, per body
        defaults = throughput["servers"]["this commit"]
        found["settings_over_defaults"] = {
            name: {
                "server_cpu": {
                    body: row["server_cpu_ms_per_request"] / new[body]["server_cpu_ms_per_request"]
                    for body, row in cost["servers"][name].items()
                },
                "c32_images_per_second": {
                    body: row["requests_per_second"] / defaults[body]["requests_per_second"]
                    for body, row in throughput["servers"][name].items()
                },
            }
            for name in settings
        }
    return found


def _median(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]  # an old server: no batch sizes
    return common.median(known) if known else None


MEDIAN_KEYS = (
    "requests_per_second",
    "raw_ceiling_images_per_second",
    "share_of_ceiling",
    "share_of_ceiling_batch_up_to_32",
    "p50_ms",
    "p99_ms",
    "mean_batch_size",
    "loadgen_cpu_share",
)


def markdown(result: dict[str, Any]) -> str:
    cost, throughput = result["cost"], result["throughput"]
    raw = cost["raw"]
    rows = [
        [
            name,
            body,
            row["server_cpu_ms_per_request"],
            row["overhead_cpu_ms"],
            row["loop_cpu_ms_per_request"],
            row["p50_ms"],
            row["overhead_p50_ms"],
            row["client_cpu_ms_per_request"],
        ]
        for name, bodies in cost["servers"].items()
        for body, row in bodies.items()
    ]
    cost_table = common.markdown_table(
        [
            "server",
            "body",
            "server CPU ms/request",
            "overhead CPU ms",
            "event loop CPU ms/request",
            "p50 ms",
            "overhead p50 ms",
            "client CPU ms/request",
        ],
        rows,
    )
    load_columns = [
        "server",
        "body",
        "images/s",
        "raw ceiling",
        "of raw ceiling",
        "of raw, batch <= 32",
        "p50 ms",
        "p99 ms",
        "mean batch",
        "load generator CPU (of one core)",
    ]

    def load_row(first: list[Any], row: dict[str, Any]) -> list[Any]:
        return [
            *first,
            row["requests_per_second"],
            row["raw_ceiling_images_per_second"],
            f"{row['share_of_ceiling']:.0%}",
            f"{row['share_of_ceiling_batch_up_to_32']:.0%}",
            row["p50_ms"],
            row.get("p99_ms", "-"),
            row["mean_batch_size"] if row["mean_batch_size"] is not None else "-",
            f"{row['loadgen_cpu_share']:.0%}",
        ]

    median_table = common.markdown_table(
        load_columns,
        [
            load_row([name, body], row)
            for name, bodies in throughput["servers"].items()
            for body, row in bodies.items()
        ],
    )
    round_table = common.markdown_table(
        ["round", *load_columns],
        [
            load_row([number, name, body], row)
            for number, loads in enumerate(throughput["rounds"], 1)
            for name, bodies in loads.items()
            for body, row in bodies.items()
        ],
    )
    goals = result["goals"]
    lines = [
        "# The facade's own cost",
        "",
        f"## CPU per one-image request, {cost['model']} (sequential, one keep-alive client)",
        "",
        f"Raw signature call in process: {raw['cpu_ms_per_call']:.2f} ms CPU, "
        f"{raw['wall_ms_per_call_median']:.2f} ms wall (median; the median of a run before and "
        "one after the servers'). Overhead = the server's CPU per request minus that; overhead "
        "p50 = the request's p50 minus the raw call's. The servers run at once and take turns "
        f"in {cost['chunks']} chunks of requests per body; the CPU figures are the medians over "
        "the chunks. The event loop's CPU is the server's main thread alone: HTTP, parsing and "
        "the answer, without the model.",
        "",
        cost_table,
        "",
        f"## Concurrency 32, {throughput['model']}",
        "",
        f"{len(throughput['rounds'])} round(s) of {result['settings']['seconds']} s per load "
        "(closed loop, 32 clients, one image per request). Each round's raw ceiling is the best "
        "images/s of the signature called in process with batches, the median of a run just "
        'before and one just after that round; "batch <= 32" is the best batch the facade '
        "can form (its MAX_BATCH_SIZE). The load generator runs on the same cores: its CPU is "
        "in the last column. "
        + (
            "Each round starts every server afresh, one at a time."
            if throughput["servers_started_per_round"]
            else "One model for both sections: the servers of the CPU section serve the rounds "
            "too, idle but for the one under load."
        ),
        "",
        "Median over the rounds (each column's own median):",
        "",
        median_table,
        "",
        "Each round:",
        "",
        round_table,
        "",
        "## Goals",
        "",
    ]
    if "overhead_cpu_over_baseline" in goals:
        baseline = result["settings"].get("baseline")
        for body, ratio in goals["overhead_cpu_over_baseline"].items():
            verdict = overhead_verdict(baseline, ratio)
            goal = (
                "goal <= 0.5x"
                if verdict != "COMPARED"
                else f"a comparison: the <= 0.5x goal is against {GOAL_BASELINE}"
            )
            lines.append(
                f"- {verdict}: facade CPU overhead, {body} body, "
                f"{ratio:.3f}x the multipart overhead of the facade at {baseline} ({goal})"
            )
    for name, ratios in goals.get("settings_over_defaults", {}).items():
        env = ", ".join(f"{var}={value}" for var, value in result["setting_env"][name].items())
        cpu = ", ".join(f"{body} {ratio:.2f}x" for body, ratio in ratios["server_cpu"].items())
        c32 = ", ".join(
            f"{body} {ratio:.2f}x" for body, ratio in ratios["c32_images_per_second"].items()
        )
        lines.append(
            f"- Compared: {name} (`{env}`) against the defaults: server CPU per request {cpu}; "
            f"images/s at c32 {c32} (medians; below 1x CPU is cheaper, above 1x images/s faster)"
        )
    for body, share in goals["c32_share_of_ceiling"].items():
        lines.append(
            f"- {'MET' if share >= 0.8 else 'MISSED'}: {body} at c32, {share:.1%} of the raw "
            "ceiling, the median over the rounds (goal >= 80%)"
        )
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="also measure the facade of this git commit")
    parser.add_argument(
        "--requests",
        type=common.positive_int,
        default=600,
        help="sequential requests per server and body",
    )
    parser.add_argument(
        "--chunks", type=common.positive_int, default=10, help="turns the servers take per body"
    )
    parser.add_argument("--variant", default="d2l", help="model of the concurrency-32 run")
    parser.add_argument("--image-size", type=common.positive_int, default=224)
    parser.add_argument(
        "--raw-batches", type=common.positive_int, nargs="+", default=[1, 8, 16, 32, 64]
    )
    parser.add_argument(
        "--seconds", type=common.positive_float, default=15, help="measured at concurrency 32"
    )
    parser.add_argument("--warmup", type=common.non_negative_float, default=3)
    parser.add_argument(
        "--rounds",
        type=common.positive_int,
        default=3,
        help="concurrency-32 rounds, the ceiling between them",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=common.non_negative_float,
        help="the servers' MAX_BATCH_WAIT_MS (default: theirs)",
    )
    common.add_setting_option(parser)
    parser.add_argument("--smoke", action="store_true", help="seconds-long check of the harness")
    common.add_out_option(parser)
    parser.add_argument("--name")
    args = parser.parse_args(argv)
    try:
        args.settings = common.parse_settings(args.setting)
    except ValueError as error:
        parser.error(str(error))
    if args.smoke:
        args.requests, args.chunks, args.variant, args.image_size = 20, 2, "mini", 28
        args.raw_batches, args.seconds, args.warmup, args.rounds = [1, 8], 2, 1, 2
    common.check_git_ref(parser, args.baseline, "--baseline")
    common.prepare_out(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = run(args)
    name = common.result_name("facade_cost", args.smoke, args.name)
    common.write_results(name, result, markdown(result), args.out)


if __name__ == "__main__":
    common.run_main(main)
