"""Tests of bnnflow.pipeline.config: defaults, TOML loading, validation messages, overrides and --set parsing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import tomli_w

from bnnflow.errors import ConfigError
from bnnflow.pipeline.config import (
    SECTIONS,
    Config,
    DataConfig,
    DatasetName,
    ExportConfig,
    ModelConfig,
    OptimizerName,
    ScheduleName,
    TrainConfig,
    load_config,
    parse_override,
)


def _write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -------------------------------------------------------------------------------------------------- defaults


def test_config_defaults():
    cfg = Config()
    assert cfg.data == DataConfig()
    assert cfg.data.name is DatasetName.DIGITS and cfg.data.root == ""
    assert cfg.data.test_fraction == 0.2 and cfg.data.augment is False
    assert cfg.data.image_size == 0 and cfg.data.channels == 0  # the data set's own shape: digits stay 1x8x8
    assert cfg.model.name == "digits_mlp" and cfg.model.args == {}
    assert cfg.train.epochs == 100 and cfg.train.batch_size == 64 and cfg.train.lr == 0.01
    assert cfg.train.optimizer is OptimizerName.ADAM and cfg.train.schedule is ScheduleName.COSINE
    assert cfg.export.verify is True and cfg.export.verify_batch == 256


def test_config_load_none_gives_default():
    assert load_config(None) == Config()


def test_config_empty_dict_gives_default():
    assert Config.from_dict({}) == Config()
    assert Config.from_dict({"train": {}, "data": {}}) == Config()


def test_config_sections_are_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ round trip

NON_DEFAULT = Config(
    data=DataConfig(name=DatasetName.IMAGEFOLDER, root="/data/imagenet", test_fraction=0.3, split_seed=4,
                    limit_train=10, limit_test=5, image_size=64, augment=True),
    model=ModelConfig(name="cnv", args={"weight_bits": 1, "widths": [64, 128], "nested": {"a": 1.5}}),
    train=TrainConfig(epochs=7, batch_size=32, optimizer=OptimizerName.SGD, lr=0.1, momentum=0.8,
                      weight_decay=1e-4, schedule=ScheduleName.STEP, warmup_epochs=2, step_epochs=3,
                      step_gamma=0.5, label_smoothing=0.1, seed=9, threads=2),
    export=ExportConfig(verify=False, verify_batch=8),
)
ROUND_TRIP_CONFIGS = [pytest.param(Config(), id="default"), pytest.param(NON_DEFAULT, id="non-default")]


@pytest.mark.parametrize("cfg", ROUND_TRIP_CONFIGS)
def test_config_round_trip_dict(cfg):
    raw = cfg.to_dict()
    assert set(raw) == set(SECTIONS)
    assert Config.from_dict(raw) == cfg
    assert Config.from_dict(raw).to_dict() == raw


def test_config_to_dict_writes_plain_values():
    raw = NON_DEFAULT.to_dict()
    assert raw["data"]["name"] == "imagefolder" and type(raw["data"]["name"]) is str
    assert raw["train"]["optimizer"] == "sgd" and type(raw["train"]["optimizer"]) is str
    assert raw["train"]["schedule"] == "step" and type(raw["train"]["schedule"]) is str
    assert raw["model"]["args"] == {"weight_bits": 1, "widths": [64, 128], "nested": {"a": 1.5}}


def test_config_to_dict_does_not_share_args():
    cfg = Config(model=ModelConfig(args={"widths": [1, 2]}))
    cfg.to_dict()["model"]["args"]["widths"].append(3)
    assert cfg.model.args == {"widths": [1, 2]}


def test_config_round_trip_through_toml_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(tomli_w.dumps(NON_DEFAULT.to_dict()).encode())
    assert load_config(path) == NON_DEFAULT


# ------------------------------------------------------------------------------------------------ TOML files

VALID_TOML = """
[data]
name = "mnist"
root = "/tmp/mnist"
limit_train = 500
augment = true

