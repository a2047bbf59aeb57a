"""The `tf-alexnet` argument parser: the commands, their flags, and the overrides they give.

The settings flags are derived from the declarations in `tf_alexnet.specs` and
`tf_alexnet.config`. No TensorFlow import: `--help` answers without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any, NoReturn

from tf_alexnet import config as config_lib
from tf_alexnet import contract
from tf_alexnet._version import __version__
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
        help_text = (field.description or name).replace("%", "%%")  # argparse formats help
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
                type=_path if flag.key in config_lib.DATA_PATHS else flag.kind,
                default=argparse.SUPPRESS,
                metavar=flag.key.split(".")[-1].upper(),
                help=flag.help,
            )


PRESET_HELP = (
    "the training recipe to start from (a set of settings, not pretrained weights): "
    "chapter (the d2l chapter), chapter-improved, quick, cpu or gpu; auto picks chapter "
    "when TensorFlow sees a GPU and cpu otherwise (default: {default})"
)
EVALUATE_PRESET_HELP = (
    "for a .keras file only (a run directory reads its own config.json): the preset whose "
    "data settings (dataset, split fractions, seed) choose the test split (default: {default}; "
    "auto: chapter when TensorFlow sees a GPU, else cpu)"
)


def _add_config_source(
    parser: argparse.ArgumentParser, default: str = "auto", help_text: str = PRESET_HELP
) -> None:
    presets = [config_lib.AUTO_PRESET, *config_lib.PRESETS]
    parser.add_argument(
        "--preset", default=default, choices=presets, help=help_text.format(default=default)
    )
    parser.add_argument(
        "--config", type=_path, help="a .toml or .json file of settings (over the preset)"
    )


class _Parser(argparse.ArgumentParser):
    """argparse with one-line mistakes: `PROG CMD: error: ... (see PROG CMD --help)`.

    No abbreviated flags (`--mod` for `--model`): a script that used one would break, or
    change meaning, the day a flag sharing its prefix is added.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


EVALUATE_DEFAULT_PRESET = "chapter"
"""`evaluate --preset`'s default: any other is a choice that `evaluate RUN_DIR` refuses."""
EVALUATE_RUN_DATA_FLAGS = config_lib.DATA_PATHS
"""The data settings `evaluate RUN_DIR` takes: where the run's data is now, not how it splits."""
EVALUATE_DATA_TITLE = (
    "data settings (for a .keras file or an export; a run has its own, and takes only "
    "--image-folder, --data-dir and --manual-dir, to say where its data is now)"
)

_TAKES_THE_RUN = "takes the run directory as its argument:"
TARGET_FLAG_HINTS = {
    ("evaluate", "--run-dir"): f"evaluate {_TAKES_THE_RUN} {PROG} evaluate RUN_DIR",
    ("export", "--run-dir"): f"export {_TAKES_THE_RUN} {PROG} export RUN_DIR",
    ("predict", "--run-dir"): "predict reads a run directory with --model RUN_DIR",
}
"""Flags of one command tried on another, and what that command takes instead."""


