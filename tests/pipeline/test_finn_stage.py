"""`bnnflow finn`: the FINN build directory of real runs (digits, Brevitas TFC and CNV), read back and checked
against the simulator, build.py's matching of bnnflow's layers to FINN's graphs, the board table, and every way
the command can end without FINN.

FINN itself is not installed in CI (it is not on PyPI); the directories these tests check were also built by
FINN's own builder from its source (estimate steps, verification included) at two FINN commits as a local
cross-check: tests/data/finn_estimates/ holds what FINN made, whose layer names, graphs and reports are tested
here, ResNet-20 (hw, padded with -1) included. A binary map padded with zeros or +1 has no FINN form, and the
refusal is tested here.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.general import GiveUniqueNodeNames

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.convert import from_accelerator, to_accelerator
from bnnflow.hw.finn.boards import FINN_BOARDS, finn_board_for, get_finn_board
from bnnflow.hw.simulator import Simulator
from bnnflow.pipeline.execute import execute

DATA = Path(__file__).resolve().parents[1] / "data"
#: what FINN made of Brevitas TFC / CNV at FINN's main (39f0c9a, the Dockerfile's pin) and dev (73ba5ed)
FINN_RUNS = DATA / "finn_estimates"


def one_error_line(stderr: str) -> bool:
    return sum(line.startswith("error: ") for line in stderr.splitlines()) == 1 and "Traceback" not in stderr


@pytest.fixture(autouse=True)
def no_finn(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on the CI machines: no FINN installation."""
    monkeypatch.delenv("FINN_PYTHON", raising=False)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A trained digits run (2 epochs), compiled; the accelerator ends in the class scores."""
    from bnnflow.pipeline.config import Config
    from bnnflow.pipeline.steps import prepare_run, run_steps, validate

    cfg = validate(Config().with_overrides({"train.epochs": 2, "train.threads": 1, "compile.target_fps": 50_000}))
    run = prepare_run(cfg, tmp_path_factory.mktemp("finn") / "digits")
    run_steps(cfg, run, ["train", "export", "compile"])
    return run.root


def _brevitas_run(root: Path, name: str, shape: tuple[int, ...], *options: str) -> Path:
    """A Brevitas bnn_pynq model with seeded random weights, exported and compiled through the CLI."""
    import torch
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    from bnnflow.pipeline.export import export_model
    from tests.conftest import run_cli

    torch.manual_seed(0)
    model, _ = model_with_cfg(name, pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model(model.eval(), shape).save(str(root / f"{name}.qonnx"))
    # 8-bit pixel values, as images have: a float exactly between two input codes is rounded half to even by
    # qonnx's Quant but up by FINN's thresholds, and random floats hit such ties
    np.save(root / "inputs.npy", (np.random.default_rng(0).integers(0, 256, (6, *shape)) / 255).astype(np.float32))
    done = run_cli("-q", "compile", f"{name}.qonnx", "--out", name, "--inputs", "inputs.npy", *options, cwd=root)
    assert done.returncode == 0, done.stderr
    return root / name


@pytest.fixture(scope="module")
def tfc_run(tmp_path_factory) -> Path:
    return _brevitas_run(tmp_path_factory.mktemp("tfc"), "TFC_1W1A", (1, 28, 28), "--label-select")


@pytest.fixture(scope="module")
def resnet_runs(tmp_path_factory) -> dict[int, Path]:
    """A small ResNet-20 (hw: 8-bit stream, option-A shortcuts) for each pad_value, seeded random weights, compiled
    through the CLI."""
    import torch

    from bnnflow.models import create_model
    from bnnflow.pipeline.export import export_model
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("resnet")
    shape = (3, 16, 16)
    np.save(root / "inputs.npy", (np.random.default_rng(0).integers(0, 256, (6, *shape)) / 255).astype(np.float32))
    runs = {}
    for pad_value in (0, 1, -1):
        torch.manual_seed(0)
        model = create_model("resnet20", input_shape=shape, num_classes=10, widths=[4, 8, 16], blocks=[1, 1, 1],
                             stem_width=4, hw=True, pad_value=pad_value)
        name = f"resnet{pad_value}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_model(model.eval(), shape).save(str(root / f"{name}.qonnx"))
        done = run_cli("-q", "compile", f"{name}.qonnx", "--out", name, "--inputs", "inputs.npy", cwd=root)
        assert done.returncode == 0, done.stderr
        runs[pad_value] = root / name
    return runs


@pytest.fixture(scope="module")
def cnv_run(tmp_path_factory) -> Path:
    return _brevitas_run(tmp_path_factory.mktemp("cnv"), "CNV_1W1A", (3, 32, 32), "--target-fps", "3000")


def _accelerator_outputs(run: Path, images: np.ndarray) -> np.ndarray:
    """The simulator's outputs for model inputs ``images`` (through streamlined.onnx to the input codes, mapped to
    and from the accelerator's stream codes as pipeline/golden.py maps them)."""
    dataflow = ModelWrapper(str(run / "dataflow.onnx"))
    streamlined = ModelWrapper(str(run / "streamlined.onnx"))
    hw_in = dataflow.get_metadata_prop("bnnflow.streamlined_input")
    codes = to_accelerator(dataflow, execute(streamlined, images, [hw_in])[hw_in]).astype(np.int64)
    return from_accelerator(dataflow, Simulator(dataflow).run(codes)).reshape(len(images), -1)


