import pytest

from tf_alexnet import config as config_lib
from tf_alexnet.augment import Augmentation
from tf_alexnet.errors import UserError


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
        ({"batch_size": 0}, "`batch_size` should be an integer >= 1"),
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
