"""The `tf-alexnet` command line: argument parsing only; the work is done by the modules.

tf-alexnet summary  [--variant V] [--input-shape 224,224,1] [--classes 10]
tf-alexnet train    [--preset P] [--config FILE] [flags] [--run-dir DIR] [--overwrite]
tf-alexnet evaluate RUN_DIR_OR_MODEL [--output-dir DIR] [--batch-size N] [data flags]
tf-alexnet export   RUN_DIR_OR_MODEL [--base-path models] [--name alexnet] [--version N]
tf-alexnet predict  IMAGE... --model models/alexnet [--top-k 5] [--json]
tf-alexnet serve    [--model-base-path models] [--host 127.0.0.1] [--port 8000]
tf-alexnet --version

The settings flags are derived from the declarations in `tf_alexnet.specs` and
`tf_alexnet.config`. `--help` and `--version` import no TensorFlow; commands that need it start
it quietly (see `tf_alexnet.startup`).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any, NoReturn

from tf_alexnet import config as config_lib
from tf_alexnet import contract, startup
from tf_alexnet._version import __version__
from tf_alexnet.errors import ClusterError, UserError, missing_tensorflow
from tf_alexnet.specs import Augmentation, DataSpec, Spec

PROG = "tf-alexnet"


@dataclasses.dataclass(frozen=True)
class ConfigFlag:
    """One command-line flag for one declared setting (`key` is dotted for `augment.*`)."""

    flag: str
    key: str
    kind: Any  # bool means --flag / --no-flag
    help: str


def declared_flags(spec: type[Spec], names: Sequence[str], prefix: str = "") -> list[ConfigFlag]:
    """Flags for the fields `names` of `spec`: name, type and help all come from the field."""
    flags = []
    for name in names:
        field = spec.model_fields[name]
        annotation = field.annotation
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        help_text = field.description or name
        if typing.get_origin(annotation) is typing.Literal:
            choices = typing.get_args(annotation)
            help_text += f": {', '.join(map(str, choices))}"
            annotation = type(choices[0])
        if typing.get_origin(annotation) is typing.Annotated:  # a Path
            annotation = typing.get_args(annotation)[0]
        flag = "--" + name.replace("_", "-")
        flags.append(ConfigFlag(flag, prefix + name, annotation, help_text))
    return flags


_TRAINING_ONLY_DATA = ("train_examples",)  # a data setting that evaluation and export ignore
DATA_FLAGS = declared_flags(
    DataSpec, [n for n in DataSpec.model_fields if n not in _TRAINING_ONLY_DATA]
)
_NOT_TRAINING = {*DataSpec.model_fields, "augment"}  # data flags; augmentation flags
TRAIN_FLAGS = declared_flags(DataSpec, _TRAINING_ONLY_DATA) + declared_flags(
    config_lib.TrainConfig,
    [n for n in config_lib.TrainConfig.model_fields if n not in _NOT_TRAINING],
)
AUGMENT_FLAGS = declared_flags(Augmentation, list(Augmentation.model_fields), prefix="augment.")


def _add_config_flags(parser: argparse.ArgumentParser, title: str, flags: list[ConfigFlag]) -> None:
    group = parser.add_argument_group(title)
    for flag in flags:
        if flag.kind is bool:
            group.add_argument(
                flag.flag,
                dest=flag.key,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=flag.help,
            )
        else:
            group.add_argument(
                flag.flag,
                dest=flag.key,
                type=flag.kind,
                default=argparse.SUPPRESS,
                metavar=flag.key.split(".")[-1].upper(),
                help=flag.help,
            )


def _add_config_source(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    presets = [config_lib.AUTO_PRESET, *config_lib.PRESETS]
    parser.add_argument(
        "--preset",
        default=default,
        choices=presets,
        help="the training recipe to start from (a set of settings, not pretrained weights): "
        "chapter (the d2l chapter), quick, cpu or gpu; auto picks chapter when TensorFlow "
        f"sees a GPU and cpu otherwise (default: {default})",
    )
    parser.add_argument("--config", help="a .toml or .json file of settings (over the preset)")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line mistakes: `PROG CMD: error: ... (see PROG CMD --help)`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="AlexNet for TensorFlow/Keras.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

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
    _add_config_flags(train, "data settings", DATA_FLAGS)
    _add_config_flags(train, "training settings", TRAIN_FLAGS)
    _add_config_flags(train, "augmentation settings (training images only)", AUGMENT_FLAGS)
    train.add_argument(
        "--run-dir", help="where the run is written (default runs/PRESET, the resolved preset)"
    )
    train.add_argument("--overwrite", action="store_true", help="replace a finished run")

    evaluate = commands.add_parser("evaluate", help="test-split report of a run or .keras model")
    evaluate.add_argument("target", help="a run directory or a .keras file")
    evaluate.add_argument("--output-dir", help="where the report goes (default: beside the model)")
    evaluate.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    _add_config_source(evaluate, default="chapter")
    _add_config_flags(evaluate, "data settings (for a .keras file; a run has its own)", DATA_FLAGS)

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
    _add_config_flags(export, "data settings (where the sample images come from)", DATA_FLAGS)

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


def overrides_from(args: argparse.Namespace, flags: list[ConfigFlag]) -> dict[str, Any]:
    """The config keys the user set on the command line (dotted keys become nested)."""
    overrides: dict[str, Any] = {}
    for flag in flags:
        if hasattr(args, flag.key):
            value = getattr(args, flag.key)
            if "." in flag.key:
                table, name = flag.key.split(".")
                overrides.setdefault(table, {})[name] = value
            else:
                overrides[flag.key] = value
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
    from tf_alexnet.train import train

    preset = args.preset
    if preset == config_lib.AUTO_PRESET:
        preset = config_lib.auto_preset()
        print(_auto_preset_note(preset), flush=True)
    config = config_lib.resolve(
        preset, args.config, overrides_from(args, DATA_FLAGS + TRAIN_FLAGS + AUGMENT_FLAGS)
    )
    run_dir = args.run_dir or str(pathlib.Path("runs") / preset)
    train(config, run_dir, overwrite=args.overwrite)
    return 0


def _auto_preset_note(preset: str) -> str:
    if preset == "chapter":
        return "Preset auto: a GPU is available, so `chapter` (the d2l network at 224 px)."
    return (
        "Preset auto: no GPU here, so `cpu` (the mini variant at 28 px, 10 epochs). The chapter's "
        "d2l network at 224 px takes hours per epoch on a CPU: pass --preset chapter to run it "
        "anyway, or --preset quick for a 2-epoch trial."
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from tf_alexnet.evaluate import evaluate, format_report
    from tf_alexnet.export import resolve_source
    from tf_alexnet.run_dir import RunDir

    model_path, _ = resolve_source(args.target)
    target = pathlib.Path(args.target)
    overrides = overrides_from(args, DATA_FLAGS)
    if target.is_dir():  # a run: its own data settings, then the flags
        config = RunDir(target).load_config().replace(**overrides)
        output_dir = args.output_dir or target
    else:
        config = config_lib.resolve(args.preset, args.config, overrides)
        output_dir = args.output_dir or target.parent
    report = evaluate(model_path, config, output_dir, batch_size=args.batch_size)
    print(format_report(report))
    print(f"Report: {pathlib.Path(output_dir) / 'evaluation.json'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from tf_alexnet.export import export
    from tf_alexnet.run_dir import RunDir
    from tf_alexnet.sources import sample_images

    if args.sample_images:
        images = [pathlib.Path(p).read_bytes() for p in args.sample_images if _exists(p)]
    else:
        run = RunDir(pathlib.Path(args.source))
        base = run.load_config() if run.is_run() else config_lib.TrainConfig()
        config = base.replace(**overrides_from(args, DATA_FLAGS))
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
        startup.start_tensorflow()  # the local backend runs the model in process
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
    startup.set_log_level()
    try:
        if args.command != "serve":  # serve starts it only for its local backend
            startup.start_tensorflow()
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
