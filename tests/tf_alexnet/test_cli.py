"""The command line: summaries, and one clear line with a non-zero exit for user mistakes."""

import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
import tomllib

import pytest

import tf_alexnet
from tests.conftest import REPO, run_cli
from tf_alexnet import cli, contract, startup
from tf_alexnet.cli import COMMANDS, main
from tf_alexnet.config import TrainConfig
from tf_alexnet.specs import Augmentation


def test_summary_prints_the_chapter_table(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "54x54x96" in out and "5x5x256" in out
    assert "Total parameters: 46,764,746" in out


def test_summary_paper_and_mini(capsys):
    assert main(["summary", "--variant", "paper"]) == 0
    out = capsys.readouterr().out
    assert "norm1" in out and "6x6x256" in out and "Total parameters: 60,965,224" in out
    assert main(["summary", "--variant", "mini", "--input-shape", "28x28x1"]) == 0
    assert "Total parameters: 1,006,250" in capsys.readouterr().out
    assert main(["summary", "--variant", "mini", "--input-shape", "28x28x1", "--width", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "7x7x144" in out and "Total parameters: 2,258,170" in out
    mini = ["summary", "--variant", "mini", "--input-shape", "28x28x1"]
    assert main([*mini, "--test-time-flip"]) == 0
    out = capsys.readouterr().out
    assert "mirror_twins" in out and "twin_mean" in out and "Total parameters: 1,006,250" in out
    assert main(mini) == 0
    assert "mirror_twins" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "--variant", "vgg"], "Received: variant='vgg'"),
        (["summary", "--input-shape", "28,28,1"], "at least 67x67"),
        (["summary", "--width", "0"], "`width` should be a positive number. Received: width=0.0"),
        (["train", "--width", "inf", "--run-dir", "{tmp}/r"], "a finite number in (0, 4.0]"),
        (["train", "--variant", "vgg", "--run-dir", "{tmp}/r"], "Received: variant='vgg'"),
        (["train", "--image-folder", "{tmp}/nowhere", "--run-dir", "{tmp}/r"], "does not exist"),
        (
            [
                "train",
                "--preset",
                "quick",
                "--image-size",
                "8",
                "--variant",
                "d2l",
                "--run-dir",
                "{tmp}/r",
            ],
            "at least 67x67",
        ),
        (["train", "--config", "{tmp}/missing.toml"], "No configuration file"),
        (["evaluate", "{tmp}/nothing-here"], "No run directory or model file"),
        (
            [
                "train",
                "--preset",
                "quick",
                "--strategy",
                "mirrored",
                "--jit-compile",
                "--run-dir",
                "{tmp}/r",
            ],
            "jit_compile is not supported with MirroredStrategy over CPU devices",
        ),
        (
            ["train", "--preset", "quick", "--hue", "0.1", "--run-dir", "{tmp}/r"],
            "needs RGB images",
        ),
    ],
)
def test_user_mistakes_get_one_line(argv, message, tmp_path, capsys):
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tf-alexnet: error: ") and message in err
    assert len(err.splitlines()) == 1


def test_unknown_dataset_in_a_real_process(tmp_path):
    result = run_cli(
        "train",
        "--dataset",
        "no_such_dataset_xyz",
        "--run-dir",
        str(tmp_path / "run"),
        env={"TF_ALEXNET_DATA_DIR": str(tmp_path / "tfds")},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "tf-alexnet: error: Unknown TFDS dataset 'no_such_dataset_xyz'."
    )


def test_python_dash_m_runs_the_command_line(tmp_path):
    """`python -m tf_alexnet` said "No module named tf_alexnet.__main__" (the way to run it
    when the `tf-alexnet` script is not on PATH, e.g. a venv's python called directly)."""
    import subprocess
    import sys

    from tf_alexnet import __version__

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "tf_alexnet", *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,  # the installed package, not a folder of the repository
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )

    version = run("--version")
    assert (version.returncode, version.stdout) == (0, f"tf-alexnet {__version__}\n")
    mistake = run("predict")
    assert mistake.returncode == 2 and "Traceback" not in mistake.stderr
    assert mistake.stderr.splitlines() == [
        "tf-alexnet predict: error: the following arguments are required: IMAGE, --model (see "
        "tf-alexnet predict --help)"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "many"], "tf-alexnet train: error: argument --epochs: invalid int"),
        (["train", "--preset", "nope"], "tf-alexnet train: error: argument --preset: invalid"),
        (["frobnicate"], "tf-alexnet: error: argument COMMAND: invalid choice: 'frobnicate'"),
        ([], "tf-alexnet: error: the following arguments are required: COMMAND"),
        (
            ["summary", "--classes", "0"],  # was taken as "the default" and printed 10 classes
            "tf-alexnet summary: error: argument --classes: should be an integer >= 1. "
            "Received: '0'",
        ),
        (
            ["serve", "--port", "70000"],  # was a traceback (OverflowError from bind)
            "tf-alexnet serve: error: argument --port: should be an integer from 0 to 65535. "
            "Received: '70000'",
        ),
        (
            ["evaluate", "run", "--batch-size", "0"],  # was a traceback from tf.data
            "tf-alexnet evaluate: error: argument --batch-size: should be an integer >= 1. "
            "Received: '0'",
        ),
        (  # named the top-level help, which does not list a command's flags
            ["train", "--epochs", "1", "--bogus"],
            "tf-alexnet train: error: unrecognized arguments: --bogus "
            "(see tf-alexnet train --help)",
        ),
        (  # train's flag, after `train --run-dir run`
            ["evaluate", "--run-dir", "run"],
            "tf-alexnet evaluate: error: unrecognized argument --run-dir; evaluate takes the run "
            "directory as its argument: tf-alexnet evaluate RUN_DIR",
        ),
        (  # was "the following arguments are required: source"
            ["export", "--run-dir=run"],
            "tf-alexnet export: error: unrecognized argument --run-dir=run; export takes the run "
            "directory as its argument: tf-alexnet export RUN_DIR",
        ),
        (
            ["predict", "shirt.png", "--run-dir", "run"],
            "tf-alexnet predict: error: unrecognized argument --run-dir; predict reads a run "
            "directory with --model RUN_DIR",
        ),
        *(  # the image folder won, and the dataset was ignored without a word
            (
                [command, "run", "--image-folder", "shirts", "--dataset", "mnist"],
                f"tf-alexnet {command}: error: --image-folder and --dataset name two sources "
                "of data; pass one of them",
            )
            for command in ("evaluate", "export")
        ),
        (
            ["train", "--dataset=mnist", "--epochs", "1", "--image-folder=shirts"],
            "tf-alexnet train: error: --image-folder and --dataset name two sources of data; "
            "pass one of them",
        ),
        (  # was checked only once the model had loaded, as "`top_k` should be >= 1"
            ["predict", "shirt.png", "--model", "run", "--top-k", "0"],
            "tf-alexnet predict: error: argument --top-k: should be an integer >= 1. Received: '0'",
        ),
    ],
)
def test_argparse_mistakes_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message), err  # no usage block
    assert err.rstrip().endswith("--help)")


