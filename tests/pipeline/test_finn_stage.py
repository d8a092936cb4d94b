"""`bnnflow finn`: the FINN build directory of real runs (digits, Brevitas TFC and CNV), read back and checked
against the simulator, FINN's layer names and board table, and every way the command can end without FINN.

FINN itself is not installed in CI (it is not on PyPI); the directories these tests check were also built by
FINN's own builder from its source (estimate steps, verification included) as a local cross-check: see
tests/data/finn_estimate_tfc/README.md, whose files test the report reading here.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.hw.finn.boards import FINN_BOARDS, finn_board_for, get_finn_board
from bnnflow.hw.simulator import Simulator
from bnnflow.pipeline.execute import execute

DATA = Path(__file__).resolve().parents[1] / "data"

#: the layer names FINN's builder gave the Brevitas CNV_1W1A dataflow graph (FINN dev@39f0c9a, local run)
FINN_CNV_LAYERS = [
    "ConvolutionInputGenerator_rtl_0", "MVAU_hls_0", "ConvolutionInputGenerator_rtl_1", "MVAU_hls_1",
    "StreamingMaxPool_hls_0", "ConvolutionInputGenerator_rtl_2", "MVAU_hls_2", "ConvolutionInputGenerator_rtl_3",
    "MVAU_hls_3", "StreamingMaxPool_hls_1", "ConvolutionInputGenerator_rtl_4", "MVAU_hls_4",
    "ConvolutionInputGenerator_rtl_5", "MVAU_hls_5", "MVAU_hls_6", "MVAU_hls_7", "MVAU_hls_8"]


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
    np.save(root / "inputs.npy", np.random.default_rng(0).random((6, *shape), dtype=np.float32))
    done = run_cli("-q", "compile", f"{name}.qonnx", "--out", name, "--inputs", "inputs.npy", *options, cwd=root)
    assert done.returncode == 0, done.stderr
    return root / name


@pytest.fixture(scope="module")
def tfc_run(tmp_path_factory) -> Path:
    return _brevitas_run(tmp_path_factory.mktemp("tfc"), "TFC_1W1A", (1, 28, 28), "--label-select")


@pytest.fixture(scope="module")
def cnv_run(tmp_path_factory) -> Path:
    return _brevitas_run(tmp_path_factory.mktemp("cnv"), "CNV_1W1A", (3, 32, 32), "--target-fps", "3000")


def _accelerator_outputs(run: Path, images: np.ndarray) -> np.ndarray:
    """The simulator's outputs for model inputs ``images`` (through streamlined.onnx to the input codes)."""
    dataflow = ModelWrapper(str(run / "dataflow.onnx"))
    streamlined = ModelWrapper(str(run / "streamlined.onnx"))
    hw_in = dataflow.get_metadata_prop("bnnflow.streamlined_input")
    codes = execute(streamlined, images, [hw_in])[hw_in].astype(np.int64)
    return Simulator(dataflow).run(codes).reshape(len(images), -1)


def _model_outputs(run: Path, images: np.ndarray) -> np.ndarray:
    model = ModelWrapper(str(run / "model.qonnx"))
    return execute(model, images)[model.graph.output[0].name].reshape(len(images), -1)


