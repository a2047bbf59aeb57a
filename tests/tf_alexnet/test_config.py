import json
import pathlib
import subprocess
import sys
import typing

import pytest

from tf_alexnet import config as config_lib
from tf_alexnet import contract
from tf_alexnet.augment import Augmentation
from tf_alexnet.errors import UserError
from tf_alexnet.run_dir import RunDir
from tf_alexnet.specs import DataSpec


def test_defaults_reproduce_the_chapter():
    config = config_lib.resolve()
    assert (config.variant, config.image_size, config.channels) == ("d2l", 224, 1)
    assert (config.learning_rate, config.batch_size, config.momentum) == (0.01, 128, 0.0)
    assert config.schedule == "constant" and config.augment == Augmentation()
    assert not config.augment.enabled


def test_preset_then_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("epochs = 7\nlearning_rate = 0.2\n[augment]\ncontrast = 0.3\n")
    config = config_lib.resolve("quick", path, {"learning_rate": 0.3, "augment": {"flip": False}})
    assert config.variant == "mini"  # preset
    assert config.epochs == 7  # file over preset
    assert config.learning_rate == 0.3  # flag over file
    assert config.augment == Augmentation(flip=False, crop="pad", contrast=0.3)


def test_json_round_trip(tmp_path):
    config = config_lib.resolve("cpu")
    path = tmp_path / "config.json"
    path.write_text(__import__("json").dumps(config.to_dict()))
    assert config_lib.resolve("chapter", path) == config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochz": 3}, "Unknown configuration keys: epochz"),
        ({"augment": {"flipp": True}}, "Unknown augmentation keys: flipp"),
        ({"variant": "resnet"}, "Received: variant='resnet'"),
        ({"batch_size": 0}, "`batch_size` should be >= 1"),
        ({"channels": 2}, "`channels` should be 1 or 3"),
        ({"augment": {"crop": "zoom"}}, "Received: augment.crop='zoom'"),
        ({"strategy": "tpu"}, "Received: strategy='tpu'"),
        ({"image_size": 28}, "at least 67x67 for variant='d2l'"),
        ({"augment": {"hue": 0.1}}, "needs RGB images"),
    ],
)
def test_bad_settings(values, message):
    with pytest.raises(UserError, match=message):
        config_lib.from_dict(values)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="No configuration file"):
        config_lib.read_file(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 3")
    with pytest.raises(UserError, match="Could not parse"):
        config_lib.read_file(broken)
    with pytest.raises(UserError, match=r"\.toml or \.json"):
        config_lib.read_file(tmp_path / "settings.yaml")
    with pytest.raises(UserError, match="`preset` should be one of"):
        config_lib.resolve("fast")


def test_a_json_key_given_twice_is_refused_and_a_misspelt_key_gets_a_suggestion(tmp_path):
    """`{"epochs": 1, "epochs": 2}` trained 2 epochs without a word (JSON parsers keep the
    last; TOML refuses it), and an unknown key's message listed all 36 settings to search."""
    twice = tmp_path / "twice.json"
    twice.write_text('{"epochs": 1, "augment": {"flip": true, "flip": false}, "epochs": 2}')
    with pytest.raises(UserError) as refused:
        config_lib.read_file(twice)
    assert str(refused.value) == f"Could not parse {str(twice)!r}: the key 'flip' is given twice"
    with pytest.raises(UserError) as misspelt:
        config_lib.from_dict({"learning_rte": 0.1})
    assert str(misspelt.value).startswith(
        "Unknown configuration keys: learning_rte, did you mean learning_rate? (known: dataset, "
    )
    with pytest.raises(UserError) as nested:
        config_lib.from_dict({"augment": {"flipp": True}})
    assert str(nested.value).startswith("Unknown augmentation keys: flipp, did you mean flip? (")
    with pytest.raises(UserError) as outside:  # a section's setting given at the top
        config_lib.from_dict({"flip": True})
    assert str(outside.value).startswith(
        "Unknown configuration keys: flip, did you mean augment.flip? (known: dataset, "
    )
    with pytest.raises(UserError) as unlike:
        config_lib.from_dict({"zzz": 1})
    assert str(unlike.value).startswith("Unknown configuration keys: zzz (known: dataset, ")


def test_settings_files_as_editors_write_them(tmp_path, capsys):
    """A TOML file saved with a byte order mark failed "Invalid statement (at line 1, column
    1)" (JSON with one was read); `x.TOML` was refused for its suffix's case; a folder named
    `x.toml` gave "Is a directory" and exit status 1."""
    from tf_alexnet.cli import main

    with_bom = tmp_path / "bom.toml"
    with_bom.write_bytes(b"\xef\xbb\xbfepochs = 3\n")
    assert config_lib.read_file(with_bom) == {"epochs": 3}
    upper = tmp_path / "upper.TOML"
    upper.write_text("epochs = 4\n")
    assert config_lib.read_file(upper) == {"epochs": 4}
    upper_json = tmp_path / "upper.Json"
    upper_json.write_text('{"epochs": 5}')
    assert config_lib.resolve("quick", upper_json).epochs == 5
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(UserError, match="is a folder, not a settings file"):
        config_lib.read_file(folder)
    assert main(["train", "--config", str(folder), "--run-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: {str(folder)!r} is a folder, not a settings file.\n"
    )
    not_utf8 = tmp_path / "latin1.toml"
    not_utf8.write_bytes(b"# caf\xe9\nepochs = 3\n")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        config_lib.read_file(not_utf8)


def test_the_chapter_preset_follows_the_chapter():
    config = config_lib.resolve("chapter")
    # d2l: `lr, num_epochs = 0.01, 5`, batch 128, Xavier init (the d2l variant's Glorot init).
    assert (config.epochs, config.learning_rate, config.batch_size) == (5, 0.01, 128)
    assert (config.variant, config.image_size, config.momentum) == ("d2l", 224, 0.0)


def test_auto_preset_suits_the_machine():
    assert config_lib.auto_preset(has_gpu=True) == "chapter"
    assert config_lib.auto_preset(has_gpu=False) == "cpu"
    assert config_lib.resolve("auto") == config_lib.resolve(config_lib.auto_preset())


WRONG = [
    ({"augment": {"flip": "no"}}, "`augment.flip` should be a boolean (true or false). "
     "Received: augment.flip='no'"),
    ({"dropout": 1.5}, "`dropout` should be in [0, 1). Received: dropout=1.5"),
    ({"seed": "x"}, "`seed` should be an integer in [0, 4294967295]. Received: seed='x'"),
    ({"validation_fraction": 2}, "`validation_fraction` should be in [0, 1). "
     "Received: validation_fraction=2"),
    ({"epochs": 2.5}, "`epochs` should be an integer >= 1. Received: epochs=2.5"),
    ({"augment": {"hue": 0.9}}, "`augment.hue` should be in [0, 0.5]. "
     "Received: augment.hue=0.9"),
    ({"augment": "flip"}, "`augment` should be a table of settings. Received: augment='flip'"),
    ({"width": 0}, "`width` should be in (0, 4.0]. Received: width=0"),
    ({"width": 100}, "`width` should be in (0, 4.0]. Received: width=100"),
    ({"learning_rate": float("inf")}, "`learning_rate` should be a finite number > 0. "
     "Received: learning_rate=inf"),
    ({"augment": {"contrast": float("nan")}}, "`augment.contrast` should be a finite number "
     "in [0, 1). Received: augment.contrast=nan"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "message"), WRONG)
def test_wrong_types_and_ranges_are_refused_in_one_line(values, message):
    with pytest.raises(UserError) as info:
        config_lib.from_dict(values)
    assert str(info.value) == message


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_every_file_entry_is_checked(suffix, tmp_path):
    path = tmp_path / f"run{suffix}"
    if suffix == ".toml":
        path.write_text('epochs = 3\n[augment]\nflip = "no"\n')
    else:
        path.write_text(json.dumps({"epochs": 3, "augment": {"flip": "no"}}))
    with pytest.raises(UserError, match=r"Received: augment\.flip='no'$"):
        config_lib.resolve("quick", path)


def test_a_run_config_json_is_checked(tmp_path):
    run = RunDir(tmp_path)
    run.write_json(run.config, {**config_lib.resolve("quick").to_dict(), "dropout": 1.5})
    with pytest.raises(UserError, match=r"Received: dropout=1\.5$"):
        run.load_config()


def test_a_runs_config_json_reproduces_the_run_with_settings_added_since(tmp_path):
    """`--config RUN/config.json` under the `cpu` preset (`auto`'s pick on a CPU) turned on the
    test-time flips, added to the preset after older `cpu` runs recorded their settings."""
    recorded = config_lib.resolve("cpu").to_dict()
    del recorded["test_time_flip"], recorded["stratify"]  # settings added since the run
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_json(run.config, recorded)
    run.history.write_text("epoch,accuracy\n0,0.5\n")
    as_run = config_lib.resolve("cpu", run.config)
    assert as_run == run.load_config()  # what resuming, evaluate and export read
    assert as_run.test_time_flip is False
    assert as_run.stratify is True  # TFDS data: image folders were split at random before it
    folder = {**recorded, "image_folder": str(tmp_path / "images")}
    run.write_json(run.config, folder)
    assert config_lib.resolve("cpu", run.config).stratify is False
    assert config_lib.resolve("cpu", run.config, {"epochs": 3}).epochs == 3  # flags still win
    # The same settings in a file of one's own are over the preset: it fills what is missing.
    own = tmp_path / "config.json"
    own.write_text(json.dumps(recorded))
    mine = config_lib.resolve("cpu", own)
    assert mine.test_time_flip is True and mine.stratify is True
    assert mine == config_lib.resolve("cpu", tmp_path / "run" / ".." / "config.json")


def test_declarations_import_no_tensorflow():
    code = (
        "import sys\n"
        "import tf_alexnet.config, tf_alexnet.specs\n"
        "print('tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr[-2000:]


def test_library_callers_get_value_errors_too():
    with pytest.raises(ValueError, match=r"Received: crop_fraction=0"):
        Augmentation(crop_fraction=0)
    with pytest.raises(ValueError, match=r"Received: image_folder=3"):
        DataSpec(image_folder=3)
    assert DataSpec(image_folder=pathlib.Path("/x")).image_folder == "/x"
    assert config_lib.TrainConfig().channels == contract.CHANNELS
    assert config_lib.TrainConfig().image_size == contract.IMAGE_SIZE
    assert typing.get_args(config_lib.TrainConfig.model_fields["variant"].annotation) == (
        contract.VARIANTS
    )
