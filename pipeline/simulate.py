"""The simulate stage: the bit-exact simulator on a run's dataflow graph, checked against qonnx's executor.

Inputs are what the accelerator receives: integer codes (or bits) in its input layout. For a run they come
from the test split through the host part of ``streamlined.onnx``; the compile stage's verification arrays
(``verify/compile.npz``) are reused when present, so qonnx's executor runs once per run, not twice. The
stage writes ``sim/report.json`` (the timing model at the clock, the comparison, the simulator's measured
frames/s) and ``sim/outputs.npy``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.errors import DataError, VerificationError
from bnnflow.hw.convert import output_to_accelerator, to_accelerator
from bnnflow.hw.estimates import timing
from bnnflow.hw.simulator import Simulator, compare, describe_mismatch, frames_per_second
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.console import out
from bnnflow.pipeline.data import load_data, stack
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.onnx_files import load_model
from bnnflow.pipeline.rundir import RunDir, atomic_path, atomic_write_text


def load_array(path: Path, what: str) -> np.ndarray:
    """An .npy file as an array; a missing or malformed file is one clear ``DataError``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file {path} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{what} file {path} is not a numpy .npy array ({err}); save it with numpy.save") from None


def save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def split_inputs(cfg: Config, run: RunDir, split: str, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A data split as accelerator inputs, with the streamlined graph's outputs at the hardware boundary."""
    dataflow = load_model(run.dataflow, "compile")
    streamlined = load_model(run.streamlined, "compile")
    data = load_data(cfg.data)
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r} (use train or test)")
    images, _ = stack(data.train if split == "train" else data.test)
    if limit:
        images = images[:limit]
    hw_in = dataflow.get_metadata_prop("bnnflow.streamlined_input")
    hw_out = dataflow.get_metadata_prop("bnnflow.streamlined_output")
    levels = execute(streamlined, images.numpy(), [hw_in, hw_out])
    expected = levels[hw_out]
    if dataflow.get_metadata_prop("bnnflow.output_kind") == "label":
        expected = expected.argmax(axis=-1)[:, None]
    return (to_accelerator(dataflow, levels[hw_in]).astype(np.int64),
            output_to_accelerator(dataflow, expected).astype(np.int64))


def simulate_run(cfg: Config, run: RunDir) -> dict[str, Any]:
    """The simulate step of a run: simulator == qonnx's executor on dataflow.onnx, plus the timing report."""
    dataflow = load_model(run.dataflow, "compile")
    golden = run.verify_dir / "compile.npz"
    if golden.is_file():
        arrays = np.load(golden)
        inputs, expected = arrays["hw_input"], arrays["hw_output"]
    else:
        inputs, _ = split_inputs(cfg, run, "test", cfg.compile.verify_samples)
        expected = execute(dataflow, inputs)[dataflow.graph.output[0].name].astype(np.int64)
    simulator = Simulator(dataflow)
    out.info(f"simulating {len(inputs)} frames bit-exactly")
    got = simulator.run(inputs)
    result = compare(expected, got)
    clock = cfg.compile.clock_mhz or _board_clock(cfg)
    report = {
        "timing": timing(dataflow, clock),
        "comparison": result,
        "simulator_frames_per_second": round(frames_per_second(simulator, inputs), 1),
    }
    atomic_write_text(run.root / "sim" / "report.json", json.dumps(report, indent=2) + "\n")
    save_array(run.root / "sim" / "outputs.npy", got)
    if result["mismatches"]:
        raise VerificationError(f"simulate: the simulator disagrees with qonnx's executor: {describe_mismatch(result)}")
    return {
        "simulated_samples": len(inputs),
        "mismatches": 0,
        "frames_per_second": round(report["timing"]["frames_per_second"], 1),
        "initiation_interval_cycles": report["timing"]["initiation_interval_cycles"],
        "latency_cycles": report["timing"]["latency_cycles"],
        "bottleneck": report["timing"]["bottleneck"],
        "simulator_frames_per_second": report["simulator_frames_per_second"],
    }


def _board_clock(cfg: Config) -> float:
    from bnnflow.hw.boards import get_board

    return get_board(cfg.compile.board).clock_mhz
