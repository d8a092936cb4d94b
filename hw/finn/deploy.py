"""Running a FINN deployment package on a PYNQ board and checking it against bnnflow's expected outputs.

FINN's deployment package (``output/deploy``: ``bitfile/finn-accel.bit`` and ``driver/driver.py``) is copied to
the board over ssh; FINN's driver runs the accelerator on ``bnnflow_input.npy`` (which build.py wrote next to it)
and the result comes back to be compared, integer for integer, with ``bnnflow_expected.npy``.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import numpy as np

from bnnflow.errors import ConfigError, ToolchainError, VerificationError
from bnnflow.pipeline.console import out

REMOTE_DIR = "bnnflow-finn"


def board_commands(folder: Path, host: str, samples: int) -> list[list[str]]:
    """The scp / ssh commands that run the deployment package in ``folder/output/deploy`` on ``host``."""
    deploy = folder / "output" / "deploy"
    remote = f"{REMOTE_DIR}/{folder.parent.name}"
    run = (f"cd {remote}/deploy/driver && sudo python3 driver.py --exec_mode execute --batchsize {samples} "
           f"--bitfile ../bitfile/finn-accel.bit --inputfile bnnflow_input.npy --outputfile bnnflow_output.npy")
    return [
        ["ssh", host, f"mkdir -p {remote}"],
        ["scp", "-r", str(deploy), f"{host}:{remote}/"],
        ["ssh", host, run],
        ["scp", f"{host}:{remote}/deploy/driver/bnnflow_output.npy", str(folder / "board_output.npy")],
    ]


def check_on_board(folder: Path, host: str | None) -> dict[str, int] | None:
    """Print the commands (no host) or run them and compare the board's outputs; a difference is an error."""
    driver = folder / "output" / "deploy" / "driver"
    vectors = driver / "bnnflow_input.npy", driver / "bnnflow_expected.npy"
    if not all(v.is_file() for v in vectors):
        raise ConfigError(f"{driver} has no deployment package with bnnflow's vectors yet; run the full FINN build "
                          "first (`bnnflow finn RUN` in the image, with Vivado mounted)")
    samples = len(np.load(vectors[0]))
    commands = board_commands(folder, host or "xilinx@pynq", samples)
    if host is None:
        out.info("to check the accelerator on a PYNQ board (replace xilinx@pynq with yours), run:")
        for command in commands:
            out.info("  " + shlex.join(command))
        return None
    for command in commands:
        out.info("$ " + shlex.join(command))
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise ToolchainError(f"`{shlex.join(command)}` failed (exit {result.returncode}): "
                                 f"{(result.stderr or result.stdout).strip()[-300:]}")
    got = np.load(folder / "board_output.npy")
    expected = np.load(vectors[1])
    if got.shape != expected.shape:
        raise VerificationError(f"the board returned shape {got.shape}, expected {expected.shape}")
    differ = int((got.reshape(len(got), -1) != expected.reshape(len(expected), -1)).any(axis=1).sum())
    if differ:
        raise VerificationError(f"on the board, {differ} of {samples} outputs differ from bnnflow's expected ones; "
                                f"they are in {folder / 'board_output.npy'}")
    return {"board_samples": samples, "board_mismatches": 0}
