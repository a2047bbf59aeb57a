"""The `tf-alexnet` command line: each command's handler calls the modules that do the work.

tf-alexnet summary  [--variant V] [--input-shape 224,224,1] [--classes 10]
tf-alexnet train    [--preset P] [--config FILE] [flags] [--run-dir DIR] [--overwrite]
tf-alexnet evaluate RUN_DIR|MODEL|EXPORT [--output-dir DIR] [--batch-size N] [data flags]
tf-alexnet export   RUN_DIR_OR_MODEL [--base-path models] [--name alexnet] [--version N]
tf-alexnet predict  IMAGE|FOLDER|-... --model models/alexnet [--top-k 5] [--json]
tf-alexnet serve    [--model-base-path models] [--host 127.0.0.1] [--port 8000]
tf-alexnet --version

The parser and its flags are in `tf_alexnet.cli_parser`. `--help` and `--version` import no
TensorFlow; commands that need it start it quietly (see `tf_alexnet.startup`).

Exit status: 0 on success; 2 for a mistake in what was asked (an unknown flag or setting, a
missing or unreadable file or folder, images that do not decode), with one line
`tf-alexnet: error: ...`; 1 when the machine fails the command (the file system refuses a write,
memory runs out, a worker is lost), also in one line; 130 and 143 on Ctrl-C and SIGTERM. A
closed standard output (`tf-alexnet summary | head -1`) ends the command quietly with status
141, 128 + SIGPIPE, as a shell reports a command that SIGPIPE killed (`cat big | head`): no
message, since the reader has gone, and a status that `set -o pipefail` still sees.
"""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import io
import os
import pathlib
import re
import signal
import sys
from collections.abc import Sequence
from typing import Any

from tf_alexnet import config as config_lib
from tf_alexnet import startup
from tf_alexnet.cli_parser import (
    AUGMENT_FLAGS,
    DATA_FLAGS,
    EVALUATE_DEFAULT_PRESET,
    EVALUATE_RUN_DATA_FLAGS,
    PROG,
    TRAIN_FLAGS,
    build_parser,
    overrides_from,
    parse_arguments,
)
from tf_alexnet.errors import (
    ClusterError,
    MissingServeExtra,
    Terminated,
    UserError,
    missing_tensorflow,
)
from tf_alexnet.interrupts import caused_by_interrupt, raise_if_signalled, stop_on_signals


def run_summary(args: argparse.Namespace) -> int:
    from tf_alexnet.model import AlexNet, format_summary
    from tf_alexnet.variants import reference_input

    input_shape, classes = reference_input(args.variant)
    model = AlexNet(
        input_shape=args.input_shape or input_shape,
        classes=args.classes or classes,
        variant=args.variant,
        width=args.width,
        test_time_flip=args.test_time_flip,
    )
    print(format_summary(model))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from tf_alexnet.train import train

    preset = args.preset
    if preset == config_lib.AUTO_PRESET:
        preset = config_lib.auto_preset()
        print(config_lib.auto_preset_note(preset), flush=True)
    config = config_lib.resolve(
        preset, args.config, overrides_from(args, DATA_FLAGS + TRAIN_FLAGS + AUGMENT_FLAGS)
    )
    run_dir = args.run_dir or str(pathlib.Path("runs") / preset)
    train(config, run_dir, overwrite=args.overwrite)
    return 0


