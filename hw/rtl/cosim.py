"""Cosimulation: the generated RTL under Verilator against the bit-exact simulator, frame by frame.

Two runs of the same compiled model: one under random back-pressure (the source offers a beat with probability
``p_valid``, the sink takes one with probability ``p_ready``), whose outputs must equal the simulator's bit for
bit; and one with neither, whose spacing between finished frames is the design's measured initiation interval,
compared with the timing model's cycles per frame.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.errors import ToolchainError
from bnnflow.hw.rtl import verilator
from bnnflow.hw.rtl.generate import ACCEL_TOP, RtlDesign
from bnnflow.hw.rtl.stream import decode, encode, write_hex

#: frames run without back-pressure to measure cycles per frame; the first ones fill the pipeline
TIMING_FRAMES = 24


@dataclass
class CosimRun:
    outputs: np.ndarray  #: (frames, output elements) int64
    frame_cycles: np.ndarray  #: the cycle in which each frame's last output beat left
    cycles: int


def testbench_source() -> Path:
    return Path(str(resources.files("bnnflow.hw.rtl") / "tb_stream.cpp"))


def build(design: RtlDesign) -> Path:
    """The Verilator executable of the design (built once per design content)."""
    return verilator.build(design.source_paths, testbench_source(), ACCEL_TOP, design.folder / "obj_dir")


def run(design: RtlDesign, inputs: np.ndarray, *, seed: int = 0, p_valid: float = 1.0, p_ready: float = 1.0,
        work: Path | None = None) -> CosimRun:
    """Stream ``inputs`` (frames of accelerator input values) through the RTL; returns its outputs and timing."""
    exe = build(design).resolve()
    work = Path(work or design.folder / "cosim").resolve()  # the testbench runs in the design's folder
    work.mkdir(parents=True, exist_ok=True)
    in_hex, out_hex = work / "inputs.hex", work / "outputs.txt"
    write_hex(in_hex, encode(inputs, design.input))
    beats = len(inputs) * design.output.beats
    # generous: every input beat and output beat, times the worst folding, at the offered rates
    max_cycles = int(50_000 + 20 * len(inputs) * (design.input.beats + max(_layer_cycles(design), 1))
                     / max(min(p_valid, p_ready), 0.05))
    args = [str(exe), str(in_hex), str(out_hex), str(design.input.bytes_per_beat), str(design.output.bytes_per_beat),
            str(beats), str(seed), str(p_valid), str(p_ready), str(max_cycles)]
    # $readmemh paths are relative to the design folder
    proc = subprocess.run(args, cwd=design.folder, capture_output=True, text=True)
    if proc.returncode not in (0, 2):
        raise ToolchainError(f"the Verilator testbench failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    rows = [line.split() for line in out_hex.read_text().splitlines() if line.strip()]
    if proc.returncode == 2 or len(rows) < beats:
        raise ToolchainError(f"the RTL produced {len(rows)} of {beats} output beats in {max_cycles:,} cycles (a "
                             f"stall or a lost beat); the outputs so far are in {out_hex}")
    data = np.frombuffer(b"".join(bytes.fromhex(r[0].rjust(2 * design.output.bytes_per_beat, "0"))[::-1]
                                  for r in rows), dtype=np.uint8)
    cycles = np.asarray([int(r[1]) for r in rows], dtype=np.int64)
    frame_cycles = cycles[design.output.beats - 1:: design.output.beats]
    total = int(proc.stdout.split()[1]) if proc.stdout.startswith("cycles") else int(cycles[-1])
    return CosimRun(decode(data, design.output), frame_cycles, total)


def _layer_cycles(design: RtlDesign) -> int:
    """A bound on any layer's cycles per frame, from its stream shapes (for the testbench's time limit)."""
    worst = 0
    for layer in design.layers:
        p = layer.params
        if layer.module == "bnn_mvtu":
            worst = max(worst, layer.input.beats * (p["MH"] // p["PE"]))
        worst = max(worst, layer.input.beats, layer.output.beats)
    return worst


def measured_cycles_per_frame(frame_cycles: np.ndarray) -> float:
    """Steady-state cycles between finished frames: the median spacing over the second half of the run."""
    gaps = np.diff(frame_cycles)
    if len(gaps) == 0:
        raise ValueError("need at least two frames to measure cycles per frame")
    return float(np.median(gaps[len(gaps) // 2:]))


def cosimulate(design: RtlDesign, inputs: np.ndarray, expected: np.ndarray, model_cycles: int, *, seed: int = 0,
               p_valid: float = 0.7, p_ready: float = 0.6) -> dict[str, Any]:
    """Outputs under random back-pressure vs ``expected``, and measured vs modelled cycles per frame."""
    from bnnflow.hw.simulator import compare

    stressed = run(design, inputs, seed=seed, p_valid=p_valid, p_ready=p_ready)
    result = compare(expected.reshape(len(expected), -1), stressed.outputs)
    reps = max(1, -(-TIMING_FRAMES // max(len(inputs), 1)))
    timing_inputs = np.concatenate([inputs] * reps)[:TIMING_FRAMES]
    steady = run(design, timing_inputs)
    measured = measured_cycles_per_frame(steady.frame_cycles)
    return {
        **result,
        "back_pressure": {"p_valid": p_valid, "p_ready": p_ready, "seed": seed, "cycles": stressed.cycles},
        "cycles_per_frame": measured,
        "model_cycles_per_frame": model_cycles,
        "cycles_error": abs(measured - model_cycles) / model_cycles,
        "latency_cycles": int(steady.frame_cycles[0]),
    }