def _model_outputs(run: Path, images: np.ndarray) -> np.ndarray:
    model = ModelWrapper(str(run / "model.qonnx"))
    return execute(model, images)[model.graph.output[0].name].reshape(len(images), -1)


def _recorded(name: str) -> dict:
    """bnnflow.json of a FINN run recorded in tests/data/finn_estimates."""
    return json.loads((FINN_RUNS / name / "bnnflow.json").read_text())


def _build_script(folder: Path, tmp_path: Path) -> ModuleType:
    """build.py as it runs beside ``folder``'s bnnflow.json; it imports FINN only inside FINN's steps."""
    from bnnflow.hw.finn.builddir import BUILD_SCRIPT

    here = tmp_path / folder.name
    here.mkdir()
    shutil.copyfile(folder / "bnnflow.json", here / "bnnflow.json")
    shutil.copyfile(BUILD_SCRIPT, here / "build.py")
    spec = importlib.util.spec_from_file_location(f"build_{folder.name}", here / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finn_graph(op_types: list[str]) -> ModelWrapper:
    """A dataflow partition as FINN's graph holds it after step_specialize_layers: a chain of FINN's hardware ops
    (op type and domain as FINN writes them), unnamed until a step names them."""
    domain = {"hls": "finn.custom_op.fpgadataflow.hls", "rtl": "finn.custom_op.fpgadataflow.rtl"}
    nodes = [helper.make_node(op, [f"t{i}"], [f"t{i + 1}"], domain=domain[op.rsplit("_", 1)[1]])
             for i, op in enumerate(op_types)]
    tensors = [helper.make_tensor_value_info(f"t{i}", TensorProto.FLOAT, [1, 8]) for i in (0, len(nodes))]
    return ModelWrapper(helper.make_model(helper.make_graph(nodes, "dataflow_partition", tensors[:1], tensors[1:])))


def _nodes(graph: ModelWrapper) -> list[tuple[str, str, list[str], list[str]]]:
    """FINN's layers as build.py's match_layers takes them."""
    return [(n.name, n.op_type, list(n.input), list(n.output)) for n in graph.graph.node]


def _chain(*names: str) -> list[tuple[str, str, list[str], list[str]]]:
    """FINN layers named as FINN names them (``<op>_<impl>_<i>``), each reading the one before."""
    return [(name, name.rsplit("_", 1)[0], [f"t{i}"], [f"t{i + 1}"]) for i, name in enumerate(names)]


def _recorded_finn_layers(name: str) -> list[str]:
    """FINN's layer names in graph order, as FINN's estimate report of a recorded run lists them."""
    return list(json.loads((FINN_RUNS / name / "output" / "report" / "estimate_layer_cycles.json").read_text()))


def _finn_layers(op: str, attr) -> list[list[dict]]:
    """What each bnnflow op becomes in FINN (op kinds after step_specialize_layers, at FINN's main and dev)."""
    def window() -> dict:
        return {"op": "ConvolutionInputGenerator", "SIMD": attr("SIMD")}

    return {
        "MVTU": lambda: [[{"op": "MVAU", "PE": attr("PE"), "SIMD": attr("SIMD")}]],
        "SlidingWindow": lambda: [[window()], [{"op": "FMPadding", "SIMD": attr("SIMD")}, window()],
                                  [{"op": "DownSampler", "SIMD": attr("SIMD")}]],
        "StreamingMaxPool": lambda: [[{"op": "StreamingMaxPool", "PE": attr("PE")}],
                                     [{"op": "ConvolutionInputGenerator", "SIMD": attr("PE")},
                                      {"op": "Pool", "PE": attr("PE")}]],
        "LabelSelect": lambda: [[{"op": "LabelSelect", "PE": attr("PE")}]],
        "Thresholding": lambda: [[{"op": "Thresholding", "PE": attr("PE")}]],
        "DuplicateStreams": lambda: [[{"op": "DuplicateStreams", "PE": attr("PE")}]],
        "AddStreams": lambda: [[{"op": "AddStreams", "PE": attr("PE")}], [{"op": "ElementwiseAdd", "PE": attr("PE")}]],
        "SumPool": lambda: [[{"op": "GlobalAccPool", "PE": attr("PE")}]],
        # main subsamples rows and columns in one DownSampler, dev in one strided 1 x 1 window: bnnflow's second
        # Downsample (the other axis) becomes nothing
        "Downsample": lambda: [[{"op": "DownSampler", "SIMD": attr("PE")}],
                               [{"op": "ConvolutionInputGenerator", "SIMD": attr("PE")}], []],
        # the channel zero-extension: a 1 x 1 convolution with 0 / 1 weights that build.py puts in its place
        "ChannelPad": lambda: [[{"op": "MVAU", "PE": attr("PE"), "SIMD": attr("NumChannels")}]],
    }[op]()


def _check_layers(folder: Path, run: Path) -> list[dict]:
    """bnnflow.json lists dataflow.onnx's layers in order, each with the FINN layers it may become and the PE and
    SIMD it has; FINN's names are left to FINN's graph (no folding_config.json is written)."""
    assert not (folder / "folding_config.json").exists()
    layers = json.loads((folder / "bnnflow.json").read_text())["layers"]
    dataflow = ModelWrapper(str(run / "dataflow.onnx"))
    nodes = [n for n in dataflow.graph.node if n.domain == "bnnflow.hw"]
    assert [(layer["bnnflow"], layer["op"]) for layer in layers] == [(n.name, n.op_type) for n in nodes]
    for layer, node in zip(layers, nodes):
        assert layer["finn"] == _finn_layers(node.op_type, getCustomOp(node).get_nodeattr), node.name
        # the layers it reads: a join two, the first none, any other one (on a chain: the one before it)
        assert len(layer["inputs"]) == (2 if node.op_type == "AddStreams" else int(node is not nodes[0])), node.name
    if not any(n.op_type == "DuplicateStreams" for n in nodes):
        assert [layer["inputs"] for layer in layers[1:]] == [[layer["bnnflow"]] for layer in layers[:-1]]
    return layers


def _kinds(layers: list[dict]) -> list[tuple[str, str, list[list[str]]]]:
    return [(layer["bnnflow"], layer["op"], [[n["op"] for n in s] for s in layer["finn"]]) for layer in layers]


def _check_build_config(folder: Path, board: str, clock_mhz: float) -> dict:
    config = json.loads((folder / "dataflow_build_config.json").read_text())
    finn_board = FINN_BOARDS[board]
    assert (config["board"], config["fpga_part"], config["shell_flow_type"]) == (
        finn_board.name, finn_board.part, finn_board.shell_flow)
    assert config["synth_clk_period_ns"] == pytest.approx(1000 / clock_mhz)
    assert config["enable_build_pdb_debug"] is False
    assert {"bitfile", "pynq_driver", "deployment_package", "estimate_reports"} <= set(config["generate_outputs"])
    assert (folder / config["verify_input_npy"]).is_file() and (folder / config["verify_expected_output_npy"]).is_file()
    return config


def test_digits_build_directory_without_finn(cli, digits_run: Path) -> None:
    done = cli("finn", str(digits_run))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "FINN is not installed here" in done.stderr and "docker run" in done.stderr
    folder = digits_run / "finn"
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "dataflow_build_config.json", "input.npy",
                                                  "expected_output.npy", "bnnflow.json", "build.py"}
    config = _check_build_config(folder, "Pynq-Z1", 100.0)
    assert "folding_config_file" not in config and "target_fps" not in config  # build.py adds FINN's names
    assert [layer["op"] for layer in _check_layers(folder, digits_run)] == ["MVTU"] * 4
    # FINN takes model.qonnx as it is (the input quantizer is a Quant behind a Relu), on the test images
    assert (folder / "model.onnx").read_bytes() == (digits_run / "model.qonnx").read_bytes()
    ops = [n.op_type for n in ModelWrapper(str(folder / "model.onnx")).graph.node]
    assert ops[ops.index("Relu") + 1] == "Quant"
    from bnnflow.pipeline.data import load_data, stack
    from bnnflow.pipeline.rundir import RunDir

    images = stack(load_data(RunDir(digits_run).read_config().data).test)[0].numpy()[:10]
    assert np.array_equal(np.load(folder / "input.npy"), images)
    # expected outputs: the simulator's scores through the logit scale, which is what model.qonnx outputs
    expected = np.load(folder / "expected_output.npy")
    scores = _accelerator_outputs(digits_run, images)
    assert np.array_equal(expected.argmax(axis=1), scores.argmax(axis=1))
    # the graph's tail maps the XNOR popcounts to scores by one increasing affine map: a * popcount + b
    slope, offset = np.polyfit(scores.ravel().astype(np.float64), expected.ravel().astype(np.float64), 1)
    assert slope > 0 and np.allclose(expected, slope * scores + offset, rtol=1e-5, atol=1e-5)
    assert np.allclose(expected, _model_outputs(digits_run, images), rtol=1e-5, atol=1e-6)
    stage = json.loads((digits_run / "summary.json").read_text())["stages"]["finn"]
    assert stage["status"] == "ok" and stage["built"] is False and stage["verify_samples"] == 10


