"""`python -m tfserving_standin`: the stand-in behind `tensorflow_model_server`'s own flags.

Honoured as TF Serving does: `--port` (gRPC), `--rest_api_port`, `--model_name` with
`--model_base_path`, or `--model_config_file` (one model; `latest` or `all` version policy,
version labels), and `--file_system_poll_wait_seconds` (the base path is polled: a new version is
loaded, then served, then the old one unloaded). The other flags of the official server
(batching, warmup, monitoring, timeouts) are accepted and ignored, with one line saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import threading


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="tensorflow_model_server (stand-in)")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--rest_api_port", type=int, default=0)
    parser.add_argument("--model_name", default="default")
    parser.add_argument("--model_base_path", default="")
    parser.add_argument("--model_config_file", default="")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0)
    return parser.parse_known_args(argv)


def model_from_config(path: str) -> tuple[str, pathlib.Path, int | None, dict[str, int]]:
    """(name, base path, versions to serve or None for all, labels) of the one model in a
    `ModelServerConfig` text proto, parsed with TF Serving's own message class."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(
        pathlib.Path(path).read_text(), model_server_config_pb2.ModelServerConfig()
    )
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


async def serve(args: argparse.Namespace) -> None:
    import grpc
    import uvicorn

    from .server import TFServingGRPC, TFServingREST

    if args.model_config_file:
        name, base, num_versions, labels = model_from_config(args.model_config_file)
    else:
        name, base, num_versions, labels = (
            args.model_name,
            pathlib.Path(args.model_base_path),
            1,
            {},
        )
    servables = TFServingREST(
        base.parent, name, labels=labels, num_versions=num_versions, model_path=base
    )
    stop = threading.Event()
    poller = threading.Thread(
        target=servables.poll_forever,
        args=(args.file_system_poll_wait_seconds, stop),
        daemon=True,
    )
    poller.start()
    grpc_server = grpc.aio.server()
    TFServingGRPC(servables).add_to(grpc_server)
    grpc_server.add_insecure_port(f"0.0.0.0:{args.port}")
    await grpc_server.start()
    print(f"tfserving-standin: gRPC on {args.port}, model {name} from {base}", flush=True)
    try:
        if args.rest_api_port:
            config = uvicorn.Config(
                servables.app, host="0.0.0.0", port=args.rest_api_port, log_level="warning"
            )
            print(f"tfserving-standin: REST on {args.rest_api_port}", flush=True)
            await uvicorn.Server(config).serve()
        else:
            await grpc_server.wait_for_termination()
    finally:
        stop.set()
        await grpc_server.stop(grace=1)


def main(argv: list[str] | None = None) -> None:
    args, ignored = parse_args(sys.argv[1:] if argv is None else argv)
    if ignored:
        print("tfserving-standin: ignoring (not emulated): " + " ".join(ignored), flush=True)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