def run_data_config(
    target: str,
    preset: str = "chapter",
    file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> config_lib.TrainConfig:
    """`run_dir.source_config`, and for a run recorded with a relative image folder (runs
    trained before the paths were made absolute) that does not exist from here, one line
    saying so and what to do."""
    from tf_alexnet.run_dir import RunDir, source_config

    config = source_config(target, preset, file, overrides)
    folder = config.image_folder
    given = "image_folder" in (overrides or {})
    if (
        not given
        and folder
        and not os.path.isabs(folder)
        and not os.path.isdir(folder)
        and RunDir(pathlib.Path(target)).is_run()
    ):
        raise UserError(
            f"The run {target!r} records the image folder {folder!r} relative to the directory "
            f"it was trained in, and there is no {folder!r} here ({os.getcwd()}). Run the "
            "command from that directory, or pass --image-folder with the folder's path."
        )
    return config


def refuse_a_folder_of_runs(target: str) -> None:
    """One line naming the runs in `target` when it is a folder of run directories (`runs/`,
    where `train` puts them by default) rather than one run or model: `predict --model runs`
    said only "No exported SavedModel at 'runs'", and `export runs` "not a run directory".
    """
    from tf_alexnet.exported import ExportedModel
    from tf_alexnet.run_dir import RunDir

    path = pathlib.Path(target)
    if not path.is_dir() or RunDir(path).is_run():
        return
    try:
        runs = sorted(child.name for child in path.iterdir() if RunDir(child).is_run())
    except OSError:  # unreadable: the command's own check says so
        return
    if not runs:
        return
    try:
        ExportedModel.find(path)
        return  # an export after all (its version folders are no runs)
    except UserError:
        pass
    shown = ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
    raise UserError(
        f"{target!r} is not a run directory but a folder of them ({shown}): give one, "
        f"e.g. {str(path / runs[0])!r}."
    )


def evaluation_source(target: str) -> tuple[pathlib.Path, pathlib.Path]:
    """What `evaluate` reads and where its report goes by default: a run directory's model and
    the run (also when given as the file); another `.keras` file and `evaluation-STEM` beside
    it (two models of one folder wrote over each other's report, and a run's `final.keras`
    over the report of its `best.keras`); an exported model folder's version and
    `./evaluation-NAME-VERSION` (the models folder is what TF Serving reads: nothing is added)."""
    from tf_alexnet.exported import ExportedModel, models_hint
    from tf_alexnet.run_dir import RunDir, resolve_source

    refuse_a_folder_of_runs(target)
    path = pathlib.Path(target)
    # A run's model without `resolve_source`'s metrics: they are not used here, and its note
    # on an earlier report would come before the report that replaces it.
    if RunDir(path).is_run():
        return RunDir(path).model_path(), path
    if not path.is_dir():
        model_path, _ = resolve_source(target)
        run = RunDir(path.parent)
        own = path.name in (run.best_model.name, run.final_model.name) and run.is_run()
        if own and run.model_path().samefile(path):  # the model `evaluate RUN_DIR` scores
            return model_path, path.parent
        return model_path, path.parent / f"evaluation-{path.stem}"
    try:
        version = ExportedModel.find(path).path
    except UserError:
        raise UserError(
            f"{target!r} is neither a run directory (no config.json) nor an exported model "
            f"folder (no saved_model.pb in it or in a numbered version folder).{models_hint(path)}"
        ) from None
    return version, pathlib.Path(f"evaluation-{version.parent.name}-{version.name}")


def run_settings_refused(args: argparse.Namespace) -> list[str]:
    """The flags of `evaluate RUN_DIR` that would change the run's own data settings: the
    split fractions, the seed, the dataset, --config and a --preset other than the default.
    The run's test split is the one its config.json sets apart from its training images;
    only where its data is now (--image-folder, --data-dir, --manual-dir) may be given."""
    refused = [
        flag.flag
        for flag in DATA_FLAGS
        if hasattr(args, flag.key) and flag.key not in EVALUATE_RUN_DATA_FLAGS
    ]
    if args.config is not None:
        refused.append("--config")
    if args.preset != EVALUATE_DEFAULT_PRESET:
        refused.append("--preset")
    return refused


def run_evaluate(args: argparse.Namespace) -> int:
    from tf_alexnet.evaluate import evaluate, format_report
    from tf_alexnet.run_dir import RunDir, in_use_by_a_training, refuse_unwritable

    model_path, default_output = evaluation_source(args.target)
    of_run = RunDir(pathlib.Path(args.target)).is_run()
    if of_run and (refused := run_settings_refused(args)):
        # They moved the test split onto training images, and the report over the run's
        # evaluation.json (which export copies into its metadata); --config was ignored.
        verb = "applies" if len(refused) == 1 else "apply"
        raise UserError(
            f"evaluate RUN_DIR uses the run's own data settings (config.json); "
            f"{', '.join(refused)} {verb} to a .keras file or an export."
        )
    run = RunDir(model_path.parent)  # a run's model (RUN_DIR or RUN_DIR/best.keras)
    if run.is_run() and in_use_by_a_training(run.root):
        print(
            f"Note: {str(run.root)!r} is still training: this report describes its "
            f"{model_path.name} as of now.",
            flush=True,
        )
    config = run_data_config(
        args.target, args.preset, args.config, overrides_from(args, DATA_FLAGS)
    )
    output_dir = args.output_dir or default_output
    # Before the model and the data are loaded and evaluated: the report was refused last.
    if args.output_dir:
        where = "--output-dir"
    else:
        where = "The run directory" if of_run else "The report folder"
    refuse_unwritable(output_dir, where, "Pass --output-dir with a writable folder.")

    def show(report: dict[str, Any]) -> None:  # before it is written: a failed write loses none
        print(format_report(report), flush=True)

    evaluate(
        model_path, config, output_dir, batch_size=args.batch_size, on_report=show, of_run=of_run
    )
    print(f"Report: {pathlib.Path(output_dir) / 'evaluation.json'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from tf_alexnet.export import ExportMismatch, export
    from tf_alexnet.run_dir import refuse_unwritable
    from tf_alexnet.sources import load_source, sample_images

    refuse_a_folder_of_runs(args.source)
    # Before the model and the sample images are loaded and the SavedModel built.
    refuse_unwritable(
        pathlib.Path(args.base_path) / args.name,
        "The models folder",
        "Pass --model-base-path with a writable folder.",
    )
    overrides = overrides_from(args, DATA_FLAGS)
    # The data named on the command line names the classes (with or without --sample-images);
    # else export finds the run's names, as predict does.
    data_given = bool(overrides.keys() & {"image_folder", "dataset"})
    config = None
    if data_given or not args.sample_images:
        config = run_data_config(args.source, overrides=overrides)
    if args.sample_images:
        images = [_sample_image(path) for path in args.sample_images]
    else:
        assert config is not None
        images = sample_images(config.data_spec())
    class_names = load_source(config.data_spec()).class_names if config and data_given else None
    try:
        result = export(
            args.source,
            args.base_path,
            args.name,
            args.version,
            sample_images=images,
            class_names=class_names,
        )
    except ExportMismatch as err:  # a failure of the export, not a mistake in the command
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    print(
        f"Exported version {result.version} to {result.path} "
        f"(max |difference| to Keras {difference_text(result.max_abs_difference)})"
    )
    return 0


DIFFERENCE_FLOOR = 1e-12
"""Below it, `export`'s max |difference| is printed as "< 1e-12": a float64 reference against
float32 outputs, which resolve about 1e-7 of their size, gives numbers such as 1.8e-199 there,
rounding noise. The export's metadata.json keeps the exact number."""


def difference_text(value: float) -> str:
    """`export`'s max |difference| to Keras as its line prints it (`DIFFERENCE_FLOOR`)."""
    if value == 0:
        return "0"
    if value < DIFFERENCE_FLOOR:
        return f"< {DIFFERENCE_FLOOR:.0e}"
    return f"{value:.1e}"  # nan too: "nan"


def _sample_image(path: str) -> bytes:
    """The bytes of an image file given to `export --sample-images`, checked to decode."""
    from tf_alexnet.sources import image_problem

    if not pathlib.Path(path).is_file():
        raise UserError(f"No image file at {path!r}.")
    data = pathlib.Path(path).read_bytes()
    if problem := image_problem(data):
        raise UserError(f"The sample image {path!r} is {problem}.")
    return data


def run_predict(args: argparse.Namespace) -> int:
    import json

    from tf_alexnet.predict import format_predictions, iter_predictions, list_images, to_json
    from tf_alexnet.sources import skipped_notice

    refuse_a_folder_of_runs(args.model)
    images, skipped = list_images(args.images)
    if notice := skipped_notice(skipped):
        print(notice, file=sys.stderr)
    predictions = []
    for prediction in iter_predictions(images, args.model, args.top_k):
        predictions.append(prediction)
        if args.json:  # one document, written at the end
            continue
        if prediction.error:
            print(f"{PROG}: error: {prediction.image}: {prediction.error}", file=sys.stderr)
        else:  # as each batch is scored, not after the last
            print(format_predictions([prediction]), flush=True)
    if args.json:
        print(json.dumps(to_json(predictions), indent=2))
        for prediction in predictions:
            if prediction.error:
                print(f"{PROG}: error: {prediction.image}: {prediction.error}", file=sys.stderr)
    # A file that is missing or no image is a mistake in what was asked (status 2), as for
    # the other commands; the images that could be read are answered all the same.
    return 2 if any(p.error for p in predictions) else 0


SERVE_ENTRY_POINT = ("tf_alexnet.commands", "serve")
"""Where `serve` comes from: the serving package registers it (this package never imports it)."""


def run_serve(args: argparse.Namespace) -> int:
    group, name = SERVE_ENTRY_POINT
    found = importlib.metadata.entry_points(group=group, name=name)
    try:
        serve = next(iter(found)).load()
    except StopIteration:  # the serving package is not installed
        raise UserError(str(MissingServeExtra())) from None
    except ImportError as err:  # it is, without its dependencies
        missing = err if isinstance(err, MissingServeExtra) else MissingServeExtra(err)
        raise UserError(str(missing)) from None
    serve(
        host=args.host,
        port=args.port,
        model_base_path=args.model_base_path,
        model_name=args.model_name,
    )
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
    _print_file_names_as_given()
    parser = build_parser()
    args = parse_arguments(parser, argv)
    startup.set_log_level()
    try:
        if other_backend := startup.keras_on_tensorflow():
            print(
                f"{PROG}: note: KERAS_BACKEND={other_backend} is set; the {PROG} commands run "
                "Keras on TensorFlow.",
                file=sys.stderr,
            )
        with stop_on_signals():
            try:
                if args.command != "serve":  # serve starts it only for its local backend
                    startup.start_tensorflow()
                status = COMMANDS[args.command](args)
                raise_if_signalled()  # one whose first raise a finalizer swallowed
            except Exception as err:
                if caused_by_interrupt(err):
                    raise KeyboardInterrupt from err
                raise
            sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
            return status
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
    except BrokenPipeError:  # the reader of stdout has gone (`| head`): nothing left to say
        _detach_stdout()
        return 128 + signal.SIGPIPE
    except OSError as err:  # the file system said no: a folder that cannot be made, a full disk
        where = f": '{err.filename}'" if err.filename else ""
        print(f"{PROG}: error: {err.strerror or err}{where}.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as err:
        if (said := refused_write(err) or out_of_memory(err, args.command)) is None:
            raise
        print(f"{PROG}: error: {said}", file=sys.stderr)
        return 1


OUT_OF_MEMORY_HINTS = {
    "summary": "a smaller --input-shape or --width",
    "train": "a smaller --image-size, --batch-size or --width",
    "evaluate": "a smaller --batch-size",
}
"""What lowers the memory a command needs, by command."""


def out_of_memory(err: BaseException, command: str) -> str | None:
    """One line for a command that ran out of memory (TensorFlow's ResourceExhaustedError,
    Python's MemoryError), naming what ran out and what to lower; None for other errors.

    TensorFlow is looked up, not imported: an error raised before it started is not its.
    """
    if isinstance(err, MemoryError):
        what = "the process ran out of memory"
    else:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(err, tf.errors.ResourceExhaustedError):
            return None
        what = _op_message(err)
    hint = OUT_OF_MEMORY_HINTS.get(command, "a smaller model or fewer images at once")
    return f"Out of memory: {what}. Try {hint}."


WRITE_REFUSALS = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT))
"""What TensorFlow's file writers say when the file system refuses a write."""


def refused_write(err: BaseException) -> str | None:
    """One line for a TensorFlow file writer refused by the file system (a full disk, a
    file-size limit, a quota), naming the file; None for other errors. TensorFlow raises
    these as errors of several classes (ResourceExhaustedError, OutOfRangeError, ...)."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(err, tf.errors.OpError):
        return None
    what = _op_message(err)
    if (reason := next((r for r in WRITE_REFUSALS if r in what), None)) is None:
        return None
    return f"{reason}: {what.split(';')[0].strip()}."


def _op_message(err: Any) -> str:
    """A TensorFlow error's first line without its function, op and device names."""
    lines = (err.message or "").strip().splitlines() or [type(err).__name__]
    what = re.sub(r"\{\{[^}]*\}\}|\[Op:.*|/job:[^ ]*/device:", "", lines[0])
    return re.sub(r"\s+", " ", what).strip().rstrip(".")


def _print_file_names_as_given() -> None:
    """A file name that is not UTF-8 (Python holds its bytes as surrogates) is printed as its
    own bytes, as `ls` prints it: under a strict UTF-8 locale (en_US.UTF-8 on a desktop),
    `predict photos/` failed whole on one such name ("'utf-8' codec can't encode character
    '\\udcff' ... surrogates not allowed"). Python does this itself only in the C locale."""
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        sys.stdout.reconfigure(errors="surrogateescape")


def _detach_stdout() -> None:
    """Points stdout at /dev/null, so that the interpreter's last flush at exit finds no closed
    pipe to write to (it would print "Exception ignored ... BrokenPipeError")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test's capture): nothing to flush at exit
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