def test_tfc_with_label_select(cli, tfc_run: Path) -> None:
    done = cli("finn", str(tfc_run), "--verify-samples", "6")
    assert done.returncode == 0, done.stderr
    folder = tfc_run / "finn"
    _check_build_config(folder, "Pynq-Z1", 100.0)
    layers = _check_layers(folder, tfc_run)
    assert _kinds(layers) == _kinds(_recorded("tfc_39f0c9a")["layers"])  # what FINN built, at both commits
    assert json.loads((folder / "bnnflow.json").read_text())["label_select"] is True  # build.py appends TopK
    assert (folder / "model.onnx").read_bytes() == (tfc_run / "model.qonnx").read_bytes()
    images = np.load(folder / "input.npy")
    assert np.array_equal(images, np.load(tfc_run / "verify" / "inputs.npy"))
    expected = np.load(folder / "expected_output.npy")
    assert expected.shape == (6, 1)
    assert np.array_equal(expected, _accelerator_outputs(tfc_run, images))  # the class index, as simulated


def test_cnv_lists_the_finn_layers_of_both_finn_generations(cli, cnv_run: Path) -> None:
    done = cli("finn", str(cnv_run), "--board", "ZCU104", "--clock-mhz", "125", "--verify-samples", "4")
    assert done.returncode == 0, done.stderr
    folder = cnv_run / "finn"
    _check_build_config(folder, "ZCU104", 125.0)
    layers = _check_layers(folder, cnv_run)
    assert _kinds(layers) == _kinds(_recorded("cnv_39f0c9a")["layers"]) == _kinds(_recorded("cnv_73ba5ed")["layers"])
    images = np.load(folder / "input.npy")
    expected = np.load(folder / "expected_output.npy")
    scores = _accelerator_outputs(cnv_run, images)
    assert expected.shape == (4, 10) and np.array_equal(expected.argmax(axis=1), scores.argmax(axis=1))
    assert np.allclose(expected, _model_outputs(cnv_run, images), rtol=1e-5, atol=1e-5)


