"""What every benchmark shares: machine facts, medians, and writing JSON + Markdown results."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import pathlib
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from tf_alexnet.cli_parser import number_in
from tf_alexnet.hardware import read_cpu_info

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "docs" / "benchmarks"
MANUAL_DIR = pathlib.Path(
    os.environ.get("TF_ALEXNET_MANUAL_DIR", REPO.parent / "shared" / "data" / "fashion-mnist")
)


def cpu_model() -> str:
    model = read_cpu_info().model
    if model == "unknown":  # no /proc/cpuinfo
        return platform.processor() or model
    return model


def cpu_flags() -> set[str]:
    return set(read_cpu_info().flags)


AMD_AVX512_GENERATIONS = {25: "zen4", 26: "zen5"}
"""AMD `cpu family` -> core generation, for CPUs with AVX-512 (family 25 without it is Zen 3).
Zen 4 runs AVX-512 on 256-bit units and Zen 5 on full-width ones, so bf16 pays off differently."""


def cpu_kind(
    model: str | None = None, flags: set[str] | None = None, family: int | None = None
) -> str:
    """A short name for the kind of CPU, for results kept one per kind: `intel-amx`,
    `intel-avx512-bf16` (bf16 instructions, no AMX), `amd-zen4-avx512-bf16`, `amd-avx2`, ..."""
    cpu = read_cpu_info()
    model = cpu_model() if model is None else model
    flags = cpu_flags() if flags is None else flags
    family = cpu.family if family is None else family
    vendor = "amd" if "AMD" in model.upper() else "intel" if "INTEL" in model.upper() else "cpu"
    if vendor == "amd" and "avx512f" in flags and family in AMD_AVX512_GENERATIONS:
        vendor = f"amd-{AMD_AVX512_GENERATIONS[family]}"
    for flag, isa in (
        ("amx_bf16", "amx"),
        ("avx512_bf16", "avx512-bf16"),
        ("avx512f", "avx512"),
        ("avx2", "avx2"),
    ):
        if flag in flags:
            return f"{vendor}-{isa}"
    return vendor


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare a result with their own machine."""
    flags = cpu_flags()
    cpu = read_cpu_info()
    return {
        "cpu": cpu_model(),
        "cpu_kind": cpu_kind(),
        "cpu_vendor": cpu.vendor,
        "cpu_family": cpu.family,
        "cores": os.cpu_count(),
        "cpu_features": sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            name: package_version(name)
            for name in ("tensorflow", "keras", "torch", "fastapi", "uvicorn", "tf-alexnet")
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def model_label(config: dict[str, Any]) -> str:
    """`mini 28px`, and the width where it is not the variant's own (`mini x1.25 28px`).

    `config` holds `variant`, `image_size` and `width` (a run's config or a result row; results
    recorded before the setting existed have no width: 1.0).
    """
    width = config.get("width", 1.0)
    return f"{config['variant']}{f' x{width:g}' if width != 1.0 else ''} {config['image_size']}px"


def command() -> str:
    """The command line that produced this result, as a reader would type it."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None:  # python -m benchmarks.NAME
        return shlex.join(["python", "-m", spec.name, *sys.argv[1:]])
    script = pathlib.Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(REPO)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def result_name(benchmark: str, smoke: bool, name: str | None = None) -> str:
    """The results file's name: `name` if given, `benchmark` for a smoke run, else
    `<benchmark>_<cpu kind>` (one result per kind of CPU)."""
    return name or (benchmark if smoke else f"{benchmark}_{cpu_kind()}")


positive_int = number_in(int, 1, what="a positive integer")
"""argparse type of a count or a size: an integer >= 1 (0 or less would measure nothing, or
fail minutes into a run)."""
non_negative_int = number_in(int, 0)
positive_float = number_in(float, 1e-9, what="a positive number")
"""argparse type of a measured span in seconds."""
non_negative_float = number_in(float, 0)


def add_out_option(parser: argparse.ArgumentParser) -> None:
    """`--out`: the results folder; checked (and filled in) by `prepare_out`."""
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        help="folder for the results (default: docs/benchmarks/; with --smoke: a fresh "
        "temporary folder, so smoke numbers never replace committed results)",
    )


def prepare_out(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fills in `args.out` and checks, before anything is measured, that results can be
    written there (`parser.error`, exit 2, if not).

    Without `--out`: docs/benchmarks/, or for a `--smoke` run a fresh temporary folder (said
    on stdout). Worker processes (`--worker`, `--child`) write no results and are left alone.
    """
    if getattr(args, "worker", None) or getattr(args, "child", None):
        args.out = args.out or RESULTS
        return
    if args.out is None:
        if not args.smoke:
            args.out = RESULTS
        else:
            args.out = pathlib.Path(tempfile.mkdtemp(prefix="tf-alexnet-smoke-"))
            print(f"smoke run without --out: writing to {args.out}", flush=True)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.out):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        parser.error(
            f"`--out` should be a folder the results can be written to ({reason}). "
            f"Received: --out {args.out}"
        )


def check_git_ref(parser: argparse.ArgumentParser, ref: str | None, flag: str) -> None:
    """`parser.error` (exit 2) unless `ref` names a commit of this repository."""
    if ref is None:
        return
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        cwd=REPO,
    )
    if found.returncode != 0:
        parser.error(
            f"`{flag}` should be a commit of this repository (a hash, branch or tag). "
            f"Received: {flag} {ref}"
        )