@pytest.mark.slow
def test_train_and_evaluate_from_the_command_line(fashion_mnist, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train",
        "--preset",
        "quick",
        "--train-examples",
        "256",
        "--validation-fraction",
        "0.01",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--run-dir",
        str(run_dir),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done: best val_accuracy" in result.stdout
    switch = os.environ.get(startup.ONEDNN, "1")  # the commands' default on x86 (oneDNN)
    if platform.machine().lower() in {"x86_64", "amd64"}:
        onednn = json.loads((run_dir / "metrics.json").read_text())["onednn"]
        assert onednn == {"in_use": switch != "0", startup.ONEDNN: switch}
    result = run_cli("evaluate", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout and "on 10,000 images" in result.stdout
    assert (run_dir / "evaluation.json").is_file() and (run_dir / "confusion_matrix.png").is_file()
    again = run_cli("train", "--preset", "quick", "--run-dir", str(run_dir))
    assert again.returncode == 2 and "holds a finished run" in again.stderr


def _fresh_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_help_and_version_answer_without_tensorflow():
    code = (
        "import sys\n"
        "from tf_alexnet.cli import COMMANDS, main\n"
        "for argv in [['--version'], ['--help'], *[[c, '--help'] for c in COMMANDS]]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, argv\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False False"
    assert f"tf-alexnet {tf_alexnet.__version__}" in result.stdout


def test_version_is_fast():
    """CPU time of a whole `tf-alexnet --version` process (robust on a busy machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "tf_alexnet.cli", "--version"], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert (
        result.returncode == 0 and result.stdout.strip() == f"tf-alexnet {tf_alexnet.__version__}"
    )
    assert cpu < 1.0, f"{cpu:.2f} s of CPU"
    assert wall < 5.0, f"{wall:.2f} s"  # lenient: other jobs share this machine's cores


def test_the_version_lives_in_one_place():
    assert tf_alexnet.__version__ == importlib.metadata.version("tf-alexnet")
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "version" in tomllib.loads(pyproject)["project"]["dynamic"]
    assert "tf_alexnet._version.__version__" in pyproject


def test_synopsis_lists_every_command():
    readme = (REPO / "README.md").read_text()
    synopsis = readme.split("## Command line", 1)[1].split("```", 2)[1]
    for command in COMMANDS:
        assert f"tf-alexnet {command}" in cli.__doc__, command
        assert f"tf-alexnet {command}" in synopsis, command


@pytest.mark.slow
def test_tensorflow_start_up_is_quiet_unless_asked():
    argv = (
        "from tf_alexnet.cli import main\n"
        "main(['summary', '--variant', 'mini', '--input-shape', '28,28,1'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run(
        [sys.executable, "-c", argv], capture_output=True, text=True, timeout=300, env=env
    )
    assert quiet.returncode == 0 and "Total parameters: 1,006,250" in quiet.stdout
    assert quiet.stderr.strip() == "", quiet.stderr[-2000:]
    loud = _fresh_python(argv, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.returncode == 0
    assert any(startup.NOISE.fullmatch(line) for line in loud.stderr.splitlines()), loud.stderr
    # Asking for less (3: fatal only) printed the lines the filter drops: some ignore the level.
    quieter = _fresh_python(argv, env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert quieter.returncode == 0 and quieter.stderr.strip() == "", quieter.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(
    platform.machine().lower() not in {"x86_64", "amd64"},
    reason="oneDNN's switch is turned on for x86 CPUs only",
)
def test_commands_run_onednn_kernels_unless_told_not_to(monkeypatch):
    """TensorFlow 2.21 leaves oneDNN off on AVX2-only CPUs, where it trains d2l 1.4x faster."""
    code = (
        "from tf_alexnet import startup\nstartup.start_tensorflow()\nprint(startup.onednn_in_use())"
    )
    unset = {k: v for k, v in os.environ.items() if k != startup.ONEDNN}
    for value, in_use in ((None, "True"), ("0", "False"), ("1", "True")):
        env = {**unset, startup.ONEDNN: value} if value else unset
        found = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
        )
        assert found.returncode == 0, found.stderr[-2000:]
        assert found.stdout.split() == [in_use], (value, found.stdout, found.stderr[-2000:])
    # Serving keeps TensorFlow's own choice (oneDNN slowed one-image calls on AVX2 CPUs).
    kept = subprocess.run(
        [sys.executable, "-c", code.replace("start_tensorflow()", "start_tensorflow(onednn=False)")
         + "\nimport os\nprint(os.environ.get(startup.ONEDNN))"],
        capture_output=True, text=True, timeout=300, env=unset,
    )  # fmt: skip
    assert kept.returncode == 0 and kept.stdout.split()[-1] == "None", kept.stderr[-2000:]
    chosen: dict[str, str] = {startup.ONEDNN: "0"}
    startup.prefer_onednn(chosen)
    assert chosen == {startup.ONEDNN: "0"}  # the user's choice stands
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    elsewhere: dict[str, str] = {}
    startup.prefer_onednn(elsewhere)
    assert elsewhere == {}  # TensorFlow's own default on other CPUs


@pytest.mark.parametrize(
    ("flags", "env", "onednn", "pool"),
    [
        ({"avx2", "fma"}, {}, False, "true"),  # AVX2-only EPYC: Eigen on malloc, so a pool
        ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, {}, True, None),  # Zen 4/5: oneDNN's
        ({"avx2", "avx512f", "amx_tile", "amx_bf16"}, {}, True, None),  # Xeon with AMX: oneDNN's
        ({"avx2", "avx_vnni"}, {}, True, None),
        ({"avx2"}, {"TF_ENABLE_ONEDNN_OPTS": "1"}, True, None),  # what `train` runs on AVX2
        ({"avx512_vnni"}, {"TF_ENABLE_ONEDNN_OPTS": "False"}, False, "true"),  # oneDNN off
        ({"avx512_vnni"}, {"TF_ENABLE_ONEDNN_OPTS": "maybe"}, True, None),  # unread: TF's rule
        ({"avx2"}, {"TF_CPU_ALLOCATOR_USE_BFC": "false"}, False, "false"),  # the user's choice
        ({"avx2"}, {"TF_CPU_ALLOCATOR_USE_BFC": ""}, False, ""),
    ],
)
def test_a_memory_pool_where_onednn_brings_none(monkeypatch, flags, env, onednn, pool):
    from tf_alexnet import hardware

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(
        hardware, "read_cpu_info", lambda: hardware.CpuInfo("a CPU", frozenset(flags))
    )
    assert hardware.onednn_expected(env=env) is onednn
    chosen = dict(env)
    assert startup.prefer_memory_pool(chosen) is (pool == "true" and startup.MEMORY_POOL not in env)
    assert chosen.get(startup.MEMORY_POOL) == pool
    assert {k: v for k, v in chosen.items() if k != startup.MEMORY_POOL} == {
        k: v for k, v in env.items() if k != startup.MEMORY_POOL
    }  # nothing else changes
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")  # not measured: TF's default
    elsewhere = dict(env)
    assert not startup.prefer_memory_pool(elsewhere) and elsewhere == env


@pytest.mark.slow
def test_commands_run_keras_on_tensorflow_whatever_keras_backend_says():
    """A user of Keras's PyTorch backend (`KERAS_BACKEND=torch` in the shell) got an
    AttributeError traceback ('Functional' object has no attribute 'distribute_strategy')."""
    summary = ["summary", "--variant", "mini", "--input-shape", "28,28,1"]
    quiet = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def run(code: str, backend: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", f"import sys\n{code}sys.exit(main({summary!r}))\n"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**quiet, "KERAS_BACKEND": backend},
        )

    told = run("from tf_alexnet.cli import main\n", "torch")
    assert told.returncode == 0 and "Total parameters: 1,006,250" in told.stdout
    assert told.stderr == (
        "tf-alexnet: note: KERAS_BACKEND=torch is set; the tf-alexnet commands run Keras on "
        "TensorFlow.\n"
    )
    assert run("from tf_alexnet.cli import main\n", "tensorflow").stderr == ""
    # Called from Python after Keras started on another backend: one line, no traceback.
    pytest.importorskip("torch", reason="PyTorch is not installed: pip install torch")
    refused = run("import keras\nfrom tf_alexnet.cli import main\n", "torch")
    assert refused.returncode == 2, refused.stderr[-2000:]
    # The last line; `import keras` may print start-up lines of its own before main runs.
    assert refused.stderr.splitlines()[-1] == (
        "tf-alexnet: error: The tf-alexnet commands run Keras on TensorFlow, and this process "
        "imported Keras on 'torch'. Run them in a process of their own."
    )
    assert "Traceback" not in refused.stderr


def test_filtered_stderr_keeps_everything_else(capfd):
    with startup.filtered_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\nsomething that matters\n")  # fmt: skip
        print("a Python warning", file=sys.stderr)
    err = capfd.readouterr().err  # (under capfd, Python's own stderr bypasses file descriptor 2)
    assert sorted(err.splitlines()) == ["a Python warning", "something that matters"]


def test_every_setting_has_its_flag():
    flags = {f.key: f for f in cli.DATA_FLAGS + cli.TRAIN_FLAGS + cli.AUGMENT_FLAGS}
    fields = set(TrainConfig.model_fields) - {"augment"}
    assert fields | {f"augment.{name}" for name in Augmentation.model_fields} == set(flags)
    args = cli.build_parser().parse_args(
        ["train", "--no-flip", "--crop", "pad", "--epochs", "3", "--channels", "3"]
    )
    overrides = cli.overrides_from(args, cli.DATA_FLAGS + cli.TRAIN_FLAGS + cli.AUGMENT_FLAGS)
    assert overrides == {"augment": {"flip": False, "crop": "pad"}, "epochs": 3, "channels": 3}
    help_text = subprocess.run(
        [sys.executable, "-m", "tf_alexnet.cli", "train", "--help"], capture_output=True, text=True
    ).stdout
    assert "d2l, paper, mini" in help_text and "not pretrained weights" in help_text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dropout", "1.5"], "`dropout` should be in [0, 1). Received: dropout=1.5"),
        (["--validation-fraction", "2"], "Received: validation_fraction=2.0"),
        (["--crop", "zoom"], "Received: augment.crop='zoom'"),
        (["--seed", "-3"], "`seed` should be in [0, 4294967295]. Received: seed=-3"),
    ],
)
def test_flag_values_are_checked_by_the_declarations(flags, message, tmp_path, capsys):
    argv = ["train", "--preset", "quick", *flags, "--run-dir", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tf-alexnet: error: {message}" or (err.endswith(message) and "\n" not in err)
    assert not (tmp_path / "r").exists()


def test_serve_is_a_plugin_of_the_serving_package(monkeypatch):
    """Imports run one way (serving -> core): the core CLI finds `serve` by entry point."""
    import argparse
    import pathlib

    from tf_alexnet.errors import UserError

    core = pathlib.Path(cli.__file__).parent
    importers = [p.name for p in core.rglob("*.py") if "tf_alexnet_serving" in p.read_text()]
    assert importers == []
    (entry_point,) = importlib.metadata.entry_points(group="tf_alexnet.commands", name="serve")
    assert entry_point.load().__module__ == "tf_alexnet_serving.cli"
    # Without the serving package installed, one line says what to install.
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])
    args = argparse.Namespace(host="127.0.0.1", port=0, model_base_path=None, model_name=None)
    with pytest.raises(UserError, match=r"pip install 'tf-alexnet\[serve\]'"):
        cli.run_serve(args)


def test_every_option_with_a_default_says_it_in_its_help():
    """`serve --host/--port`, `predict --top-k`, `export --model-base-path/--model-name`,
    `summary --variant` and `evaluate --batch-size` had defaults that only the README told."""
    import argparse

    from tf_alexnet.cli_parser import build_parser

    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    silent = []
    for name, command in commands.choices.items():
        for action in command._actions:
            takes_value = action.nargs != 0 and action.option_strings
            # Settings' flags have no default of their own: the preset gives it.
            has_default = action.default not in (None, argparse.SUPPRESS)
            if takes_value and has_default and "default" not in (action.help or ""):
                silent.append(f"{name} {action.option_strings[0]}")
    assert silent == []
    serve_help = commands.choices["serve"].format_help()
    assert "(default 8000)" in serve_help and "else models" in serve_help


def test_flag_help_may_hold_a_percent_sign():
    """Help comes from the settings' descriptions; argparse must not read '%' as a format."""
    import argparse

    from pydantic import Field

    from tf_alexnet.cli_parser import declared_flags
    from tf_alexnet.specs import Spec

    class Odd(Spec):
        share: float = Field(0.5, description="50% of the time")

    (flag,) = declared_flags(Odd, ["share"])
    parser = argparse.ArgumentParser()
    parser.add_argument(flag.flag, help=flag.help)
    assert "50% of the time" in parser.format_help()


def test_evaluate_a_run_whose_training_split_is_smaller_than_a_batch(tmp_path, capsys):
    """Evaluation reads the test split alone: a small folder trained at batch 4 evaluates at
    the evaluation batch of 256, and only training refuses a batch its split cannot fill."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            (tmp_path / "data" / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    (tmp_path / "data" / "c" / "scan.tiff").write_bytes(b"II*\x00")  # read by no decoder
    train = ["train", "--preset", "quick", "--image-folder", str(tmp_path / "data")]
    run = str(tmp_path / "run")
    assert main([*train, "--run-dir", str(tmp_path / "refused")]) == 2
    # 18 images, 6 a class: each class gives one to validation and one to the test split.
    assert "error: Only 12 training examples for a batch of 128: lower --batch-size" in (
        capsys.readouterr().err
    )
    skipped = (
        "Skipped 1 file(s) that are not JPEG, PNG, GIF, BMP or WebP images (1 .tiff), e.g. "
        f"{str(tmp_path / 'data' / 'c' / 'scan.tiff')!r}.\n"
    )
    assert main([*train, "--epochs", "1", "--batch-size", "4", "--run-dir", run]) == 0
    out = capsys.readouterr().out
    assert skipped in out and "28x28x1 inputs) on 12 training images (3 more for validation)" in out
    # Random RGB pixels, read in gray by the quick preset: said once, with the way out.
    assert out.count("pass --channels 3 to keep the colour.\n") == 1
    assert main(["evaluate", run]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "on 3 images" in out and skipped in out
    # Other data with another number of classes: an IndexError after the whole evaluation.
    (tmp_path / "data" / "c").rename(tmp_path / "c")
    assert main(["evaluate", run, "--image-folder", str(tmp_path / "data")]) == 2
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: The model {str(tmp_path / 'run' / 'best.keras')!r} has 3 classes, "
        f"but {str(tmp_path / 'data')!r} has 2 ('a', 'b'). Evaluate it on the data it was "
        "trained on (--image-folder DIR).\n"
    )


def test_an_export_is_evaluated_as_served(tmp_path, capsys, monkeypatch):
    """`tf-alexnet evaluate models/NAME` said "is not a run directory (no config.json)": the
    model a server answers with could not be tested. It is read through its pixels signature,
    its report goes to ./evaluation-NAME-VERSION (the models folder gains nothing), and its
    class names must be the data's."""
    import json

    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    for split, count in (("train", 8), ("test", 4)):
        for name in ("ant", "bee", "cow"):
            (data / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
                (data / split / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    folder = ["--image-folder", str(data)]
    run, base = str(tmp_path / "run"), tmp_path / "models"
    train = ["train", "--preset", "quick", *folder, "--epochs", "1", "--batch-size", "4"]
    assert main([*train, "--validation-fraction", "0", "--run-dir", run]) == 0
    assert main(["export", run, "--model-base-path", str(base), *folder]) == 0
    assert main(["evaluate", run]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    for target in (base / "alexnet", base / "alexnet" / "1"):
        assert main(["evaluate", str(target), *folder]) == 0, capsys.readouterr().err
        assert "on 12 images" in capsys.readouterr().out
        served = json.loads((tmp_path / "evaluation-alexnet-1" / "evaluation.json").read_text())
        keras = json.loads((tmp_path / "run" / "evaluation.json").read_text())
        assert served["confusion_matrix"] == keras["confusion_matrix"]
        assert served["loss"] == pytest.approx(keras["loss"], abs=1e-5)
    assert sorted(p.name for p in (base / "alexnet").iterdir()) == ["1"]
    for split in ("train", "test"):  # as many classes, one named otherwise
        (data / split / "cow").rename(data / split / "dog")
    assert main(["evaluate", str(base / "alexnet"), *folder]) == 2
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: The model {str(base / 'alexnet' / '1')!r} names class 2 'cow', but "
        f"{str(data)!r} names it 'dog'. Evaluate it on the data it was trained on "
        "(--image-folder DIR or --dataset NAME).\n"
    )
    assert main(["evaluate", str(base)]) == 2  # the models folder: which model to give
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: {str(base)!r} is neither a run directory (no config.json) nor an "
        "exported model folder (no saved_model.pb in it or in a numbered version folder). It "
        f"holds models (alexnet): give one, e.g. {str(base / 'alexnet')!r}.\n"
    )


@pytest.mark.parametrize(
    ("difference", "said"),
    [
        (1.8e-199, "< 1e-12"),
        (9.9e-13, "< 1e-12"),
        (0.0, "0"),
        (1e-12, "1.0e-12"),
        (3.2e-7, "3.2e-07"),
    ],
)
def test_export_prints_a_difference_below_float32s_resolution_as_such(
    difference, said, tmp_path, capsys, monkeypatch
):
    """`export` printed "(max |difference| to Keras 1.8e-199)": a float64 reference against
    float32 outputs, noise below float32's resolution (metadata.json keeps the number)."""
    import pathlib

    import numpy as np
    import tensorflow as tf

    from tf_alexnet import export as export_lib

    image = tmp_path / "sample.png"
    image.write_bytes(tf.io.encode_png(np.zeros((4, 4, 1), np.uint8)).numpy())

    def exported(source, base, name, version, **kwargs):
        return export_lib.ExportResult(pathlib.Path(base) / name / "1", 1, difference)

    monkeypatch.setattr(export_lib, "export", exported)
    base = tmp_path / "models"
    argv = ["export", str(tmp_path / "model.keras"), "--model-base-path", str(base)]
    assert main([*argv, "--sample-images", str(image)]) == 0
    assert capsys.readouterr().out == (
        f"Exported version 1 to {base / 'alexnet' / '1'} (max |difference| to Keras {said})\n"
    )
    assert cli.difference_text(float("nan")) == "nan"


@pytest.mark.slow
def test_unreadable_images_are_named_in_one_line(tmp_path, capsys):
    """TensorFlow's decoding error names no file and came as a traceback mid-epoch."""
    from tests.conftest import write_image_folder

    data = write_image_folder(tmp_path / "data", {"train": 6, "test": 2}, size=(20, 24))
    train = ["train", "--preset", "quick", "--image-folder", str(data), "--epochs", "1"]
    train += ["--batch-size", "4", "--validation-fraction", "0"]
    assert main([*train, "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    truncated = data / "test" / "b" / "1.png"
    truncated.write_bytes(truncated.read_bytes()[:100])
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: 1 of the 16 images cannot be read: {truncated} (a PNG file that "
        "could not be decoded (Invalid PNG data, size 100)). Remove or replace them, then run "
        "the command again.\n"
    )
    (data / "train" / "a" / "notes.png").write_text("not an image")
    assert main([*train, "--run-dir", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 of the 17 images cannot be read: " in err
    assert f"{data / 'train' / 'a' / 'notes.png'} (not a JPEG, PNG, GIF, BMP or WebP image)" in err
    assert f"{truncated} (a PNG file that could not be decoded (Invalid PNG data, size 100))" in err
    # A file deleted after it was listed (here: between listing and reading, by the source).
    from tf_alexnet import sources

    listing = sources.folder_source

    def listed_then_deleted(root, channels=3):
        source = listing(root, channels)
        (data / "train" / "a" / "notes.png").unlink()
        truncated.write_bytes(b"")  # and one emptied
        return source

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "folder_source", listed_then_deleted)
        assert main([*train, "--run-dir", str(tmp_path / "third")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 of the 17 images cannot be read: " in err
    assert f"{data / 'train' / 'a' / 'notes.png'} (No such file or directory)" in err


def test_file_system_refusals_are_one_line(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(contract.ENV_PROGRESS_SECONDS, "0")  # a line per evaluation step
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["export", str(trained_run), "--base-path", str(blocker / "models")]) == 2
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: The models folder '{blocker / 'models' / 'alexnet'}' cannot be "
        f"made: '{blocker}' is a file. Pass --model-base-path with a writable folder.\n"
    )
    assert main(["evaluate", str(trained_run), "--output-dir", str(blocker / "report")]) == 2
    out, err = capsys.readouterr()
    assert err == (
        f"tf-alexnet: error: --output-dir '{blocker / 'report'}' cannot be made: '{blocker}' "
        "is a file. Pass --output-dir with a writable folder.\n"
    )
    assert "evaluate: step" not in out  # refused before the test split is read


def test_a_closed_stdout_ends_the_command_quietly():
    """`tf-alexnet summary | head -1` said "tf-alexnet: error: Broken pipe." with status 1."""
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line is written
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tf_alexnet.cli", "summary", "--variant", "mini"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},  # quiet
        )
    finally:
        os.close(write)
    assert result.stderr == ""
    assert result.returncode == 128 + signal.SIGPIPE == 141


def test_a_file_tensorflow_may_not_write_is_one_line(monkeypatch, capsys):
    """`export` under a file-size limit (`ulimit -f`) ended in OutOfRangeError's traceback:
    TensorFlow's checkpoint writer names the refusal in its message, in whichever class."""
    import tensorflow as tf

    def too_large(args):  # as seen with `ulimit -f 2000`
        raise tf.errors.OutOfRangeError(
            None,
            None,
            "{{function_node __wrapped__SaveV2_dtypes_32_device_/job:localhost/replica:0/task:0"
            "/device:CPU:0}} models/alexnet/.tmp-1-27809@vm/variables/variables_temp/part-00000"
            "-of-00001.data-00000-of-00001.tempstate745; File too large [Op:SaveV2] name: ",
        )

    monkeypatch.setitem(COMMANDS, "export", too_large)
    assert main(["export", "runs/x"]) == 1
    assert capsys.readouterr().err == (
        "tf-alexnet: error: File too large: models/alexnet/.tmp-1-27809@vm/variables/"
        "variables_temp/part-00000-of-00001.data-00000-of-00001.tempstate745.\n"
    )


def test_running_out_of_memory_is_one_line(monkeypatch, capsys):
    """`train --image-size 5000` ended in ResourceExhaustedError's traceback."""
    import tensorflow as tf

    def exhausted(args):
        raise tf.errors.ResourceExhaustedError(
            None,
            None,
            "{{function_node __wrapped__MatMul_device_/job:localhost/replica:0/task:0/device:"
            "CPU:0}} OOM when allocating tensor with shape[25000000,512] and type float on "
            "/job:localhost/replica:0/task:0/device:CPU:0 by allocator cpu [Op:MatMul] name: ",
        )

    monkeypatch.setitem(COMMANDS, "train", exhausted)
    assert main(["train", "--preset", "quick"]) == 1
    assert capsys.readouterr().err == (
        "tf-alexnet: error: Out of memory: OOM when allocating tensor with shape[25000000,512] "
        "and type float on CPU:0 by allocator cpu. Try a smaller --image-size, --batch-size or "
        "--width.\n"
    )

    def memory_error(args):
        raise MemoryError

    monkeypatch.setitem(COMMANDS, "evaluate", memory_error)
    assert main(["evaluate", "runs/x"]) == 1
    assert capsys.readouterr().err == (
        "tf-alexnet: error: Out of memory: the process ran out of memory. Try a smaller "
        "--batch-size.\n"
    )

    def disk_full(args):  # TensorFlow's checkpoint writer, on a full disk (seen on a tmpfs)
        raise tf.errors.ResourceExhaustedError(
            None,
            None,
            "models/alexnet/.tmp-1-7655@vm/variables/variables_temp/part-00000-of-00001.data-"
            "00000-of-00001.tempstate123; No space left on device",
        )

    monkeypatch.setitem(COMMANDS, "export", disk_full)
    assert main(["export", "runs/x"]) == 1
    assert capsys.readouterr().err == (  # it said "Out of memory: ... Try a smaller model"
        "tf-alexnet: error: No space left on device: models/alexnet/.tmp-1-7655@vm/variables/"
        "variables_temp/part-00000-of-00001.data-00000-of-00001.tempstate123.\n"
    )

    def other_error(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(COMMANDS, "summary", other_error)
    with pytest.raises(RuntimeError, match="a bug"):  # other errors stay tracebacks
        main(["summary"])


def test_evaluate_help_says_what_its_preset_does():
    """`evaluate --help` described --preset as the training recipe, default chapter, beside
    train's default auto: evaluate reads only its data settings, and only for a .keras file."""
    from tf_alexnet.cli_parser import build_parser

    parser = build_parser()
    assert parser.parse_args(["evaluate", "model.keras"]).preset == "chapter"
    assert parser.parse_args(["train"]).preset == "auto"
    evaluate = cli_parser_commands(parser)["evaluate"]
    help_text = " ".join(evaluate.format_help().split())
    assert (
        "--preset {auto,chapter,chapter-improved,quick,cpu,gpu} for a .keras file only (a run "
        "directory reads its own config.json): the preset whose data settings (dataset, split "
        "fractions, seed) choose the test split (default: chapter; auto: chapter when "
        "TensorFlow sees a GPU, else cpu)"
    ) in help_text  # "auto picks ... (default: chapter)" read as if auto were the default
    assert "training recipe" not in help_text


def cli_parser_commands(parser):
    from tf_alexnet.cli_parser import _commands

    return _commands(parser)


def _image_folder(root, classes=("a", "b"), count=3, splits=("train", "test")):
    """Tiny random PNGs in `root/<split>/<class>/` (or `root/<class>/` when `splits` is ())."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for split in splits or ("",):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
                (folder / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


def _png_folders(root, counts, seed):
    """`counts[name]` random 12x12 RGB PNGs in each `root/name/` (a name may hold a `/`)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


def test_evaluate_prints_its_report_before_a_write_that_fails(tmp_path, capsys, monkeypatch):
    """On a read-only run directory the whole evaluation ran, then the write failed and the
    report was never printed."""
    import errno

    from tf_alexnet import AlexNet
    from tf_alexnet.run_dir import RunDir

    data = _image_folder(tmp_path / "data")
    model = tmp_path / "model" / "mini.keras"
    model.parent.mkdir()
    AlexNet(input_shape=(28, 28, 1), classes=2, variant="mini", width=0.25).save(model)

    def read_only(self, path, values):
        raise OSError(errno.EROFS, "Read-only file system", str(path) + ".tmp")

    monkeypatch.setattr(RunDir, "write_json", read_only)
    assert main(["evaluate", str(model), "--image-folder", str(data)]) == 1
    out, err = capsys.readouterr()
    assert "test accuracy" in out and "on 6 images" in out
    assert err == (
        "tf-alexnet: error: Read-only file system: "
        f"'{tmp_path / 'model' / 'evaluation-mini' / 'evaluation.json.tmp'}'.\n"
    )


def test_a_run_records_its_image_folder_absolute(tmp_path, capsys, monkeypatch):
    """`train --image-folder data/two` stored "data/two", so `evaluate` of the run from another
    directory said "The image folder 'data/two' does not exist"."""
    import json

    _image_folder(tmp_path / "project" / "data")
    run = tmp_path / "project" / "runs" / "r"
    monkeypatch.chdir(tmp_path / "project")
    train = ["train", "--preset", "quick", "--image-folder", "data", "--epochs", "1"]
    assert (
        main([*train, "--batch-size", "4", "--validation-fraction", "0", "--run-dir", "runs/r"])
        == 0
    )
    config = json.loads((run / "config.json").read_text())
    assert config["image_folder"] == str(tmp_path / "project" / "data")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0, capsys.readouterr().err
    assert "on 6 images" in capsys.readouterr().out
    # A run trained before: its relative folder is not here, and the way out is said.
    config["image_folder"] = "data"
    (run / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: The run {str(run)!r} records the image folder 'data' relative to "
        f"the directory it was trained in, and there is no 'data' here ({tmp_path}). Run the "
        "command from that directory, or pass --image-folder with the folder's path.\n"
    )
    assert main(["export", str(run), "--base-path", str(tmp_path / "models")]) == 2
    assert "records the image folder 'data' relative" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--image-folder", "project/data"]) == 0


def _fake_run(root, data, **settings):
    """A run directory without training: its config.json and an untrained `best.keras`."""
    import json

    from tf_alexnet import AlexNet
    from tf_alexnet import config as config_lib

    root.mkdir(parents=True)
    values = {**config_lib.PRESETS["quick"], "image_folder": str(data), **settings}
    (root / "config.json").write_text(json.dumps(config_lib.from_dict(values).to_dict()))
    AlexNet(input_shape=(28, 28, 1), classes=2, variant="mini", width=0.25).save(
        root / "best.keras"
    )
    return root


def test_an_empty_test_split_is_one_line(tmp_path, capsys, monkeypatch):
    """A run trained with --test-fraction 0 (and a .keras file or an export read with it)
    ended in numpy's "need at least one array to concatenate"."""
    from tf_alexnet.export import export

    data = _image_folder(tmp_path / "data", splits=())
    run = _fake_run(tmp_path / "run", data, test_fraction=0, validation_fraction=0)
    assert main(["evaluate", str(run)]) == 2
    assert capsys.readouterr().err == (
        "tf-alexnet: error: The run's data has no test split (test_fraction=0): "
        f"{str(data)!r} went to training. Train again with --test-fraction "
        "above 0 (e.g. 0.1), or pass --image-folder with a folder of train/ and test/ "
        "subfolders.\n"
    )
    assert sorted(p.name for p in run.iterdir()) == ["best.keras", "config.json"]
    no_test = ["--image-folder", str(data), "--test-fraction", "0"]
    base = tmp_path / "models"
    sample = [(data / "a" / "0.png").read_bytes()]
    export(run / "best.keras", base, sample_images=sample, class_names=["a", "b"])
    monkeypatch.chdir(tmp_path)
    for target in (run / "best.keras", base / "alexnet"):
        assert main(["evaluate", str(target), *no_test]) == 2
        assert capsys.readouterr().err == (
            f"tf-alexnet: error: The data {str(data)!r} has no test split (test_fraction=0). "
            "Pass --test-fraction above 0 (e.g. 0.1), or --image-folder with a folder of "
            "train/ and test/ subfolders.\n"
        )
    # 5% of 6 images drawn at random: none (class by class, one of each class of 3).
    few = ["--image-folder", str(data), "--test-fraction", "0.05", "--no-stratify"]
    assert main(["evaluate", str(run / "best.keras"), *few]) == 2
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: The test split of {str(data)!r} holds no image (test_fraction="
        "0.05). Use a larger --test-fraction or more images, or a folder with a test/ "
        "subfolder.\n"
    )
    assert not (tmp_path / "evaluation-alexnet-1").exists()


def test_evaluate_a_run_refuses_other_data_settings(tmp_path, capsys):
    """`evaluate RUN --test-fraction 0.5` moved the test split onto training images (and
    wrote the report over the run's evaluation.json); `--config` was ignored, even a missing
    file. The help said a run has its own data settings."""
    data = _image_folder(tmp_path / "data", splits=())
    run = str(_fake_run(tmp_path / "run", data))
    refused = "tf-alexnet: error: evaluate RUN_DIR uses the run's own data settings (config.json); "
    for flags, named in [
        (["--test-fraction", "0.5", "--output-dir", str(tmp_path / "out")], "--test-fraction"),
        (["--config", str(tmp_path / "missing.toml")], "--config"),
        (["--preset", "quick"], "--preset"),
        (["--seed", "1", "--validation-fraction", "0.2"], "--validation-fraction, --seed"),
    ]:
        assert main(["evaluate", run, *flags]) == 2
        verb = "apply" if "," in named else "applies"
        assert capsys.readouterr().err == (
            f"{refused}{named} {verb} to a .keras file or an export.\n"
        )
    assert not (tmp_path / "out").exists()
    from tf_alexnet.cli_parser import build_parser

    help_text = " ".join(cli_parser_commands(build_parser())["evaluate"].format_help().split())
    assert "a run has its own, and takes only --image-folder, --data-dir and --manual-dir" in (
        help_text
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--run-dir="],
        ["train", "--image-folder", ""],
        ["train", "--config="],
        ["evaluate", "run", "--output-dir="],
        ["evaluate", ""],
        ["export", "run", "--model-base-path="],
        ["export", "run", "--base-path", ""],
        ["export", "run", "--sample-images", "a.png", ""],
        ["predict", "shirt.png", "--model="],
        ["predict", "", "--model", "models/alexnet"],
        ["serve", "--model-base-path="],
    ],
)
def test_empty_paths_are_refused(argv, capsys):
    """`--run-dir=` trained into runs/PRESET, `export --model-base-path=` into ./alexnet/1,
    `predict --model=` read the current directory."""
    from tf_alexnet.cli_parser import build_parser, parse_arguments

    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(build_parser(), argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": should not be empty (see tf-alexnet " in err, err
    assert err.startswith(f"tf-alexnet {argv[0]}: error: argument ")


@pytest.mark.parametrize(
    ("argv", "unknown"),
    [
        (["predict", "shirt.png", "--model", "m", "--top", "3"], "--top"),
        (["train", "--pre", "quick"], "--pre"),
        (["evaluate", "run", "--out", "o"], "--out"),
        (["export", "run", "--mod", "models"], "--mod"),
    ],
)
def test_flags_are_never_abbreviated(argv, unknown, capsys):
    """`--mod`, `--top`, `--pre` were taken for the one flag they began: a flag added later
    with the same prefix would have broken the scripts that used them, or changed them."""
    from tf_alexnet.cli_parser import _Parser, build_parser, parse_arguments

    parser = build_parser()
    assert not parser.allow_abbrev
    assert all(isinstance(p, _Parser) for p in cli_parser_commands(parser).values())
    assert not any(p.allow_abbrev for p in cli_parser_commands(parser).values())
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(parser, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tf-alexnet {argv[0]}: error: unrecognized arguments: {unknown}"), err


def test_an_error_that_ctrl_c_caused_is_an_interruption(monkeypatch, capsys, request):
    """Ctrl-C during `export` ended in a traceback and status 1: pybind11's RuntimeError
    "... ORIGINAL InvalidArgumentError REPLACED BY KeyboardInterrupt" from
    tf.saved_model.load, or TensorFlow's "ImportError: initialization failed"."""
    import contextlib
    import signal as signals

    def replaced(args):
        raise RuntimeError(
            "pybind11::error_already_set: MISMATCH of original and normalized active exception "
            "types: ORIGINAL InvalidArgumentError REPLACED BY KeyboardInterrupt: <EMPTY MESSAGE>"
        )

    def swallowed(args):  # SIGINT came; the KeyboardInterrupt became another error
        with contextlib.suppress(KeyboardInterrupt):
            signals.raise_signal(signals.SIGINT)
        raise ImportError("initialization failed")

    def chained(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise ValueError("a library's error") from err

    # A background job (CI's `bash .ci/run &`) starts with SIGINT ignored, and Python leaves it
    # so: Python's own handler here, as in a terminal, and the job's put back afterwards.
    previous = signals.signal(signals.SIGINT, signals.default_int_handler)
    request.addfinalizer(lambda: signals.signal(signals.SIGINT, previous))
    for command in (replaced, swallowed, chained):
        monkeypatch.setitem(COMMANDS, "export", command)
        assert main(["export", "runs/x"]) == 130, command
        assert capsys.readouterr().err == "tf-alexnet: interrupted\n"
    assert signals.getsignal(signals.SIGINT) is signals.default_int_handler  # restored

    def bug(args):
        raise ImportError("initialization failed")

    monkeypatch.setitem(COMMANDS, "export", bug)
    with pytest.raises(ImportError):  # without Ctrl-C, other errors stay tracebacks
        main(["export", "runs/x"])


def test_evaluate_a_run_on_data_whose_classes_are_named_otherwise(tmp_path, capsys):
    """`evaluate RUN_DIR --image-folder OTHER` (or the run's best.keras) on a folder with as
    many classes under other names scored the model against classes it never knew, and
    replaced the run's evaluation.json (which export copies into its metadata) with that
    report. The run's class names (its metrics.json) must be the data's, as an export's are."""

    data = _png_folders(tmp_path / "data", {"ant": 6, "bee": 6, "cow": 6}, seed=3)
    run = tmp_path / "run"
    train = ["train", "--preset", "quick", "--image-folder", str(data), "--image-size", "12"]
    train += ["--learning-rate", "0.002"]
    assert main([*train, "--epochs", "1", "--batch-size", "4", "--run-dir", str(run)]) == 0
    assert main(["evaluate", str(run)]) == 0
    report = (run / "evaluation.json").read_text()
    capsys.readouterr()
    (data / "cow").rename(data / "dog")  # as many classes, one named otherwise
    # the run takes where its data is now; its model file any data
    for target, flags in ((run, "DIR"), (run / "best.keras", "DIR or --dataset NAME")):
        assert main(["evaluate", str(target), "--image-folder", str(data)]) == 2
        assert capsys.readouterr().err == (
            f"tf-alexnet: error: The model {str(run / 'best.keras')!r} names class 2 'cow', but "
            f"{str(data)!r} names it 'dog'. Evaluate it on the data it was trained on "
            f"(--image-folder {flags}).\n"
        )
    assert (run / "evaluation.json").read_text() == report


def test_splits_that_miss_a_small_class_are_said(tmp_path, capsys):
    """Drawn at random over all of an image folder's images (`--no-stratify`, the only way
    before), a class of 2 images among 12 can land wholly in the test split (seed 2), so the
    model never saw it and validation never scored it, or miss both validation and test
    (seed 13), so the report showed a row of zeros. Nothing said so; a note now does."""

    data = _png_folders(tmp_path / "data", {"common": 10, "rare": 2}, seed=4)
    train = [
        *("train", "--preset", "quick", "--image-folder", str(data), "--image-size", "12"),
        *("--epochs", "1", "--batch-size", "2", "--learning-rate", "0.002"),
        *("--validation-fraction", "0.25", "--test-fraction", "0.25", "--no-stratify"),
    ]
    way_out = (
        "The splits are drawn at random over all images, not class by class (--no-stratify): "
        "add images of these classes, or split class by class.\n"
    )
    assert main([*train, "--seed", "2", "--run-dir", str(tmp_path / "never-seen")]) == 0
    out = capsys.readouterr().out
    assert (
        "Note: the training split holds no image of 1 class(es), 'rare': the model never "
        f"learns them. {way_out}"
    ) in out
    assert (
        "Note: the validation split holds no image of 1 class(es), 'rare': val_accuracy, and "
        f"so the best epoch, leave them out. {way_out}"
    ) in out
    run = tmp_path / "never-tested"
    assert main([*train, "--seed", "13", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "training split" not in out and "validation split holds no image" in out
    assert main(["evaluate", str(run)]) == 0
    assert (
        "Note: the test split holds no image of 1 class(es), 'rare': their rows of the report "
        f"are zeros, and the macro average counts their recall as 0. {way_out}"
    ) in capsys.readouterr().out


def test_stratified_splits_hold_every_class_that_can_spare_an_image(tmp_path, capsys):
    """By default an image folder is split class by class: a class of 3 images among 300 is
    in the validation, test and training splits alike (drawn over all images, it missed the
    validation split for 725 seeds of 1,000); one of 2 images can only be in two of them,
    and the note says why."""
    import numpy as np

    from tf_alexnet.data import split_masks

    labels = np.array([0] * 300 + [1] * 3 + [2] * 2 + [3] * 1)
    for seed in range(50):
        validation, test, rest = split_masks(len(labels), (0.1, 0.1), seed, labels)
        assert not (validation & test).any() and (validation | test | rest).all()
        assert [int(validation[labels == c].sum()) for c in range(4)] == [30, 1, 1, 0]
        assert [int(test[labels == c].sum()) for c in range(4)] == [30, 1, 0, 0]
        assert [int(rest[labels == c].sum()) for c in range(4)] == [240, 1, 1, 1]
    again = split_masks(len(labels), (0.1, 0.1), 7, labels)
    same = split_masks(306, (0.1, 0.1), 7, labels)
    assert all((a == b).all() for a, b in zip(again, same, strict=True))
    other = split_masks(len(labels), (0.1, 0.1), 8, labels)
    assert not (again[0] == other[0]).all()  # the seed draws them
    assert split_masks(10, (0.5,), 3)[0].sum() == 5  # without labels, as before

    data = _png_folders(tmp_path / "data", {"common": 10, "rare": 2}, seed=4)
    run = tmp_path / "run"
    train = [
        *("train", "--preset", "quick", "--image-folder", str(data), "--image-size", "12"),
        *("--epochs", "1", "--batch-size", "2", "--learning-rate", "0.002", "--seed", "2"),
        *("--validation-fraction", "0.25", "--test-fraction", "0.25", "--run-dir", str(run)),
    ]
    assert main(train) == 0
    assert "split holds no image" not in capsys.readouterr().out  # training and validation
    assert main(["evaluate", str(run)]) == 0
    assert (
        "Note: the test split holds no image of 1 class(es), 'rare': their rows of the report "
        "are zeros, and the macro average counts their recall as 0. Each split takes its share "
        "of every class, and these have too few images to spare one: add images of these "
        "classes.\n"
    ) in capsys.readouterr().out


def test_a_run_recorded_before_stratify_keeps_its_random_splits(tmp_path, capsys):
    """Runs recorded before `stratify` split at random: read as its default (true), their
    splits would move, and a resumed run would train on images it had validated on."""
    import json

    from tf_alexnet import config as config_lib
    from tf_alexnet.run_dir import RunDir

    data = _image_folder(tmp_path / "data", count=6, splits=())
    run = _fake_run(tmp_path / "run", data)
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["stratify"] is True  # new runs record it
    del recorded["stratify"]
    (run / "config.json").write_text(json.dumps(recorded))
    assert RunDir(run).load_config().stratify is False
    assert config_lib.from_dict(recorded).stratify is True  # a settings file of one's own
    (run / "backup").mkdir()  # a run that finished an epoch: resumed only as it was
    (run / "history.csv").write_text("epoch,accuracy\n0,0.5\n")
    train = ["train", "--preset", "quick", "--image-folder", str(data), "--run-dir", str(run)]
    assert main(train) == 2
    assert (
        "with other settings (stratify: the run has False, asked True)" in capsys.readouterr().err
    )


def test_a_cpu_run_recorded_before_test_time_flips_resumes_only_without_them(tmp_path, capsys):
    """The `cpu` preset scores with test-time flips now; an unfinished run of it recorded before
    the setting reads as without them (a network of other layers), so resuming it with the preset
    as it is now is refused naming the setting, which the CHANGELOG says to turn off."""
    import json

    from tf_alexnet import config as config_lib
    from tf_alexnet.run_dir import RunDir

    data = _image_folder(tmp_path / "data", count=6, splits=())
    run = tmp_path / "run"
    run.mkdir()
    recorded = config_lib.resolve("cpu", overrides={"image_folder": str(data)}).to_dict()
    assert recorded.pop("test_time_flip") is True
    (run / "config.json").write_text(json.dumps(recorded))
    assert RunDir(run).load_config().test_time_flip is False
    (run / "backup").mkdir()  # a run that finished an epoch: resumed only as it was
    (run / "history.csv").write_text("epoch,accuracy\n0,0.5\n")
    train = ["train", "--preset", "cpu", "--image-folder", str(data), "--run-dir", str(run)]
    assert main(train) == 2
    assert (
        "with other settings (test_time_flip: the run has False, asked True)"
        in capsys.readouterr().err
    )
    assert main([*train, "--no-test-time-flip"]) == 2  # 6 images fill no batch of 128 ...
    err = capsys.readouterr().err
    assert "other settings" not in err and "batch" in err, err  # ... past the settings check


@pytest.mark.slow
def test_a_run_whose_image_folder_changed_keeps_its_splits_or_is_refused(tmp_path, capsys):
    """The splits are drawn by position among an image folder's images, so one image added
    or removed draws every split anew: a run resumed after that went on training on images
    it had validated on, and `evaluate RUN_DIR` tested the model on images it trained on,
    without a word. The run records its images (count and digest); both are refused in one
    line while the folder differs, and work again once it is put back."""

    data = _png_folders(tmp_path / "data", {"ant": 8, "bee": 8}, seed=5)
    run = tmp_path / "run"
    train = [
        *("train", "--preset", "quick", "--image-folder", str(data), "--image-size", "12"),
        *("--batch-size", "2", "--learning-rate", "0.002", "--run-dir", str(run)),
    ]
    assert main([*train, "--epochs", "1"]) == 0
    (run / "metrics.json").unlink()  # as a run killed after its first epoch
    extra = data / "ant" / "extra.png"
    extra.write_bytes((data / "ant" / "0.png").read_bytes())
    capsys.readouterr()
    assert main([*train, "--epochs", "2"]) == 2
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: The image folder {str(data)!r} has changed since the run "
        f"{str(run)!r} started (17 images where it had 16): its validation split would be "
        "drawn anew, and the run would go on training on images it validated on. Put the "
        "folder back as it was, or pass --overwrite to start the run over (or choose another "
        "--run-dir).\n"
    )
    assert main(["evaluate", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: The image folder {str(data)!r} has changed since the run was "
        "trained (17 images where it had 16): its test split would be drawn anew, with images "
        "the run trained on. Put the folder back as it was, or evaluate the run's model on a "
        "folder with train/ and test/ subfolders (tf-alexnet evaluate RUN_DIR/best.keras "
        "--image-folder DIR).\n"
    )
    assert not (run / "evaluation.json").exists()
    extra.unlink()
    (data / "ant" / "0.png").rename(data / "ant" / "renamed.png")  # as many, not the same
    assert main(["evaluate", str(run)]) == 2
    assert "(as many images, 16, but not the same ones)" in capsys.readouterr().err
    (data / "ant" / "renamed.png").rename(data / "ant" / "0.png")  # put back: as it was
    assert main(["evaluate", str(run)]) == 0, capsys.readouterr().err
    assert main([*train, "--epochs", "2"]) == 0, capsys.readouterr().err


def test_train_help_says_that_overwrite_deletes_an_unfinished_run_too():
    """`--overwrite` said "replace a finished run", but it deletes any run in --run-dir: one
    who added it to resume a killed run lost the epochs it had finished."""
    from tf_alexnet.cli_parser import build_parser

    train = cli_parser_commands(build_parser())["train"]
    help_text = " ".join(train.format_help().split())
    assert (
        "--overwrite delete the run in --run-dir, finished or not (a killed run's finished "
        "epochs too), and train anew; without it an unfinished run resumes and a finished one "
        "is refused"
    ) in help_text


def test_a_killed_runs_model_exports_and_predicts_with_its_class_names(tmp_path, capsys):
    """The class names came from metrics.json, which only a finished run has: the best.keras
    of a run killed after some epochs exported and predicted as `class_0`, `class_1`, ...
    (Fashion-MNIST's names for 10 classes, whatever the data). Training now records them
    when it starts."""

    data = _png_folders(tmp_path / "data", {"ant": 6, "bee": 6}, seed=6)
    run = tmp_path / "run"
    train = [
        *("train", "--preset", "quick", "--image-folder", str(data), "--image-size", "12"),
        *("--epochs", "1", "--batch-size", "2", "--learning-rate", "0.002"),
    ]
    assert main([*train, "--run-dir", str(run)]) == 0
    (run / "metrics.json").unlink()  # as a run killed after its first epoch
    (run / "final.keras").unlink()
    base = tmp_path / "models"
    assert main(["export", str(run), "--model-base-path", str(base)]) == 0
    names = (base / "alexnet" / "1" / "assets" / "class_names.txt").read_text().split()
    assert names == ["ant", "bee"]
    capsys.readouterr()
    assert main(["predict", str(data / "bee" / "0.png"), "--model", str(run), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)[0]["predictions"]
    assert sorted(p["class_name"] for p in found) == ["ant", "bee"]


def test_a_class_folder_linked_to_another_class_is_refused(tmp_path, capsys):
    """A class folder that is a link to another class's folder (or to the image folder) was
    read as a class of its own, its images the other class's: the same images under two
    labels, without a word (linked folders inside a class folder were already left out).
    Links to folders outside the image folder are still classes."""

    _png_folders(tmp_path, {"data/ant": 4, "data/bee": 4, "elsewhere": 4}, seed=7)
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    (data / "cow").symlink_to(elsewhere, target_is_directory=True)
    (data / "wasp").symlink_to(data / "bee", target_is_directory=True)
    train = ["train", "--preset", "quick", "--image-folder", str(data), "--batch-size", "2"]
    train += ["--image-size", "12", "--epochs", "1", "--learning-rate", "0.002", "--run-dir"]
    assert main([*train, str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: The class folders 'bee' and 'wasp' in {str(data)!r} hold the same "
        f"images: 'wasp' is a link to {str(data / 'bee')!r}, so they would be read under both "
        "classes. Remove the link, or give the class its own images.\n"
    )
    (data / "wasp").unlink()
    (data / "all").symlink_to(data, target_is_directory=True)
    assert main([*train, str(tmp_path / "run")]) == 2
    assert f"'all' is a link to {str(data)!r}" in capsys.readouterr().err
    (data / "all").unlink()
    from tf_alexnet.sources import folder_source

    assert folder_source(data).class_names == ("ant", "bee", "cow")


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "{tmp}/image.png", "--model", "{tmp}/runs"],
        ["evaluate", "{tmp}/runs"],
        ["export", "{tmp}/runs", "--model-base-path", "{tmp}/models"],
    ],
)
def test_a_folder_of_runs_names_its_runs(argv, tmp_path, capsys):
    """`--model runs` (where train puts its runs by default) said only "No exported
    SavedModel at 'runs'" (predict) or "not a run directory" (export)."""
    for name in ("quick", "cpu"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "config.json").write_text("{}")
    (tmp_path / "runs" / "notes").mkdir()  # not a run
    (tmp_path / "image.png").write_bytes(b"not read")
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err.strip()
    runs = tmp_path / "runs"
    assert err == (
        f"tf-alexnet: error: {str(runs)!r} is not a run directory but a folder of them "
        f"(cpu, quick): give one, e.g. {str(runs / 'cpu')!r}."
    )
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_each_keras_file_gets_its_own_report(trained_run, fashion_mnist, tmp_path, capsys):
    """Every `.keras` file's report went into its folder as `evaluation.json`: two models of
    one folder wrote over each other's, and `evaluate runs/x/final.keras` over the run's report
    of its best.keras, without a word."""
    from tf_alexnet.cli import main
    from tf_alexnet.run_dir import RunDir

    run = RunDir(shutil.copytree(trained_run, tmp_path / "run"))
    assert run.best_model.is_file() and run.final_model.is_file()
    assert main(["evaluate", str(run.best_model)]) == 0  # the run's model: the run's report
    assert capsys.readouterr().out.endswith(f"Report: {run.evaluation}\n")
    own = run.evaluation.read_bytes()
    assert main(["evaluate", str(run.final_model)]) == 0
    beside = run.root / "evaluation-final"
    assert capsys.readouterr().out.endswith(f"Report: {beside / 'evaluation.json'}\n")
    assert run.evaluation.read_bytes() == own
    assert (beside / "confusion_matrix.png").is_file()

    models = tmp_path / "models"
    models.mkdir()
    for name in ("a", "b"):
        shutil.copy(run.final_model, models / f"{name}.keras")
        assert main(["evaluate", str(models / f"{name}.keras"), "--preset", "quick"]) == 0
        reported = json.loads((models / f"evaluation-{name}" / "evaluation.json").read_text())
        assert reported["model"] == str(models / f"{name}.keras")
    assert sorted(path.name for path in models.iterdir()) == [
        "a.keras",
        "b.keras",
        "evaluation-a",
        "evaluation-b",
    ]
