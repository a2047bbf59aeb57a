"""`python -m tfserving_standin`: the stand-in behind `tensorflow_model_server`'s own flags.

Flags are parsed as TF Serving's `main.cc` does (TensorFlow's command_line_flags: only
`--name=value`, bools also bare `--name`; a value that does not parse as the flag's type is
"Couldn't interpret value V for flag F." and exit status 255). Honoured as TF Serving does:
`--port` (gRPC, messages up to 2 GiB - 1), `--rest_api_port`, `--model_name` with
`--model_base_path`, or `--model_config_file` (one model; `latest` or `all` version policy,
version labels), `--allow_version_labels_for_unavailable_models`, `--file_system_poll_wait_seconds`
(int32: a new version is loaded, then served, then the old one unloaded; 0 polls once),
`--max_num_load_retries` and `--load_retry_interval_micros` (a failed load is retried in state
LOADING before END), `--enable_batching` with `--batching_parameters_file` (its `max_batch_size`
and `batch_timeout_micros`: concurrent calls run as one batch, and fail as one). Start-up fails
as `server.cc`/`server_core.cc` make it fail, with "Failed to start server. Error: CODE:
message" and exit status 255: `--batching_parameters_file` without `--enable_batching`; any
version label in the config without `--allow_version_labels_for_unavailable_models` (TF Serving
assigns labels before it loads any version); the newest version failing to load. With no
version yet, it waits (ports closed) and polls, as TF Serving does. The other flags of the
official server (warmup, monitoring, timeouts, config polling) are accepted and ignored, with
one line saying so.
`--help` (or `-h`) prints the emulated flags in tsl's `Flags::Usage()` layout and exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import re
import sys
import threading
import time
from typing import Any

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


@dataclasses.dataclass
class Options:
    """The flags the stand-in honours (names and defaults of TF Serving's main.cc)."""

    port: int = 8500
    rest_api_port: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    file_system_poll_wait_seconds: int = 1
    allow_version_labels_for_unavailable_models: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    enable_batching: bool = False
    batching_parameters_file: str = ""


FLAG_TYPES = {
    "port": INT32,
    "rest_api_port": INT32,
    "model_name": str,
    "model_base_path": str,
    "model_config_file": str,
    "file_system_poll_wait_seconds": INT32,
    "allow_version_labels_for_unavailable_models": bool,
    "max_num_load_retries": INT32,
    "load_retry_interval_micros": INT64,
    "enable_batching": bool,
    "batching_parameters_file": str,
}
# Parsed and checked, but what they configure is not emulated.
NOT_EMULATED: tuple[str, ...] = ()
# The BatchingParameters fields the stand-in follows, as `name { value: N }` in the text proto.
BATCHING_FIELD = re.compile(
    r"\b(max_batch_size|batch_timeout_micros)\s*\{\s*value\s*:\s*(\d+)\s*\}"
)
HELP_FLAGS = ("--help", "-h")


class StartupError(Exception):
    """BuildAndStart() failed: `code` and message as TF Serving prints them."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")


def usage() -> str:
    """The emulated flags with their defaults and types, laid out as tsl's Flags::Usage()."""
    lines = ["usage: tensorflow_model_server (stand-in)", "Flags:"]
    for field in dataclasses.fields(Options):
        kind = FLAG_TYPES[field.name]
        type_name = {str: "string", bool: "bool", INT32: "int32", INT64: "int64"}[kind]
        default = str(field.default).lower() if kind is bool else field.default
        lines.append(f"\t--{field.name}={default}\t{type_name}")
    lines.append("Other tensorflow_model_server flags are accepted and ignored.")
    return "\n".join(lines) + "\n"


def _flag_value(arg: str, name: str, kind: Any) -> tuple[bool, Any]:
    """(matched, value) for one argument and one flag, as tsl's command_line_flags parses it;
    value None when the text does not parse (the caller reports it)."""
    if not arg.startswith("--" + name):
        return False, None
    rest = arg[len(name) + 2 :]
    if kind is bool:
        if rest == "":
            return True, True
        if not rest.startswith("="):
            return False, None  # another flag whose name begins with this one
        value = rest[1:]
        if value.lower() == "true" or value == "1":
            return True, True
        if value.lower() == "false" or value == "0":
            return True, False
        return True, None
    if not rest.startswith("="):
        return False, None
    value = rest[1:]
    if kind is str:
        return True, value
    # absl::SimpleAtoi: optional whitespace and sign, decimal digits, within the type's range.
    if re.fullmatch(r"[ \t\n\v\f\r]*[+-]?[0-9]+[ \t\n\v\f\r]*", value):
        number = int(value)
        if kind[0] <= number <= kind[1]:
            return True, number
    return True, None


def parse_args(argv: list[str]) -> tuple[Options | None, list[str], list[str]]:
    """(options, arguments not emulated, errors); options is None when a value did not parse."""
    options = Options()
    ignored: list[str] = []
    errors: list[str] = []
    for arg in argv:
        for name, kind in FLAG_TYPES.items():
            matched, value = _flag_value(arg, name, kind)
            if not matched:
                continue
            if value is None:
                text = arg.split("=", 1)[1]
                errors.append(f"Couldn't interpret value {text} for flag {name}.")
            else:
                setattr(options, name, value)
                if name in NOT_EMULATED:
                    ignored.append(arg)
            break
        else:
            ignored.append(arg)
    return (None if errors else options), ignored, errors


def model_from_config(path: str) -> tuple[str, pathlib.Path, int | None, dict[str, int]]:
    """(name, base path, versions to serve or None for all, labels) of the one model in a
    `ModelServerConfig` text proto, parsed with TF Serving's own message class."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        config = text_format.Parse(
            pathlib.Path(path).read_text(), model_server_config_pb2.ModelServerConfig()
        )
    except (OSError, text_format.ParseError) as err:
        raise StartupError("INVALID_ARGUMENT", f"Invalid protobuf file: '{path}'") from err
    models = list(config.model_config_list.config)
    if len(models) != 1:
        raise SystemExit(f"the stand-in serves exactly one model. Received: {len(models)}")
    (model,) = models
    policy = model.model_version_policy.WhichOneof("policy_choice") or "latest"
    if policy == "specific":
        raise SystemExit("the stand-in supports the `latest` and `all` version policies only.")
    num_versions = model.model_version_policy.latest.num_versions or 1
    labels = dict(model.version_labels)
    return (
        model.name,
        pathlib.Path(model.base_path),
        (None if policy == "all" else num_versions),
        labels,
    )


def batching_from_options(options: Options) -> Any:
    """The stand-in's `Batching` for `--enable_batching` (None without it): the parameters
    file's `max_batch_size` and `batch_timeout_micros`, else TF Serving's defaults."""
    from .server import Batching

    if not options.enable_batching:
        return None
    if not options.batching_parameters_file:
        return Batching()
    path = options.batching_parameters_file
    try:
        text = pathlib.Path(path).read_text()
    except OSError as err:
        raise StartupError("INVALID_ARGUMENT", f"Invalid protobuf file: '{path}'") from err
    return Batching(**{name: int(value) for name, value in BATCHING_FIELD.findall(text)})


def check_options(options: Options) -> tuple[str, pathlib.Path, int | None, dict[str, int]]:
    """What Server::BuildAndStart() and ServerCore::ReloadConfig() check before loading."""
    if options.port == 0:
        raise StartupError("INVALID_ARGUMENT", "server_options.grpc_port is not set.")
    if not options.model_base_path and not options.model_config_file:
        raise StartupError(
            "INVALID_ARGUMENT",
            "Both server_options.model_base_path and server_options.model_config_file are empty!",
        )
    if options.model_config_file:
        name, base, num_versions, labels = model_from_config(options.model_config_file)
    else:
        name, base, num_versions, labels = (
            options.model_name,
            pathlib.Path(options.model_base_path),
            1,
            {},
        )
    if options.batching_parameters_file and not options.enable_batching:
        raise StartupError(
            "INVALID_ARGUMENT",
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true.",
        )
    # UpdateModelVersionLabelMap() runs before the first load: no version is available yet.
    if not options.allow_version_labels_for_unavailable_models:
        for version in labels.values():
            raise StartupError(
                "FAILED_PRECONDITION",
                f"Request to assign label to version {version} of model {name}, "
                "which is not currently available for inference",
            )
    return name, base, num_versions, labels


def await_first_version(servables: Any, wait_seconds: int) -> None:
    """ConnectSourcesWithFastInitialLoad(): wait until the newest version is AVAILABLE or has
    failed (END); TF Serving keeps polling an empty base path until a version appears."""
    while not servables.states:
        time.sleep(wait_seconds if wait_seconds > 0 else 1)
        if wait_seconds > 0:
            servables.poll()
    latest = max(servables.states)
    if servables.states[latest][0] != "AVAILABLE":
        raise StartupError(
            "UNKNOWN",
            "Some servables did not become available: "
            f"{{{{name: {servables.name} version: {latest}}}, }}",
        )


async def serve(
    options: Options,
    model: tuple[str, pathlib.Path, int | None, dict[str, int]],
    batching: Any = None,
) -> None:
    import uvicorn

    from .server import TFServingGRPC, TFServingREST

    name, base, num_versions, labels = model
    servables = TFServingREST(
        base.parent,
        name,
        labels=labels,
        num_versions=num_versions,
        model_path=base,
        max_num_load_retries=options.max_num_load_retries,
        load_retry_interval_micros=options.load_retry_interval_micros,
        batching=batching,
    )
    await asyncio.to_thread(await_first_version, servables, options.file_system_poll_wait_seconds)
    stop = threading.Event()
    if options.file_system_poll_wait_seconds > 0:  # 0: polled once; negative: never
        threading.Thread(
            target=servables.poll_forever,
            args=(options.file_system_poll_wait_seconds, stop),
            daemon=True,
        ).start()
    grpc_server = TFServingGRPC(servables).server()
    grpc_server.add_insecure_port(f"0.0.0.0:{options.port}")
    await grpc_server.start()
    print(f"tfserving-standin: gRPC on {options.port}, model {name} from {base}", flush=True)
    try:
        if options.rest_api_port:
            config = uvicorn.Config(
                servables.app, host="0.0.0.0", port=options.rest_api_port, log_level="warning"
            )
            print(f"tfserving-standin: REST on {options.rest_api_port}", flush=True)
            await uvicorn.Server(config).serve()
        else:
            await grpc_server.wait_for_termination()
    finally:
        stop.set()
        await grpc_server.stop(grace=1)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    options, ignored, errors = parse_args(args)
    for error in errors:
        print(error, file=sys.stderr, flush=True)
    if options is None:
        print(usage(), end="", flush=True)
        return 255  # main.cc returns -1
    if any(arg in HELP_FLAGS for arg in args):
        print(usage(), end="", flush=True)
        return 0
    if ignored:
        print("tfserving-standin: ignoring (not emulated): " + " ".join(ignored), flush=True)
    try:
        model = check_options(options)
        asyncio.run(serve(options, model, batching_from_options(options)))
    except StartupError as err:
        print(f"Failed to start server. Error: {err}", flush=True)
        return 255
    return 0


if __name__ == "__main__":
    sys.exit(main())