def write_results(name: str, result: dict[str, Any], markdown: str, out: pathlib.Path) -> None:
    """Writes `<out>/<name>.json` (result + machine + command) and `<out>/<name>.md`."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "command": command(), "machine": machine(), **result}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    header = (
        f"Command: `{payload['command']}`  \n"
        f"Machine: {payload['machine']['cpu']} ({payload['machine']['cpu_kind']}: "
        + " ".join(payload["machine"]["cpu_features"])
        + f"), {payload['machine']['cores']} cores; "
        + ", ".join(f"{k} {v}" for k, v in payload["machine"]["versions"].items() if v)
        + f"; {payload['machine']['date']}\n\n"
    )
    (out / f"{name}.md").write_text(markdown.rstrip() + "\n\n" + header)
    print(f"wrote {out / name}.json and .md", flush=True)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_settings(values: Sequence[str]) -> dict[str, dict[str, str]]:
    """`--setting NAME=VAR=VALUE[,VAR=VALUE]` values as {NAME: {VAR: VALUE}}.

    Raises:
        ValueError: a value not of that form.
    """
    settings = {}
    for setting in values:
        name, _, assignments = setting.partition("=")
        pairs = [pair.partition("=") for pair in assignments.split(",")]
        if not name or not all(var and sep for var, sep, _ in pairs):
            raise ValueError(f"--setting should be NAME=VAR=VALUE[,VAR=VALUE], got {setting!r}")
        settings[name] = {var: value for var, _, value in pairs}
    return settings


def add_setting_option(parser: Any) -> None:
    """`--setting`: serve this commit's facade again under other environment variables."""
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VAR=VALUE[,VAR=VALUE]",
        help="also serve this commit's facade with these environment variables, side by side",
    )


def mean_of(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    """The mean of `key` over the `runs` that have it (not None); None if none does."""
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.fmean(values) if values else None


def four_places(value: float | None) -> str:
    """`value` to 4 decimal places, or an empty table cell for None."""
    return "" if value is None else f"{value:.4f}"


def accuracy_without_flips(model_path: Any, config: Any, split: str) -> float | None:
    """The accuracy on `split` ("validation" or "test") of the `.keras` model at `model_path`
    with its test-time flips left out (the same weights in the plain network), for the flips'
    gain measured on the same model; None for a `config` without `test_time_flip`."""
    if not config.test_time_flip:
        return None
    import numpy as np

    from tf_alexnet.data import make_datasets
    from tf_alexnet.model import AlexNet
    from tf_alexnet.saving import load_model

    trained = load_model(model_path, compile=False)
    plain = AlexNet(
        input_shape=config.input_shape,
        classes=trained.output_shape[-1],
        dropout=config.dropout,
        variant=config.variant,
        width=config.width,
    )
    plain.set_weights(trained.get_weights())  # the flip layers hold no weights
    pipeline = config.pipeline_spec(256, one_hot=False)
    datasets = make_datasets(config.data_spec(), pipeline, training=False)
    right = total = 0
    for images, labels in getattr(datasets, split):
        predicted = np.argmax(plain.predict_on_batch(images), axis=-1)
        right += int(np.sum(predicted == labels.numpy()))
        total += len(predicted)
    return right / total


def run_main(main: Callable[[], None]) -> None:
    """Runs a benchmark's `main()`; a `UserError` (say, the Fashion-MNIST files are missing)
    ends it with its one-line message and exit status 2 instead of a traceback.

    In a worker process (`--worker`, `--child`) the traceback stays: `run_json`, in the
    parent, reports its last line.
    """
    from tf_alexnet.errors import UserError

    try:
        main()
    except UserError as error:
        if any(arg.startswith(("--worker", "--child")) for arg in sys.argv[1:]):
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _user_error(line: str) -> bool:
    """Whether `line`, the last line of a traceback, reports a `tf_alexnet.errors.UserError`
    (or a subclass: `SpecError`, `TrainingDiverged`, ...)."""
    from tf_alexnet.errors import UserError

    name, separator, _ = line.partition(": ")
    module, _, attribute = name.rpartition(".")
    if not separator or not module.startswith("tf_alexnet"):
        return False
    with contextlib.suppress(ImportError):
        found = getattr(importlib.import_module(module), attribute, None)
        return isinstance(found, type) and issubclass(found, UserError)
    return False


def run_json(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    timeout: float = 3600,
    log: pathlib.Path | None = None,
) -> Any:
    """Runs a Python helper in a fresh process and parses the JSON on its last stdout line.

    With `log`, the helper's output goes to that file as it comes (long runs can be followed
    with `tail -f`), stderr included.
    """
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    if log is None:
        proc = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=REPO,
        )
        output, errors = proc.stdout, proc.stderr
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as stream:
            proc = subprocess.run(  # type: ignore[assignment]
                [sys.executable, *args],
                stdout=stream,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=full_env,
                cwd=REPO,
            )
        output = errors = log.read_text()
    if proc.returncode != 0:
        last = next((line for line in reversed(errors.splitlines()) if line.strip()), "")
        if _user_error(last):
            # the person at the keyboard asked for something impossible (e.g. the
            # Fashion-MNIST files are missing): the child's one-line message is the answer
            print(f"error: {last.partition(': ')[2]}", file=sys.stderr, flush=True)
            raise SystemExit(2)
        raise RuntimeError(f"{shlex.join(args)} failed:\n{errors[-3000:]}")
    return json.loads(output.strip().splitlines()[-1])