def test_target_fps_leaves_folding_to_finn_and_alveo_gets_its_platform(cli, tfc_run: Path) -> None:
    done = cli("finn", str(tfc_run), "--board", "u250", "--target-fps", "100000", "--no-build")
    assert done.returncode == 0, done.stderr
    # the settings go into the run's config.toml, and the command says so (no hidden state)
    assert "finn.target_fps = 100000.0 (was 0.0)" in done.stderr and "finn.board = 'u250'" in done.stderr
    assert 'target_fps = 100000.0' in (tfc_run / "config.toml").read_text()
    folder = tfc_run / "finn"
    config = json.loads((folder / "dataflow_build_config.json").read_text())
    assert config["target_fps"] == 100_000 and "folding_config_file" not in config
    assert not (folder / "folding_config.json").exists()
    layers = json.loads((folder / "bnnflow.json").read_text())["layers"]
    assert all(set(node) == {"op"} for layer in layers for s in layer["finn"] for node in s)  # FINN's folding only
    assert config["shell_flow_type"] == "vitis_alveo"
    assert config["vitis_platform"] == "xilinx_u250_gen3x16_xdma_2_1_202010_1"


def test_rewriting_keeps_an_earlier_finn_output(cli, digits_run: Path) -> None:
    assert cli("finn", str(digits_run), "--no-build").returncode == 0
    marker = digits_run / "finn" / "output" / "bitfile" / "finn-accel.bit"
    marker.parent.mkdir(parents=True)
    marker.write_bytes(b"a bitstream from hours of Vivado")
    assert cli("finn", str(digits_run), "--no-build", "--verify-samples", "3").returncode == 0
    assert marker.read_bytes() == b"a bitstream from hours of Vivado"
    assert len(np.load(digits_run / "finn" / "input.npy")) == 3
    assert not list(digits_run.glob(".finn.*"))  # no temporary folder left behind


