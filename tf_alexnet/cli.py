"""The `tf-alexnet` command line: argument parsing only; the work is done by the modules.

tf-alexnet summary  [--variant V] [--input-shape 224,224,1] [--classes 10]
tf-alexnet train    [--preset P] [--config FILE] [flags] [--run-dir DIR] [--overwrite]
tf-alexnet evaluate RUN_DIR_OR_MODEL [--output-dir DIR] [data flags]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from tf_alexnet import contract
from tf_alexnet.errors import ClusterError, UserError, missing_tensorflow

PROG = "tf-alexnet"

# (flag, config key, type, help); type bool means --flag / --no-flag.
DATA_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--dataset", "dataset", str, "TFDS dataset name (default fashion_mnist)"),
    ("--data-dir", "data_dir", str, f"TFDS data folder (env {contract.ENV_DATA_DIR})"),
    (
        "--manual-dir",
        "manual_dir",
        str,
        f"folder with the dataset's original files, for offline builds "
        f"(env {contract.ENV_MANUAL_DIR})",
    ),
    ("--image-folder", "image_folder", str, "train on a folder with one subfolder per class"),
    ("--validation-fraction", "validation_fraction", float, "held-out share of train"),
    ("--test-fraction", "test_fraction", float, "test share when the source has no test split"),
    ("--seed", "seed", int, "seed for splits, shuffling, augmentation and weights"),
]
TRAIN_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--train-examples", "train_examples", int, "use only this many training images"),
    ("--variant", "variant", str, f"one of {', '.join(contract.VARIANTS)}"),
    ("--image-size", "image_size", int, "model input height and width"),
    ("--channels", "channels", int, "1 (grayscale) or 3 (RGB)"),
    ("--dropout", "dropout", float, "dropout after fc6 and fc7"),
    ("--epochs", "epochs", int, "number of epochs"),
    ("--batch-size", "batch_size", int, "batch size per replica"),
    ("--learning-rate", "learning_rate", float, "initial learning rate"),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--nesterov", "nesterov", bool, "Nesterov momentum"),
    ("--weight-decay", "weight_decay", float, "decoupled weight decay"),
    ("--schedule", "schedule", str, "constant, cosine, step or plateau"),
    ("--step-epochs", "step_epochs", int, "with --schedule step: divide the LR by 10 every N"),
    ("--warmup-epochs", "warmup_epochs", float, "linear LR warm-up from 0, then the schedule"),
    ("--label-smoothing", "label_smoothing", float, "label smoothing"),
    ("--flip", "augment.flip", bool, "random horizontal flips"),
    ("--crop", "augment.crop", str, "random crops: none, pad or resize"),
    ("--crop-fraction", "augment.crop_fraction", float, "crop side / enlarged side"),
    ("--brightness", "augment.brightness", float, "max brightness delta"),
    ("--contrast", "augment.contrast", float, "contrast factor range 1 +/- x"),
    ("--saturation", "augment.saturation", float, "saturation range 1 +/- x (RGB)"),
    ("--hue", "augment.hue", float, "max hue delta (RGB)"),
    ("--pca-lighting", "augment.pca_lighting", float, "paper's PCA colour noise stddev (RGB)"),
    ("--shuffle-buffer", "shuffle_buffer", int, "shuffle buffer, in examples"),
    ("--cache", "cache", bool, "cache decoded examples in memory"),
    ("--deterministic", "deterministic", bool, "keep tf.data element order deterministic"),
    (
        "--strategy",
        "strategy",
        str,
        "auto, default, one-device, mirrored or multiworker (reads TF_CONFIG)",
    ),
    (
        "--collective-timeout",
        "collective_timeout",
        float,
        "multiworker: seconds to wait for the other workers in a collective op (0: forever)",
    ),
    ("--cpu-devices", "cpu_devices", int, "split the CPU into N logical devices"),
    ("--mixed-precision", "mixed_precision", str, "off, bf16, fp16 or auto"),
    ("--jit-compile", "jit_compile", bool, "XLA-compile the train step"),
    ("--steps-per-execution", "steps_per_execution", int, "batches per tf.function call"),
]


def _add_config_flags(
    parser: argparse.ArgumentParser, flags: list[tuple[str, str, Any, str]]
) -> None:
    for flag, key, kind, help_text in flags:
        if kind is bool:
            parser.add_argument(
                flag,
                dest=key,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag,
                dest=key,
                type=kind,
                default=argparse.SUPPRESS,
                metavar=key.split(".")[-1].upper(),
                help=help_text,
            )


def _add_config_source(parser: argparse.ArgumentParser) -> None:
    try:
        from tf_alexnet.config import PRESETS
    except ModuleNotFoundError as err:  # no TensorFlow (the api image): `serve` still works
        if not missing_tensorflow(err):
            raise
        PRESETS = {}
    parser.add_argument(
        "--preset",
        default="chapter",
        choices=sorted(PRESETS) or None,
        help="starting configuration (default: chapter)",
    )
    parser.add_argument("--config", help="a .toml or .json file of settings (over the preset)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="AlexNet for TensorFlow/Keras.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    summary = commands.add_parser("summary", help="print the per-layer output shapes")
    summary.add_argument("--variant", default="d2l", help=f"one of {', '.join(contract.VARIANTS)}")
    summary.add_argument(
        "--input-shape",
        default=None,
        type=_shape,
        help="HEIGHT,WIDTH,CHANNELS (default 224,224,1; 227,227,3 for paper)",
    )
    summary.add_argument(
        "--classes", type=int, default=None, help="classes (default 10; 1000 for paper)"
    )

    train = commands.add_parser("train", help="train a model into a run directory")
    _add_config_source(train)
    _add_config_flags(train, DATA_FLAGS + TRAIN_FLAGS)
    train.add_argument("--run-dir", help="where the run is written (default runs/PRESET)")
    train.add_argument("--overwrite", action="store_true", help="replace a finished run")

    evaluate = commands.add_parser("evaluate", help="test-split report of a run or .keras model")
    evaluate.add_argument("target", help="a run directory or a .keras file")
    evaluate.add_argument("--output-dir", help="where the report goes (default: beside the model)")
    evaluate.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    _add_config_source(evaluate)
    _add_config_flags(evaluate, DATA_FLAGS)

    export = commands.add_parser("export", help="export a SavedModel for TF Serving")
    export.add_argument("source", help="a run directory (its best model) or a .keras file")
    export.add_argument("--base-path", default="models", help="TF Serving's MODEL_BASE_PATH")
    export.add_argument("--name", default=contract.MODEL_NAME, help="TF Serving's MODEL_NAME")
    export.add_argument("--version", type=int, help="version number (default: the next one)")
    export.add_argument(
        "--sample-images",
        nargs="+",
        metavar="IMAGE",
        help="images for validation and warmup (default: the first test images of the data)",
    )
    _add_config_flags(export, DATA_FLAGS)

    predict = commands.add_parser("predict", help="classify image files")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG, GIF or BMP files")
    predict.add_argument(
        "--model", required=True, help="an exported folder (BASE/NAME[/VERSION]) or a .keras file"
    )
    predict.add_argument("--top-k", type=int, default=contract.TOP_K, help="classes per image")
    predict.add_argument("--json", action="store_true", help="print JSON")

    serve = commands.add_parser("serve", help="serve exported models over HTTP (FastAPI)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument(
        "--model-base-path", help="exported models folder (env TF_ALEXNET_SERVE_MODEL_BASE_PATH)"
    )
    serve.add_argument("--model-name", help="model name (env TF_ALEXNET_SERVE_MODEL_NAME)")
    return parser


def _shape(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHT,WIDTH,CHANNELS such as 224,224,1, got {text!r}"
        ) from None
    return values


def overrides_from(
    args: argparse.Namespace, flags: list[tuple[str, str, Any, str]]
) -> dict[str, Any]:
    """The config keys the user set on the command line (dotted keys become nested)."""
    overrides: dict[str, Any] = {}
    for _, key, _, _ in flags:
        if hasattr(args, key):
            value = getattr(args, key)
            if "." in key:
                table, name = key.split(".")
                overrides.setdefault(table, {})[name] = value
            else:
                overrides[key] = value
    return overrides


def run_summary(args: argparse.Namespace) -> int:
    from tf_alexnet.model import AlexNet

    variant = args.variant
    default_shape = (227, 227, 3) if variant == "paper" else (224, 224, 1)
    model = AlexNet(
        input_shape=args.input_shape or default_shape,
        classes=args.classes or (1000 if variant == "paper" else contract.NUM_CLASSES),
        variant=variant,
    )
    print(format_summary(model))
    return 0


def format_summary(model: Any) -> str:
    """One line per layer: name, type, output shape, parameters; then the total."""
    rows = [("layer", "type", "output shape", "params")]
    for layer in model.layers:
        shape = "x".join(str(d) for d in layer.output.shape[1:])
        rows.append((layer.name, type(layer).__name__, shape, f"{layer.count_params():,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}"
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"Total parameters: {model.count_params():,}")
    return "\n".join(lines)


def run_train(args: argparse.Namespace) -> int:
    from tf_alexnet import config as config_lib
    from tf_alexnet.train import train

    config = config_lib.resolve(
        args.preset, args.config, overrides_from(args, DATA_FLAGS + TRAIN_FLAGS)
    )
    run_dir = args.run_dir or str(pathlib.Path("runs") / args.preset)
    train(config, run_dir, overwrite=args.overwrite)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from tf_alexnet import config as config_lib
    from tf_alexnet.evaluate import evaluate, format_report
    from tf_alexnet.run_dir import RunDir

    target = pathlib.Path(args.target)
    overrides = overrides_from(args, DATA_FLAGS)
    if target.is_dir():
        run = RunDir(target)
        if not run.is_run():
            raise UserError(f"{str(target)!r} is not a run directory (no config.json).")
        config = config_lib.from_dict(config_lib.merge(config_lib.read_file(run.config), overrides))
        model_path, output_dir = run.model_path(), args.output_dir or target
    elif target.is_file():
        config = config_lib.resolve(args.preset, args.config, overrides)
        model_path, output_dir = target, args.output_dir or target.parent
    else:
        raise UserError(f"No run directory or model file at {str(target)!r}.")
    report = evaluate(model_path, config, output_dir, batch_size=args.batch_size)
    print(format_report(report))
    print(f"Report: {pathlib.Path(output_dir) / 'evaluation.json'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from tf_alexnet import config as config_lib
    from tf_alexnet.data import sample_images
    from tf_alexnet.export import export
    from tf_alexnet.run_dir import RunDir

    if args.sample_images:
        images = [pathlib.Path(p).read_bytes() for p in args.sample_images if _exists(p)]
    else:
        run = RunDir(pathlib.Path(args.source))
        values = config_lib.read_file(run.config) if run.is_run() else {}
        config = config_lib.from_dict(config_lib.merge(values, overrides_from(args, DATA_FLAGS)))
        images = sample_images(config.data_spec())
    result = export(args.source, args.base_path, args.name, args.version, sample_images=images)
    print(
        f"Exported version {result.version} to {result.path} "
        f"(max |difference| to Keras {result.max_abs_difference:.1e})"
    )
    return 0


def _exists(path: str) -> bool:
    if not pathlib.Path(path).is_file():
        raise UserError(f"No image file at {path!r}.")
    return True


def run_predict(args: argparse.Namespace) -> int:
    import json

    from tf_alexnet.predict import format_predictions, predict_files, to_json

    predictions = predict_files(args.images, args.model, args.top_k)
    if args.json:
        print(json.dumps(to_json(predictions), indent=2))
    elif any(not p.error for p in predictions):
        print(format_predictions(predictions))
    for prediction in predictions:
        if prediction.error:
            print(f"{PROG}: error: {prediction.image}: {prediction.error}", file=sys.stderr)
    return 1 if any(p.error for p in predictions) else 0


def run_serve(args: argparse.Namespace) -> int:
    try:
        import pydantic
        import uvicorn
        from tf_alexnet_serving import Settings, create_app
        from tf_alexnet_serving.backends import local_model_folder
    except ImportError as err:
        raise UserError(
            f"Serving needs the 'serve' extra: pip install 'tf-alexnet[serve]' ({err})."
        ) from None

    overrides = {"model_base_path": args.model_base_path, "model_name": args.model_name}
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        raise UserError(
            f"Invalid serving setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None
    if settings.resolved_backend() == "local":
        local_model_folder(settings)  # fail early, with one line, when nothing is exported
    # The facade logs each request as one JSON line (REQUEST_LOG); uvicorn's own would repeat it.
    uvicorn.run(create_app(settings), host=args.host, port=args.port, access_log=False)
    return 0


COMMANDS = {
    "summary": run_summary,
    "train": run_train,
    "evaluate": run_evaluate,
    "export": run_export,
    "predict": run_predict,
    "serve": run_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `tf-alexnet`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ModuleNotFoundError as err:
        if not missing_tensorflow(err):
            raise
        print(
            f"{PROG}: error: `{PROG} {args.command}` needs TensorFlow ({err.name} is not "
            "installed; the facade-only `api` image serves but does not train or export).",
            file=sys.stderr,
        )
        return 2
    except (UserError, ValueError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except ClusterError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
