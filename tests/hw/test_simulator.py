"""The simulator's interfaces: the CLI for CI, golden vectors, the pytest helper, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bnnflow.errors import DataError, UnsupportedGraphError
from bnnflow.hw.simulator import Simulator, pack_bits
from bnnflow.hw.testing import assert_accelerator_matches
from bnnflow.pipeline.onnx_files import load_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A trained and compiled digits run (3 epochs), through the real steps."""
    from bnnflow.pipeline.config import Config
    from bnnflow.pipeline.steps import prepare_run, run_steps, validate

    cfg = validate(Config().with_overrides({"train.epochs": 3, "train.threads": 1}))
    run = prepare_run(cfg, tmp_path_factory.mktemp("sim") / "run")
    run_steps(cfg, run, ["train", "export", "compile", "simulate"])
    return run.root


def test_pack_bits_little_endian_zero_padded() -> None:
    bits = np.zeros((1, 70), dtype=np.uint8)
    bits[0, [0, 3, 64, 69]] = 1
    words = pack_bits(bits)
    assert words.shape == (1, 2) and words.dtype == np.uint64
    assert int(words[0, 0]) == (1 << 0) | (1 << 3) and int(words[0, 1]) == (1 << 0) | (1 << 5)


def test_simulate_step_writes_report(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    entry = summary["stages"]["simulate"]
    assert entry["status"] == "ok" and entry["mismatches"] == 0 and entry["simulated_samples"] == 360
    report = json.loads((run_dir / "sim" / "report.json").read_text())
    cycles = [layer["cycles"] for layer in report["timing"]["layers"]]
    assert report["timing"]["initiation_interval_cycles"] == max(cycles)
    assert report["timing"]["frames_per_second"] == pytest.approx(report["timing"]["clock_mhz"] * 1e6 / max(cycles))
    assert report["comparison"]["mismatches"] == 0
    np.testing.assert_array_equal(np.load(run_dir / "sim" / "outputs.npy"),
                                  np.load(run_dir / "verify" / "compile.npz")["hw_output"])


def test_cli_record_then_check_golden(cli, run_dir: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden"
    first = cli("simulate", str(run_dir), "--split", "test", "--record", str(golden))
    assert first.returncode == 0, first.stderr
    assert np.load(golden / "inputs.npy").shape[0] == 360
    again = cli("simulate", str(run_dir / "dataflow.onnx"), "--golden", str(golden), "--out", str(tmp_path / "y.npy"),
                "--clock-mhz", "50")
    assert again.returncode == 0, again.stderr
    assert "timing at 50 MHz:" in again.stderr and "bounded by " in again.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.load(golden / "expected.npy"))


def test_cli_mismatch_exits_4_with_short_diff(cli, run_dir: Path, tmp_path: Path) -> None:
    arrays = np.load(run_dir / "verify" / "compile.npz")
    np.save(tmp_path / "x.npy", arrays["hw_input"])
    wrong = arrays["hw_output"].copy()
    wrong[[5, 9], 0] += 1
    np.save(tmp_path / "y.npy", wrong)
    result = cli("simulate", str(run_dir / "dataflow.onnx"), "--inputs", str(tmp_path / "x.npy"), "--expect",
                 str(tmp_path / "y.npy"))
    assert result.returncode == 4
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "2 of 360 outputs differ" in error[0] and "[5, 9]" in error[0]


BAD_INPUTS = [
    # (array to save, text of the one-line error)
    (lambda x: x[:, :32], "shape"),
    (lambda x: x.astype(np.float32) + 0.5, "non-integer"),
    (lambda x: x * 0 + 300, "outside UINT8"),
    (lambda x: x.astype(str), "dtype"),
]


@pytest.mark.parametrize("make,needle", BAD_INPUTS, ids=["shape", "fraction", "range", "dtype"])
def test_cli_bad_inputs_one_line(cli, run_dir: Path, tmp_path: Path, make, needle: str) -> None:
    x = np.load(run_dir / "verify" / "compile.npz")["hw_input"]
    np.save(tmp_path / "x.npy", make(x))
    result = cli("simulate", str(run_dir / "dataflow.onnx"), "--inputs", str(tmp_path / "x.npy"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert needle in result.stderr


def test_cli_corrupt_npy_and_wrong_graph(cli, run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    result = cli("simulate", str(run_dir / "dataflow.onnx"), "--inputs", str(tmp_path / "x.npy"))
    assert result.returncode == 2 and "not a numpy .npy array" in result.stderr
    np.save(tmp_path / "ok.npy", np.zeros((1, 1, 8, 8)))
    result = cli("simulate", str(run_dir / "model.qonnx"), "--inputs", str(tmp_path / "ok.npy"))
    assert result.returncode == 3 and "not a hardware op" in result.stderr
    (tmp_path / "broken.onnx").write_bytes(b"\x00\x01garbage")
    result = cli("simulate", str(tmp_path / "broken.onnx"), "--inputs", str(tmp_path / "ok.npy"))
    assert result.returncode == 2 and "not a valid ONNX model" in result.stderr


def test_assert_accelerator_matches_helper(run_dir: Path) -> None:
    arrays = np.load(run_dir / "verify" / "compile.npz")
    got = assert_accelerator_matches(run_dir / "dataflow.onnx", arrays["hw_input"], arrays["hw_output"])
    assert got.shape == arrays["hw_output"].shape
    wrong = arrays["hw_output"].copy()
    wrong[0, 0] -= 1
    with pytest.raises(AssertionError, match="1 of 360 outputs differ; first at \\[0\\]"):
        assert_accelerator_matches(run_dir / "dataflow.onnx", arrays["hw_input"], wrong)


def test_simulator_refuses_non_dataflow_graph(run_dir: Path) -> None:
    with pytest.raises(UnsupportedGraphError):
        Simulator(load_model(run_dir / "streamlined.onnx", "compile"))
    sim = Simulator(load_model(run_dir / "dataflow.onnx", "compile"))
    with pytest.raises(DataError, match="shape"):
        sim.run(np.zeros((2, 65)))


def test_numpy_fallback_equals_c_kernel(monkeypatch) -> None:
    """Without a C compiler the simulator falls back to numpy's bitwise_count, with the same results."""
    from bnnflow.hw import native

    rng = np.random.default_rng(7)
    bits_x, bits_w = rng.integers(0, 2, (37, 150)), rng.integers(0, 2, (11, 150))
    x, w = pack_bits(bits_x), pack_bits(bits_w)
    assert native.load_library() is not None, "this machine has a C compiler; the kernel must build"
    fast = native.xnor_popcount_gemm(x, w, 150)
    monkeypatch.setattr(native, "load_library", lambda: None)
    slow = native.xnor_popcount_gemm(x, w, 150)
    expected = (bits_x[:, None, :] == bits_w[None, :, :]).sum(axis=-1)
    np.testing.assert_array_equal(fast, expected)
    np.testing.assert_array_equal(slow, expected)
    codes, weights = rng.integers(0, 256, (9, 20)), rng.integers(-1, 2, (20, 4))
    np.testing.assert_array_equal(native.int_gemm(codes, weights), codes @ weights)