def test_errors_are_one_line(cli, digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = cli("finn", str(digits_run), "--board", "ZedBoard")
    assert unknown.returncode == 2 and one_error_line(unknown.stderr)
    assert "Pynq-Z1" in unknown.stderr and "KV260_SOM" in unknown.stderr
    not_a_run = cli("finn", str(tmp_path))
    assert not_a_run.returncode == 2 and one_error_line(not_a_run.stderr)
    monkeypatch.setenv("FINN_PYTHON", str(tmp_path / "no-python"))
    missing = cli("finn", str(digits_run))
    assert missing.returncode == 5 and one_error_line(missing.stderr) and "FINN_PYTHON" in missing.stderr
    # a Python without FINN: build.py itself says so, and the command ends in one line naming the log
    monkeypatch.setenv("FINN_PYTHON", sys.executable)
    no_finn = cli("finn", str(digits_run), "--estimate")
    assert no_finn.returncode == 5 and one_error_line(no_finn.stderr)
    assert "FINN is not importable" in no_finn.stderr and "build.log" in no_finn.stderr
    assert not (digits_run / "finn" / "output" / "report").exists()


def test_check_on_board(cli, digits_run: Path) -> None:
    assert cli("finn", str(digits_run), "--no-build").returncode == 0
    not_built = cli("finn", str(digits_run), "--check-on-board")
    assert not_built.returncode == 2 and one_error_line(not_built.stderr) and "deployment package" in not_built.stderr
    # the deployment package FINN makes: bitfile/ and driver/; build.py adds the accelerator-level vectors
    driver = digits_run / "finn" / "output" / "deploy" / "driver"
    driver.mkdir(parents=True)
    np.save(driver / "bnnflow_input.npy", np.zeros((10, 64), np.float32))
    np.save(driver / "bnnflow_expected.npy", np.zeros((10, 10), np.float32))
    printed = cli("finn", str(digits_run), "--check-on-board")
    assert printed.returncode == 0, printed.stderr
    assert "scp -r" in printed.stderr and "driver.py --exec_mode execute --batchsize 10" in printed.stderr


#: what FINN adds before bnnflow's first layer and after its last: nothing on FINN's main but a residual network's
#: classifier; on dev the input quantizer and the float tail too
FINN_EXTRA = {
    "tfc_39f0c9a": [], "cnv_39f0c9a": [], "resnet20_39f0c9a": ["MVAU_rtl_0"],
    "tfc_73ba5ed": ["Thresholding_rtl_0"],
    "cnv_73ba5ed": ["Thresholding_rtl_0", "ElementwiseMul_hls_0", "ElementwiseAdd_hls_0"],
    "resnet20_73ba5ed": ["Thresholding_rtl_0", "MVAU_rtl_0", "ElementwiseMul_hls_0", "ElementwiseAdd_hls_9"],
}


@pytest.mark.parametrize("name", list(FINN_EXTRA))
def test_build_py_folds_finns_own_graph(name: str, tmp_path: Path) -> None:
    """FINN's graphs of a real build at FINN's main and dev (as build.py's folding step saw them): build.py names
    and folds FINN's layers as FINN did, along the forks and joins of ResNet-20."""
    build = _build_script(FINN_RUNS / name, tmp_path)
    nodes = [tuple(node) for node in json.loads((FINN_RUNS / name / "finn_graph.json").read_text())]
    assert [node[0] for node in nodes] == _recorded_finn_layers(name)  # the layers FINN's estimates report
    layers = build.settings()["layers"]
    folding, extra = build.match_layers(nodes, layers)
    written = json.loads((FINN_RUNS / name / "output" / "folding_config.json").read_text())
    assert written == {"Defaults": {}, **folding, **{layer: written[layer] for layer in extra}}
    assert extra == FINN_EXTRA[name]
    if name.startswith("resnet20"):  # the shortcuts' channel zero-extension: an MVAU fed a whole pixel per cycle
        pads = [layer for layer in layers if layer["op"] == "ChannelPad"]
        assert len(pads) == 2 and sum(layer["op"] == "AddStreams" for layer in layers) == 9
        for layer in pads:
            mvau = [name for name, node in folding.items() if node == {k: v for k, v in layer["finn"][0][0].items()
                                                                         if k != "op"} and name.startswith("MVAU")]
            assert mvau and layer["finn"][0][0]["SIMD"] == 16 * 2 ** (pads.index(layer))
    if name == "cnv_39f0c9a":  # build.py's step on FINN's graph writes the same folding_config.json
        graph = _finn_graph([layer.rsplit("_", 1)[0] for layer in _recorded_finn_layers(name)])
        assert build.step_bnnflow_folding(graph, SimpleNamespace(target_fps=None, output_dir=str(tmp_path))) is not None
        assert json.loads((tmp_path / "folding_config.json").read_text()) == written
    if name.startswith("cnv"):
        pools = [layer for layer in _recorded_finn_layers(name) if "Pool" in layer]
        assert pools == (["StreamingMaxPool_hls_0", "StreamingMaxPool_hls_1"] if name.endswith("39f0c9a")
                         else ["Pool_hls_0", "Pool_hls_1"])


def test_a_layer_finns_graph_lacks_stops_the_build_in_one_line(tmp_path: Path) -> None:
    build = _build_script(FINN_RUNS / "cnv_39f0c9a", tmp_path)
    recorded = [layer.rsplit("_", 1)[0] for layer in _recorded_finn_layers("cnv_39f0c9a")]
    layers = build.settings()["layers"]
    # a FINN without bnnflow's second max-pool unit
    graph = _finn_graph(recorded[:9] + recorded[10:]).transform(GiveUniqueNodeNames())
    with pytest.raises(build.BnnflowError) as caught:
        build.step_bnnflow_folding(graph, SimpleNamespace(target_fps=3000, output_dir=str(tmp_path)))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        "FINN's graph has no StreamingMaxPool or ConvolutionInputGenerator + Pool for bnnflow's StreamingMaxPool_1 "
        "(StreamingMaxPool) after MVAU_hls_3 (there: ConvolutionInputGenerator_rtl_4); FINN's layers: ")
    # a layer FINN inserts between two of bnnflow's, and a graph without bnnflow's first layer
    with pytest.raises(build.BnnflowError, match="for bnnflow's MVTU_0 \\(MVTU\\) after ConvolutionInputGenerator_rtl_0 "
                       "\\(there: FMPadding_rtl_0\\)"):
        build.match_layers(_chain("ConvolutionInputGenerator_rtl_0", "FMPadding_rtl_0", "MVAU_hls_0"), layers)
    with pytest.raises(build.BnnflowError, match="no ConvolutionInputGenerator or FMPadding \\+ ConvolutionInputGenerator "
                       "or DownSampler for bnnflow's SlidingWindow_0 \\(SlidingWindow\\) anywhere; FINN's layers: "
                       "MVAU_hls_0$"):
        build.match_layers(_chain("MVAU_hls_0"), layers)
    # FINN layers after bnnflow's last are FINN's float tail in hardware (even of a kind bnnflow's become)
    folding, extra = build.match_layers(_chain(*_recorded_finn_layers("cnv_39f0c9a"), "MVAU_hls_9"), layers)
    assert extra == ["MVAU_hls_9"] and "MVAU_hls_8" in folding