def parse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """`parser.parse_args(argv)`, with a mistaken flag reported against the command's own help
    (`tf-alexnet evaluate: error: ... (see tf-alexnet evaluate --help)`) and, for a flag of
    another command, what this one takes instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands(parser)
    command = next((word for word in argv if not word.startswith("-")), None)
    for word in argv:
        hint = TARGET_FLAG_HINTS.get((command or "", word.split("=", 1)[0]))
        if command in commands and hint:
            commands[command].error(f"unrecognized argument {word}; {hint}")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if hasattr(args, "image_folder") and hasattr(args, "dataset"):
        # The dataset is ignored with an image folder: `--image-folder DIR --dataset mnist`
        # trained on DIR without a word.
        commands[args.command].error(
            "--image-folder and --dataset name two sources of data; pass one of them"
        )
    return args


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The command parsers of a parser built by `build_parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise ValueError("The parser has no commands.")


def build_parser() -> argparse.ArgumentParser:
    """`tf-alexnet` and its commands (`args.command` names the one given)."""
    parser = _Parser(prog=PROG, description="AlexNet for TensorFlow/Keras.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    summary = commands.add_parser("summary", help="print the per-layer output shapes")
    summary.add_argument(
        "--variant", default="d2l", help=f"one of {', '.join(contract.VARIANTS)} (default d2l)"
    )
    summary.add_argument(
        "--width",
        type=float,
        default=1.0,
        help="multiplier of the layer widths (conv filters, fc6/fc7 units; default 1.0)",
    )
    summary.add_argument(
        "--input-shape",
        default=None,
        type=_shape,
        help="HEIGHT,WIDTH,CHANNELS (default 224,224,1; 227,227,3 for paper)",
    )
    summary.add_argument(
        "--classes",
        type=number_in(int, 1),
        default=None,
        help="classes (default 10; 1000 for paper)",
    )
    summary.add_argument(
        "--test-time-flip",
        action="store_true",
        help="with the layers that score each image and its mirror image (the cpu preset's)",
    )

    train = commands.add_parser("train", help="train a model into a run directory")
    _add_config_source(train)
    _add_config_flags(train, "data settings", DATA_FLAGS)
    _add_config_flags(train, "training settings", TRAIN_FLAGS)
    _add_config_flags(train, "augmentation settings (training images only)", AUGMENT_FLAGS)
    train.add_argument(
        "--run-dir",
        type=_path,
        help="where the run is written (default runs/PRESET, the resolved preset)",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run in --run-dir, finished or not (a killed run's finished epochs "
        "too), and train anew; without it an unfinished run resumes and a finished one is "
        "refused",
    )

    evaluate = commands.add_parser(
        "evaluate", help="test-split report of a run, a .keras model or an exported model"
    )
    evaluate.add_argument(
        "target",
        type=_path,
        help="a run directory, a .keras file or an exported model (BASE/NAME[/VERSION])",
    )
    evaluate.add_argument(
        "--output-dir",
        type=_path,
        help="where the report goes (default: beside the model; for an export, "
        "./evaluation-NAME-VERSION)",
    )
    evaluate.add_argument(
        "--batch-size",
        type=number_in(int, 1),
        default=256,
        help="evaluation batch size (default 256)",
    )
    # chapter, not auto: its data settings hold out validation as the run's own did (cpu's
    # validation_fraction 0 would move a folder's seeded test split)
    _add_config_source(evaluate, default=EVALUATE_DEFAULT_PRESET, help_text=EVALUATE_PRESET_HELP)
    _add_config_flags(evaluate, EVALUATE_DATA_TITLE, DATA_FLAGS)

    export = commands.add_parser("export", help="export a SavedModel for TF Serving")
    export.add_argument(
        "source", type=_path, help="a run directory (its best model) or a .keras file"
    )
    # Named as `serve` names them (and TF Serving's --model_base_path, --model_name); the short
    # names are the earlier spellings, kept.
    export.add_argument(
        "--model-base-path",
        "--base-path",
        dest="base_path",
        metavar="PATH",
        type=_path,
        default="models",
        help="TF Serving's MODEL_BASE_PATH: the models folder `serve` reads (default models)",
    )
    export.add_argument(
        "--model-name",
        "--name",
        dest="name",
        metavar="NAME",
        default=contract.MODEL_NAME,
        help=f"TF Serving's MODEL_NAME (default {contract.MODEL_NAME})",
    )
    export.add_argument(
        "--version",
        type=number_in(int, 1, contract.MAX_VERSION),
        help="version number, up to 2**63-1 as TF Serving reads it (default: the next one)",
    )
    export.add_argument(
        "--sample-images",
        nargs="+",
        type=_path,
        metavar="IMAGE",
        help="images for validation and warmup (default: the first test images of the data)",
    )
    _add_config_flags(export, "data settings (where the sample images come from)", DATA_FLAGS)

    predict = commands.add_parser("predict", help="classify image files")
    predict.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        type=_path,
        help=f"{contract.IMAGE_FORMATS} files, or folders of them (read at any depth); "
        "- reads one image from standard input",
    )
    predict.add_argument(
        "--model",
        required=True,
        type=_path,
        help="an exported folder (BASE/NAME[/VERSION]), a run directory or a .keras file",
    )
    predict.add_argument(
        "--top-k",
        type=number_in(int, 1),
        default=contract.TOP_K,
        help=f"classes per image (default {contract.TOP_K})",
    )
    predict.add_argument("--json", action="store_true", help="print JSON")

    serve = commands.add_parser("serve", help="serve exported models over HTTP (FastAPI)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=number_in(int, 0, 65535),
        default=8000,
        help="port to listen on (default 8000)",
    )
    serve.add_argument(
        "--model-base-path",
        type=_path,
        help="exported models folder (default $TF_ALEXNET_SERVE_MODEL_BASE_PATH, else models)",
    )
    serve.add_argument(
        "--model-name",
        help=f"model name (default $TF_ALEXNET_SERVE_MODEL_NAME, else {contract.MODEL_NAME})",
    )
    return parser


def _path(text: str) -> str:
    """An argparse type for a file or folder: any text but none (`--run-dir=`, or `--run-dir
    "$UNSET"`, fell back to the default or meant the current directory)."""
    if not text:
        raise argparse.ArgumentTypeError("should not be empty")
    return text


def _shape(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHT,WIDTH,CHANNELS such as 224,224,1, got {text!r}"
        ) from None
    return values


def number_in(
    kind: type[int] | type[float], low: float, high: float | None = None, what: str = ""
) -> typing.Callable[[str], Any]:
    """An argparse type: a finite `kind` from `low` to `high` (no upper bound when None), else
    a one-line usage error naming `what` it should be (default: "an integer from 1 to 9", "an
    integer >= 1"). The CLI's flags and the benchmarks' share it."""
    if not what:
        noun = "an integer" if kind is int else "a number"
        what = f"{noun} from {low} to {high}" if high is not None else f"{noun} >= {low}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        too_high = high is not None and value is not None and value > high
        if value is None or not low <= value < float("inf") or too_high:  # `not`: NaN too
            raise argparse.ArgumentTypeError(f"should be {what}. Received: {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


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
