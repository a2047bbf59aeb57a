"""The command line: summaries, and one clear line with a non-zero exit for user mistakes."""

import pytest

from tests.conftest import run_cli
from tf_alexnet.cli import main


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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "--variant", "vgg"], "Received: variant='vgg'"),
        (["summary", "--input-shape", "28,28,1"], "at least 67x67"),
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


def test_argparse_mistakes_exit_non_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "many"])
    assert exit_info.value.code == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


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
    result = run_cli("evaluate", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout and "on 10,000 images" in result.stdout
    assert (run_dir / "evaluation.json").is_file() and (run_dir / "confusion_matrix.png").is_file()
    again = run_cli("train", "--preset", "quick", "--run-dir", str(run_dir))
    assert again.returncode == 2 and "holds a finished run" in again.stderr
