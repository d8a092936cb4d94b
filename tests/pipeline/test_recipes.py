"""The recipe configs (configs/*.toml), one per published result: each loads, validates and builds.

The data sets are not on this machine, so each recipe's model is built at its data set's input shape and class
count, and its method applied to it, which is what ``validate`` checks once the data loads. The digits recipes
(no paper reports digits: they run a paper's method on the bundled set) load their data, which is always here.
"""

from __future__ import annotations

from pathlib import Path

import onnx
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


DIGITS_RECIPES = [path for path in RECIPES if path.stem.endswith("-digits-resnet20-hw")]
CNV_DIGITS = next(path for path in RECIPES if path.stem == "bnn-pynq-digits-cnv")


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


@pytest.mark.parametrize("path", DIGITS_RECIPES, ids=[p.stem for p in DIGITS_RECIPES])
def test_digits_recipe_reaches_the_simulator_exactly(cli, tmp_path: Path, path: Path) -> None:
    """Each paper's method on ResNet-20 hw, trained one short epoch on the bundled digits, goes through export,
    compile and simulate from the CLI with 0 mismatches at every level (a slice of the data keeps it quick; the
    full split is the same code on more samples)."""
    import json

    result = cli("run", str(path), "--out", "run", "--epochs", "1", "--steps", "train,export,compile,simulate",
                 "--set", "data.limit_train=128", "--set", "data.limit_test=16", "--set", "train.threads=1")
    assert result.returncode == 0, result.stderr
    stages = json.loads((tmp_path / "run" / "summary.json").read_text())["stages"]
    assert [stages[s]["status"] for s in ("train", "export", "compile", "simulate")] == ["ok"] * 4
    assert stages["export"]["mismatches"] == 0 and stages["export"]["verified_samples"] == 16
    assert stages["compile"]["streamlined_mismatches"] == 0 and stages["compile"]["dataflow_mismatches"] == 0
    assert stages["simulate"]["mismatches"] == 0 and stages["simulate"]["simulated_samples"] == 16
    ops = {node.op_type for node in onnx.load(tmp_path / "run" / "dataflow.onnx").graph.node}
    assert {"DuplicateStreams", "AddStreams", "Downsample", "ChannelPad"} <= ops  # the residual graph, in hardware


def test_cnv_digits_recipe_folds_for_the_board(cli, tmp_path: Path) -> None:
    """CNV on the bundled digits at 3x32x32 compiles with board-budget folding for the ULX3S: the fastest design
    the resource model fits (far above the fully folded one), exact against the simulator."""
    import json

    cfg = load_config(CNV_DIGITS)
    assert (cfg.model.name, cfg.data.image_size, cfg.data.channels) == ("cnv", 32, 3)
    assert (cfg.compile.board, cfg.compile.target_fps) == ("ulx3s", 0)
    result = cli("run", str(CNV_DIGITS), "--out", "run", "--epochs", "1", "--steps", "train,export,compile,simulate",
                 "--set", "data.limit_train=128", "--set", "data.limit_test=16", "--set", "train.threads=1")
    assert result.returncode == 0, result.stderr
    stages = json.loads((tmp_path / "run" / "summary.json").read_text())["stages"]
    assert stages["compile"]["dataflow_mismatches"] == 0 and stages["simulate"]["mismatches"] == 0
    estimates = json.loads((tmp_path / "run" / "compile" / "estimates.json").read_text())
    assert estimates["folding"]["mode"] == "board" and estimates["folding"]["fits"] and estimates["board"]["fits"]
    assert estimates["luts"] <= estimates["folding"]["lut_budget"]
    assert estimates["flip_flops"] <= estimates["folding"]["ff_budget"]
    assert estimates["frames_per_second"] > 3_000  # FINN's published CNV rate; fully folded is about 2 frames/s