def test_a_bnnflow_op_finn_has_no_layer_for_is_refused(cnv_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bnnflow.hw.finn import support

    dataflow = ModelWrapper(str(cnv_run / "dataflow.onnx"))
    monkeypatch.delitem(support.FINN_LAYERS, "StreamingMaxPool")  # as an op bnnflow adds before FINN has one
    with pytest.raises(UnsupportedGraphError, match="^FINN has no layer for node StreamingMaxPool_0 "
                       "\\(StreamingMaxPool\\), so FINN cannot build this network"):
        support.finn_layers(dataflow, folding=True)


def test_zero_padded_binary_maps_are_refused_naming_the_fix(cli, resnet_runs: dict[int, Path]) -> None:
    """FINN pads a binary map with bit 0, a -1, and has no layer for the correction a zero border needs (nor pads
    with +1): bnnflow refuses such a network before FINN runs, naming the layer and the model option that fixes it."""
    for pad_value, layer in ((0, "MVTU_1 (MVTU): FINN lacks a zero-padding correction for binary maps"),
                             (1, "SlidingWindow_1 (SlidingWindow): FINN lacks padding with 1")):
        done = cli("finn", str(resnet_runs[pad_value]), "--no-build")
        assert done.returncode == 3 and one_error_line(done.stderr), done.stderr
        assert f"FINN has no layer for node {layer}" in done.stderr and "model.args.pad_value = -1" in done.stderr
        assert not (resnet_runs[pad_value] / "finn").exists()


def test_a_residual_network_padded_with_minus_one_gets_its_build_directory(cli, resnet_runs: dict[int, Path],
                                                                            tmp_path: Path) -> None:
    """ResNet-20 (hw, pad_value = -1): bnnflow's layers with the layers each reads (forks and joins), and build.py's
    rewrite of the option-A shortcuts (subsampling + channel zero-extension) as 1 x 1 strided convolutions with
    0 / 1 weights, which qonnx executes to the same outputs."""
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    run = resnet_runs[-1]
    done = cli("finn", str(run), "--no-build", "--verify-samples", "4")
    assert done.returncode == 0, done.stderr
    folder = run / "finn"
    layers = _check_layers(folder, run)
    ops = [layer["op"] for layer in layers]
    assert ops.count("AddStreams") == ops.count("DuplicateStreams") == 3 and ops.count("ChannelPad") == 2
    images = np.load(folder / "input.npy")
    assert np.allclose(np.load(folder / "expected_output.npy"), _model_outputs(run, images), rtol=1e-5, atol=1e-5)
    build = _build_script(folder, tmp_path)
    model = cleanup_model(ModelWrapper(str(folder / "model.onnx"))).transform(InferShapes()).transform(InferDataTypes())
    before = execute(model, images)[model.graph.output[0].name]
    rewritten = build.step_bnnflow_channel_pads(ModelWrapper(copy.deepcopy(model.model)), None)
    kinds = [n.op_type for n in rewritten.graph.node]
    assert "Slice" not in kinds and "Pad" in kinds  # the shortcuts' Slices and channel Pads went, the -1 borders stay
    assert kinds.count("Conv") == [n.op_type for n in model.graph.node].count("Conv") + 2
    assert np.array_equal(execute(rewritten, images)[rewritten.graph.output[0].name], before)


def test_software_left_between_finns_hardware_layers_stops_the_build_in_one_line(tmp_path: Path) -> None:
    """What FINN's dev branch made of ResNet-20's model.qonnx before build.py rewrote option-A shortcuts: its
    step_convert_to_hw left the shortcut's Slice and Pad in software between hardware layers, where FINN's
    partitioning would stop on an assertion."""
    build = _build_script(FINN_RUNS / "tfc_39f0c9a", tmp_path)
    hls = "finn.custom_op.fpgadataflow.hls"
    nodes = [helper.make_node("Thresholding_hls", ["x"], ["a"], domain=hls),
             helper.make_node("DuplicateStreams_hls", ["a"], ["b", "c"], domain=hls),
             helper.make_node("Slice", ["c", "s", "e", "ax", "st"], ["d"]),
             helper.make_node("Pad", ["d", "p"], ["f"]),
             helper.make_node("MVAU_hls", ["b"], ["g"], domain=hls),
             helper.make_node("ElementwiseAdd_hls", ["g", "f"], ["h"], domain=hls),
             helper.make_node("Mul", ["h", "k"], ["y"])]  # after the last hardware layer: FINN's parent graph's
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    model = ModelWrapper(helper.make_model(graph))
    with pytest.raises(build.BnnflowError) as caught:
        build.step_bnnflow_check_hw(model, None)
    assert str(caught.value) == ("FINN has no hardware layer for Pad, Slice here: its step_convert_to_hw left 2 "
                                 "node(s) in software between its hardware layers (Slice_0, Pad_0)")
    model.graph.node.remove(model.graph.node[3])  # without the Slice and Pad, the join reading the fork: all in
    model.graph.node.remove(model.graph.node[2])  # hardware but the Mul after it
    model.graph.node[3].input[1] = "c"
    assert build.step_bnnflow_check_hw(model, None) is not None


def _input_quantizer(*ops: str, signed: int) -> ModelWrapper:
    """graph input -> ops -> an 8-bit Quant (scale 2**-8) -> output"""
    names = ["x", *[f"a{i}" for i in range(len(ops))]]
    nodes = [helper.make_node(op, [names[i]], [names[i + 1]]) for i, op in enumerate(ops)]
    nodes.append(helper.make_node("Quant", [names[-1], "scale", "zeropt", "bits"], ["y"], domain="qonnx.custom_op.general",
                                  signed=signed, narrow=0, rounding_mode="ROUND"))
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("scale", 2**-8), ("zeropt", 0), ("bits", 8))]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return ModelWrapper(helper.make_model(graph))


