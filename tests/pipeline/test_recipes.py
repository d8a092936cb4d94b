"""The recipe configs (configs/*.toml), one per published result: each loads, validates and builds.

The data sets are not on this machine, so each recipe's model is built at its data set's input shape and class
count, and its method applied to it, which is what ``validate`` checks once the data loads. The digits recipes
(no paper reports digits: they run a paper's method on the bundled set) load their data, which is always here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bnnflow.models import create_model
from bnnflow.models.methods import create_method
from bnnflow.models.registry import resolve_model_args
from bnnflow.pipeline.config import Config, DatasetName, load_config
from bnnflow.pipeline.data import load_data

RECIPES = sorted((Path(__file__).parents[2] / "configs").glob("*.toml"))
SHAPES = {DatasetName.CIFAR10: ((3, 32, 32), 10), DatasetName.MNIST: ((1, 28, 28), 10),
          DatasetName.IMAGEFOLDER: ((3, 224, 224), 1000)}


def test_there_is_a_recipe_per_paper():
    names = {path.stem.split("-")[0] for path in RECIPES}
    assert {"rbnn", "rebnn", "rbonn", "ftbnn", "dwr", "irnet", "bireal", "reactnet", "xnor", "bnn"} <= names


def _input(cfg: Config) -> tuple[tuple[int, ...], int]:
    """(input shape, classes) of a recipe's data: the bundled digits as configured, the others as published."""
    if cfg.data.name == DatasetName.DIGITS:
        splits = load_data(cfg.data)
        return splits.input_shape, splits.num_classes
    assert cfg.data.name in SHAPES
    shape, classes = SHAPES[cfg.data.name]
    if cfg.data.name == DatasetName.IMAGEFOLDER:
        assert cfg.data.image_size == shape[-1]
    return shape, classes


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_validates_and_builds(path: Path):
    cfg = load_config(path)
    assert cfg.recipe.paper and cfg.recipe.source
    assert not cfg.data.root  # the data folder comes from --data-dir
    shape, classes = _input(cfg)
    torch.manual_seed(0)
    model = create_model(cfg.model.name, input_shape=shape, num_classes=classes,
                         **resolve_model_args(cfg.model.name, cfg.model.args))
    create_method(cfg.method.name, **cfg.method.options).prepare(model)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, *shape)).shape == (1, classes)


DIGITS_RECIPES = [path for path in RECIPES if "-digits-" in path.stem]


def test_there_is_a_digits_recipe_per_method():
    """The five paper methods on ResNet-20 hw, runnable without data; no paper reports digits, so none claims a
    published accuracy."""
    assert {path.stem for path in DIGITS_RECIPES} >= {f"{m}-digits-resnet20-hw" for m in
                                                      ("rebnn", "rbnn", "ftbnn", "rbonn", "dwr")}
    for path in DIGITS_RECIPES:
        cfg = load_config(path)
        assert cfg.recipe.expected_accuracy == 0.0
        assert (cfg.model.name, cfg.model.args.get("hw")) == ("resnet20", True)
        assert (cfg.data.image_size, cfg.data.channels) == (32, 3)