def _check_folding(folder: Path, run: Path) -> dict:
    """folding_config.json holds, under FINN's names, the PE and SIMD of dataflow.onnx's layers, in order."""
    config = json.loads((folder / "folding_config.json").read_text())
    settings = json.loads((folder / "bnnflow.json").read_text())
    assert config["Defaults"] == {}  # FINN's ApplyConfig needs the key
    dataflow = ModelWrapper(str(run / "dataflow.onnx"))
    nodes = {n.name: getCustomOp(n) for n in dataflow.graph.node if n.domain == "bnnflow.hw"}
    assert [pair["bnnflow"] for pair in settings["layers"]] == list(nodes)
    for pair in settings["layers"]:
        for attr, value in config[pair["finn"]].items():
            assert nodes[pair["bnnflow"]].get_nodeattr(attr) == value
    assert list(config)[1:] == [pair["finn"] for pair in settings["layers"]]
    return config


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
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "dataflow_build_config.json", "folding_config.json",
                                                  "input.npy", "expected_output.npy", "bnnflow.json", "build.py"}
    _check_build_config(folder, "Pynq-Z1", 100.0)
    config = _check_folding(folder, digits_run)
    assert list(config)[1:] == ["MVAU_hls_0", "MVAU_hls_1", "MVAU_hls_2", "MVAU_hls_3"]
    # the input quantizer became a Mul by its scale; the model takes the 8-bit codes, which FINN takes as UINT8
    model = ModelWrapper(str(folder / "model.onnx"))
    assert "Quant" not in {n.op_type for n in model.graph.node}
    assert model.get_tensor_datatype(model.graph.input[0].name).name == "UINT8"
    codes = np.load(folder / "input.npy")
    from bnnflow.pipeline.data import load_data, stack
    from bnnflow.pipeline.rundir import RunDir

    images = stack(load_data(RunDir(digits_run).read_config().data).test)[0].numpy()[: len(codes)]
    dataflow = ModelWrapper(str(digits_run / "dataflow.onnx"))
    hw_in = dataflow.get_metadata_prop("bnnflow.streamlined_input")
    accelerator_codes = execute(ModelWrapper(str(digits_run / "streamlined.onnx")), images, [hw_in])[hw_in]
    assert len(codes) == 10 and np.array_equal(codes.reshape(10, -1), accelerator_codes.reshape(10, -1))
    # expected outputs: the simulator's scores through the logit scale, which is what model.qonnx outputs
    expected = np.load(folder / "expected_output.npy")
    scores = _accelerator_outputs(digits_run, images)
    assert np.array_equal(expected.argmax(axis=1), scores.argmax(axis=1))
    # the graph's tail maps the XNOR popcounts to scores by one increasing affine map: a * popcount + b
    slope, offset = np.polyfit(scores.ravel().astype(np.float64), expected.ravel().astype(np.float64), 1)
    assert slope > 0 and np.allclose(expected, slope * scores + offset, rtol=1e-5, atol=1e-5)
    assert np.allclose(expected, _model_outputs(digits_run, images), rtol=1e-5, atol=1e-6)
    # the modified model gives model.qonnx's outputs on the codes
    assert np.allclose(execute(model, codes)[model.graph.output[0].name].reshape(len(codes), -1), expected,
                       rtol=1e-5, atol=1e-6)
    stage = json.loads((digits_run / "summary.json").read_text())["stages"]["finn"]
    assert stage["status"] == "ok" and stage["built"] is False and stage["verify_samples"] == 10


def test_tfc_with_label_select(cli, tfc_run: Path) -> None:
    done = cli("finn", str(tfc_run), "--verify-samples", "6")
    assert done.returncode == 0, done.stderr
    folder = tfc_run / "finn"
    _check_build_config(folder, "Pynq-Z1", 100.0)
    config = _check_folding(folder, tfc_run)
    assert list(config)[1:] == ["MVAU_hls_0", "MVAU_hls_1", "MVAU_hls_2", "MVAU_hls_3", "LabelSelect_hls_0"]
    assert json.loads((folder / "bnnflow.json").read_text())["label_select"] is True  # build.py appends TopK
    # TFC's input quantizer is bipolar: the model goes to FINN as exported, on the model's own inputs
    assert (folder / "model.onnx").read_bytes() == ModelWrapper(str(tfc_run / "model.qonnx")).model.SerializeToString()
    images = np.load(folder / "input.npy")
    assert np.array_equal(images, np.load(tfc_run / "verify" / "inputs.npy"))
    expected = np.load(folder / "expected_output.npy")
    assert expected.shape == (6, 1)
    assert np.array_equal(expected, _accelerator_outputs(tfc_run, images))  # the class index, as simulated


def test_cnv_layer_names_are_finns(cli, cnv_run: Path) -> None:
    done = cli("finn", str(cnv_run), "--board", "ZCU104", "--clock-mhz", "125", "--verify-samples", "4")
    assert done.returncode == 0, done.stderr
    folder = cnv_run / "finn"
    _check_build_config(folder, "ZCU104", 125.0)
    assert list(_check_folding(folder, cnv_run))[1:] == FINN_CNV_LAYERS
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


def test_collect_reports_reads_what_finn_wrote() -> None:
    from bnnflow.hw.finn.runner import collect_reports

    figures = collect_reports(DATA / "finn_estimate_tfc")
    assert figures["estimated_fps"] == pytest.approx(255102.0, abs=0.1)
    assert figures["bottleneck"] == "MVAU_hls_0" and figures["bottleneck_cycles"] == 392
    assert figures["estimated_resources"] == {"BRAM_18K": 7.0, "LUT": 2355.0, "URAM": 0.0, "DSP": 0.0}
    assert figures["verification_passed"] == 20 and figures["verification_failed"] == []
    assert "bitfile" not in figures  # an estimate-only build makes none


def test_board_tables_agree() -> None:
    from bnnflow.hw.boards import BOARDS, XILINX

    for board in BOARDS.values():
        finn = finn_board_for(board.name)
        assert (finn is not None) == (board.fabric is XILINX), board.name
        if finn is not None:
            assert finn.part == board.part, board.name
    assert get_finn_board("kv260").name == "KV260_SOM" and get_finn_board("pynq-z2").name == "Pynq-Z2"
    assert all(b.platform for b in FINN_BOARDS.values() if not b.is_zynq)