def test_unsigned_quantizers_go_to_finn_only_behind_a_relu() -> None:
    from bnnflow.hw.finn.support import check_quantizers

    check_quantizers(_input_quantizer("Flatten", "Relu", signed=0))  # bnnflow's models' input quantizer
    check_quantizers(_input_quantizer(signed=1))  # a signed one on an identity (Brevitas's CNV)
    with pytest.raises(UnsupportedGraphError, match="follows the graph input, not a ReLU.*`bnnflow export RUN`"):
        check_quantizers(_input_quantizer(signed=0))  # what bnnflow exported before: FINN's conversion stops on it
    with pytest.raises(UnsupportedGraphError, match="follows Flatten, not a ReLU"):
        check_quantizers(_input_quantizer("Flatten", signed=0))


def test_inputs_halfway_between_two_codes_go_to_finn_on_the_code_qonnx_rounds_them_to() -> None:
    """FINN's thresholds round a tie of the input quantizer up, qonnx's Quant to even (the digits upsampled to
    32 x 32 have thousands): FINN gets such values on the code model.qonnx gives them, and nothing else moves."""
    from bnnflow.pipeline.finn import off_rounding_ties

    model = _input_quantizer("Relu", signed=0)
    step = 2.0**-8
    images = np.array([[3.5 * step, 4.5 * step, 0.3, -0.5 * step]], np.float32)
    fixed, ties = off_rounding_ties(model, images)
    assert ties == 2 and fixed.dtype == np.float32
    assert np.array_equal(fixed, np.array([[4 * step, 4 * step, 0.3, -0.5 * step]], np.float32))
    codes = [np.round(np.maximum(x.astype(np.float64), 0) / step) for x in (fixed, images)]  # qonnx: half to even
    assert np.array_equal(*codes)  # the same input codes for model.qonnx
    assert off_rounding_ties(_input_quantizer("Flatten", signed=1), images)[1] == 0  # no quantizer on the input


