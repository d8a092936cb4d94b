"""The model registry: names, argument checking against entry-point signatures, and config errors."""

from __future__ import annotations

import pytest
from torch import nn

from bnnflow.errors import ConfigError
from bnnflow.models import create_model, list_models, register_model, registry

ZOO = ["digits_mlp", "tfc", "sfc", "lfc", "cnv"]

MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)

# (model, input shape, args) whose values are out of range; each must surface as a ConfigError.
INVALID_VALUES = [
    ("digits_mlp", (1, 8, 8), {"weight_bits": 0}),
    ("tfc", MNIST_SHAPE, {"weight_bits": 0}),
    ("sfc", MNIST_SHAPE, {"act_bits": 9}),
    ("lfc", MNIST_SHAPE, {"input_bits": 0}),
    ("cnv", CIFAR_SHAPE, {"weight_bits": 0}),
    ("cnv", (3, 16, 16), {}),
    ("cnv", (3, 28, 28), {}),
    ("digits_mlp", (1, 8, 8), {"hidden": 0}),
    ("tfc", MNIST_SHAPE, {"dropout": 1.0}),
]

# (model, argument, wrongly typed value)
WRONG_TYPES = [
    ("digits_mlp", "hidden", "x"),
    ("digits_mlp", "depth", 2.0),
    ("tfc", "weight_bits", True),
    ("cnv", "act_bits", "1"),
]

# (model, input shape, number of QuantLinear/QuantConv2d layers)
EXPECTED_LAYERS = [
    ("digits_mlp", (1, 8, 8), 4),
    ("tfc", MNIST_SHAPE, 4),
    ("sfc", MNIST_SHAPE, 4),
    ("lfc", MNIST_SHAPE, 4),
    ("cnv", CIFAR_SHAPE, 9),
]


def test_list_models_contains_zoo():
    names = list_models()
    for name in ZOO:
        assert name in names
    assert names == sorted(names)


def test_list_models_filters_by_pattern():
    assert list_models("*fc") == ["lfc", "sfc", "tfc"]
    assert list_models("cnv") == ["cnv"]
    assert list_models("no_such_*") == []


@pytest.mark.parametrize("name,input_shape,layers", EXPECTED_LAYERS)
def test_create_model_builds_registered_model(name, input_shape, layers):
    import brevitas.nn as qnn

    model = create_model(name, input_shape=input_shape, num_classes=10)
    assert isinstance(model, nn.Module)
    assert model.training
    quant_layers = [m for m in model.modules() if isinstance(m, (qnn.QuantLinear, qnn.QuantConv2d))]
    assert len(quant_layers) == layers
    assert quant_layers[-1].out_features == 10


def test_create_model_unknown_name_lists_known_models():
    with pytest.raises(ConfigError) as info:
        create_model("no_such_model", input_shape=(1, 8, 8), num_classes=10)
    message = str(info.value)
    assert "no_such_model" in message
    for name in ZOO:
        assert name in message


def test_create_model_unknown_argument_is_named():
    with pytest.raises(ConfigError) as info:
        create_model("tfc", input_shape=MNIST_SHAPE, num_classes=10, widht=64)
    message = str(info.value)
    assert "widht" in message
    assert "weight_bits" in message  # the allowed arguments are listed


@pytest.mark.parametrize("name,key,value", WRONG_TYPES)
def test_create_model_wrong_type_is_config_error(name, key, value):
    shape = CIFAR_SHAPE if name == "cnv" else MNIST_SHAPE
    with pytest.raises(ConfigError) as info:
        create_model(name, input_shape=shape, num_classes=10, **{key: value})
    assert key in str(info.value)


@pytest.mark.parametrize("name,input_shape,args", INVALID_VALUES)
def test_create_model_invalid_value_is_config_error(name, input_shape, args):
    with pytest.raises(ConfigError) as info:
        create_model(name, input_shape=input_shape, num_classes=10, **args)
    assert name in str(info.value)


def test_create_model_cnv_small_input_names_size():
    with pytest.raises(ConfigError, match="32x32") as info:
        create_model("cnv", input_shape=(3, 16, 16), num_classes=10)
    assert "16x16" in str(info.value)


def test_create_model_passes_arguments_to_entry_point():
    model = create_model("digits_mlp", input_shape=(1, 8, 8), num_classes=3, hidden=16, depth=2)
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert widths == [16, 16, 3]


@pytest.fixture
def throwaway_name():
    name = "_bnnflow_test_throwaway_model"
    assert name not in registry._model_entrypoints
    yield name
    registry._model_entrypoints.pop(name, None)


def test_register_model_duplicate_name_raises(throwaway_name):
    def make(**kwargs):
        return nn.Identity()

    make.__name__ = throwaway_name
    assert register_model(make) is make
    assert throwaway_name in list_models()

    def make_again(**kwargs):
        return nn.Identity()

    make_again.__name__ = throwaway_name
    with pytest.raises(ValueError, match=throwaway_name):
        register_model(make_again)
    assert registry._model_entrypoints[throwaway_name] is make


def test_register_model_duplicate_zoo_name_raises():
    def tfc(**kwargs):
        return nn.Identity()

    before = registry._model_entrypoints["tfc"]
    with pytest.raises(ValueError, match="tfc"):
        register_model(tfc)
    assert registry._model_entrypoints["tfc"] is before