[model]
name = "tfc"
args = { in_bits = 8, hidden = [64, 64] }

[train]
epochs = 3
lr = 1          # an integer is accepted for a float
optimizer = "sgd"
schedule = "linear"

[export]
verify = false
"""


def test_config_load_valid_toml(tmp_path):
    cfg = load_config(_write_toml(tmp_path, VALID_TOML))
    assert cfg.data.name is DatasetName.MNIST and cfg.data.root == "/tmp/mnist"
    assert cfg.data.limit_train == 500 and cfg.data.augment is True
    assert cfg.data.test_fraction == DataConfig().test_fraction  # keys left out keep their defaults
    assert cfg.model.name == "tfc" and cfg.model.args == {"in_bits": 8, "hidden": [64, 64]}
    assert cfg.train.epochs == 3
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert cfg.train.optimizer is OptimizerName.SGD and cfg.train.schedule is ScheduleName.LINEAR
    assert cfg.train.batch_size == TrainConfig().batch_size
    assert cfg.export.verify is False and cfg.export == ExportConfig(verify=False)


def test_config_load_accepts_str_path(tmp_path):
    path = _write_toml(tmp_path, "[train]\nepochs = 2\n")
    assert load_config(str(path)).train.epochs == 2


def test_config_load_missing_file_raises(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


INVALID_TOML = [
    pytest.param("[train\nepochs = 2\n", id="unclosed-table"),
    pytest.param("[train]\nepochs = \n", id="missing-value"),
    pytest.param("[train]\nepochs = 2\nepochs = 3\n", id="duplicate-key"),
    pytest.param("[train]\nlr = 0.5.1\n", id="bad-number"),
]


@pytest.mark.parametrize("text", INVALID_TOML)
def test_config_load_invalid_toml_raises(tmp_path, text):
    path = _write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "TOML" in str(info.value)


def test_config_load_non_utf8_raises(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[model]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


# -------------------------------------------------------------------------------------------------- validation


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        Config.from_dict(raw)
    return str(info.value)


def test_config_unknown_section_raises():
    message = _error({"trian": {"epochs": 1}})
    assert "trian" in message
    for section in SECTIONS:
        assert section in message


def test_config_unknown_section_in_toml_raises(tmp_path):
    path = _write_toml(tmp_path, "[optim]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match=r"\[optim\]"):
        load_config(path)


UNKNOWN_KEYS = [
    ("train", "epoch", TrainConfig),
    ("data", "dataset", DataConfig),
    ("model", "arguments", ModelConfig),
    ("export", "verify_batches", ExportConfig),
]


@pytest.mark.parametrize(("section", "key", "section_cls"), UNKNOWN_KEYS)
def test_config_unknown_key_raises(section, key, section_cls):
    message = _error({section: {key: 1}})
    assert f"{section}.{key}" in message
    for f in dataclasses.fields(section_cls):  # the allowed keys are listed
        assert f.name in message


def test_config_section_not_a_table_raises():
    message = _error({"train": 5})
    assert "[train]" in message


def test_config_not_a_table_raises():
    with pytest.raises(ConfigError):
        Config.from_dict([("train", {})])  # type: ignore[arg-type]


WRONG_TYPES = [
    pytest.param("train", "epochs", "10", id="str-for-int"),
    pytest.param("train", "epochs", True, id="bool-for-int"),
    pytest.param("train", "epochs", 10.0, id="float-for-int"),
    pytest.param("data", "limit_train", [1], id="list-for-int"),
    pytest.param("train", "lr", "0.1", id="str-for-float"),
    pytest.param("train", "lr", False, id="bool-for-float"),
    pytest.param("data", "augment", 1, id="int-for-bool"),
    pytest.param("export", "verify", "yes", id="str-for-bool"),
    pytest.param("data", "root", 3, id="int-for-str"),
    pytest.param("model", "name", None, id="none-for-str"),
    pytest.param("model", "args", [1, 2], id="list-for-table"),
    pytest.param("data", "name", 3, id="int-for-enum"),
]


@pytest.mark.parametrize(("section", "key", "value"), WRONG_TYPES)
def test_config_wrong_type_raises(section, key, value):
    message = _error({section: {key: value}})
    assert f"{section}.{key}" in message


FLOAT_FIELDS_GIVEN_INTS = [("train", "lr", 1), ("train", "momentum", 0), ("data", "test_fraction", 0.5)]


@pytest.mark.parametrize(("section", "key", "value"), FLOAT_FIELDS_GIVEN_INTS)
def test_config_number_accepted_for_float(section, key, value):
    cfg = Config.from_dict({section: {key: value}})
    got = getattr(getattr(cfg, section), key)
    assert got == value and type(got) is float


OUT_OF_RANGE = [
    pytest.param("train", "epochs", 0, "1 to 100000", id="epochs-low"),
    pytest.param("train", "epochs", 100_001, "1 to 100000", id="epochs-high"),
    pytest.param("train", "lr", -0.1, "0.0 to 10.0", id="lr-negative"),
    pytest.param("train", "momentum", 1.5, "0.0 to 1.0", id="momentum-high"),
    pytest.param("data", "test_fraction", 0.01, "0.05 to 0.95", id="fraction-low"),
    pytest.param("data", "limit_train", -1, "0 to inf", id="limit-negative"),
    pytest.param("data", "image_size", 4, "0 or 8 to 1024", id="image-size-low"),
    pytest.param("data", "image_size", -1, "0 or 8 to 1024", id="image-size-negative"),
    pytest.param("data", "image_size", 1025, "0 or 8 to 1024", id="image-size-high"),
    pytest.param("export", "verify_batch", 0, "1 to 65536", id="verify-batch-low"),
]


@pytest.mark.parametrize(("section", "key", "value", "bounds"), OUT_OF_RANGE)
def test_config_out_of_range_raises(section, key, value, bounds):
    message = _error({section: {key: value}})
    assert f"{section}.{key}" in message
    assert "range" in message and bounds in message


RANGE_EDGES = [("train", "epochs", 1), ("train", "epochs", 100_000), ("train", "lr", 0.0), ("train", "lr", 10.0),
               ("data", "test_fraction", 0.95), ("data", "image_size", 8), ("data", "image_size", 0),
               ("data", "image_size", 1024)]


@pytest.mark.parametrize(("section", "key", "value"), RANGE_EDGES)
def test_config_range_bounds_inclusive(section, key, value):
    cfg = Config.from_dict({section: {key: value}})
    assert getattr(getattr(cfg, section), key) == value


CHANNELS = [0, 1, 3]


@pytest.mark.parametrize("channels", CHANNELS)
def test_config_channels_accepted(channels):
    assert Config.from_dict({"data": {"channels": channels}}).data.channels == channels


BAD_CHANNELS = [2, 4, -1]


@pytest.mark.parametrize("channels", BAD_CHANNELS)
def test_config_bad_channels_raises(channels):
    message = _error({"data": {"channels": channels}})
    assert message == f"config: data.channels = {channels} is not allowed (allowed: 0, 1, 3)"


BAD_ENUMS = [
    ("data", "name", "imagenet", DatasetName),
    ("data", "name", "MNIST", DatasetName),  # values are case-sensitive
    ("train", "optimizer", "rmsprop", OptimizerName),
    ("train", "schedule", "exponential", ScheduleName),
]


@pytest.mark.parametrize(("section", "key", "value", "enum_cls"), BAD_ENUMS)
def test_config_bad_enum_raises(section, key, value, enum_cls):
    message = _error({section: {key: value}})
    assert f"{section}.{key}" in message and repr(value) in message
    for member in enum_cls:
        assert member.value in message


def test_config_enum_accepts_member_and_value():
    assert Config.from_dict({"data": {"name": DatasetName.CIFAR10}}).data.name is DatasetName.CIFAR10
    assert Config.from_dict({"data": {"name": "cifar10"}}).data.name is DatasetName.CIFAR10


def test_config_invalid_value_in_toml_names_key(tmp_path):
    path = _write_toml(tmp_path, '[train]\nbatch_size = "big"\n')
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        load_config(path)


# -------------------------------------------------------------------------------------------------- overrides


def test_config_with_overrides_sets_value():
    base = Config()
    cfg = base.with_overrides({"train.epochs": 5})
    assert cfg.train.epochs == 5
    assert base.train.epochs == 100  # the original is untouched
    assert dataclasses.replace(cfg, train=base.train) == base  # nothing else changed


def test_config_with_overrides_several_and_enum():
    cfg = Config().with_overrides({"data.name": "mnist", "data.root": "/x", "train.optimizer": "sgd",
                                   "train.lr": 1})
    assert cfg.data.name is DatasetName.MNIST and cfg.data.root == "/x"
    assert cfg.train.optimizer is OptimizerName.SGD
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float


def test_config_with_overrides_nested_model_args():
    cfg = Config(model=ModelConfig(args={"a": 1})).with_overrides({"model.args.b": 2, "model.args.c.d": 3})
    assert cfg.model.args == {"a": 1, "b": 2, "c": {"d": 3}}


BAD_OVERRIDES = [
    pytest.param({"train.epochs": 0}, "train.epochs", id="out-of-range"),
    pytest.param({"train.epochs": "5"}, "train.epochs", id="wrong-type"),
    pytest.param({"train.epoch": 5}, "train.epoch", id="unknown-key"),
    pytest.param({"data.name": "svhn"}, "data.name", id="bad-enum"),
    pytest.param({"epochs": 5}, "epochs", id="no-section"),
    pytest.param({"optim.lr": 0.1}, "optim.lr", id="unknown-section"),
    pytest.param({"train.epochs.x": 1}, "train.epochs.x", id="into-scalar"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD_OVERRIDES)
def test_config_with_overrides_validates(overrides, key):
    with pytest.raises(ConfigError) as info:
        Config().with_overrides(overrides)
    assert key in str(info.value)


# ------------------------------------------------------------------------------------------------- --set KEY=V

PARSED_OVERRIDES = [
    ("train.lr=0.5", "train.lr", 0.5, float),
    ("train.epochs=5", "train.epochs", 5, int),
    ("export.verify=false", "export.verify", False, bool),
    ("data.name=mnist", "data.name", "mnist", str),
    ('data.root="/a b/c"', "data.root", "/a b/c", str),
    ("data.root=/data/mnist", "data.root", "/data/mnist", str),
    ("model.args.widths=[64, 128]", "model.args.widths", [64, 128], list),
    ("data.root=a=b", "data.root", "a=b", str),  # only the first "=" splits
    (" train.epochs =7", "train.epochs", 7, int),  # the key is stripped
]


@pytest.mark.parametrize(("text", "key", "value", "value_type"), PARSED_OVERRIDES)
def test_parse_override_reads_toml_value(text, key, value, value_type):
    got_key, got_value = parse_override(text)
    assert got_key == key
    assert got_value == value and type(got_value) is value_type


def test_parse_override_without_equals_raises():
    with pytest.raises(ConfigError) as info:
        parse_override("train.epochs")
    assert "train.epochs" in str(info.value) and "KEY=VALUE" in str(info.value)


def test_parse_override_feeds_with_overrides():
    cfg = Config().with_overrides(dict(parse_override(t) for t in ("train.lr=0.5", "data.name=mnist")))
    assert cfg.train.lr == 0.5 and cfg.data.name is DatasetName.MNIST


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_config_non_finite_float_raises(value):
    message = _error({"train": {"lr": value}})
    assert "train.lr" in message and "finite" in message