def test_collect_reports_reads_what_finn_wrote() -> None:
    from bnnflow.hw.finn.runner import collect_reports

    figures = collect_reports(FINN_RUNS / "tfc_39f0c9a")
    assert figures["estimated_fps"] == pytest.approx(255102.0, abs=0.1)
    assert figures["bottleneck"] == "MVAU_hls_0" and figures["bottleneck_cycles"] == 392
    assert figures["estimated_resources"] == {"BRAM_18K": 7.0, "LUT": 2355.0, "URAM": 0.0, "DSP": 0.0}
    assert figures["verification_passed"] == 12 and figures["verification_failed"] == []
    assert "bitfile" not in figures  # an estimate-only build makes none
    dev = collect_reports(FINN_RUNS / "cnv_73ba5ed")
    assert dev["estimated_fps"] == pytest.approx(3028.5, abs=0.1) and dev["verification_passed"] == 12


def test_board_tables_agree() -> None:
    from bnnflow.hw.boards import BOARDS, XILINX

    for board in BOARDS.values():
        finn = finn_board_for(board.name)
        assert (finn is not None) == (board.fabric is XILINX), board.name
        if finn is not None:
            assert finn.part == board.part, board.name
    assert get_finn_board("kv260").name == "KV260_SOM" and get_finn_board("pynq-z2").name == "Pynq-Z2"
    assert all(b.platform for b in FINN_BOARDS.values() if not b.is_zynq)
