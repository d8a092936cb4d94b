"""A one-line check for a user's own test suite: does the accelerator give these outputs for these inputs?

    from bnnflow.hw.testing import assert_accelerator_matches

    def test_my_accelerator():
        assert_accelerator_matches("runs/default/dataflow.onnx", inputs, expected)

It runs the bit-exact simulator and raises ``AssertionError`` with a short diff (how many outputs differ, the
first indices, expected vs got) when any output differs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.hw.simulator import Simulator, compare, describe_mismatch


def assert_accelerator_matches(dataflow: str | Path | ModelWrapper, inputs: np.ndarray, expected: np.ndarray,
                               batch: int = 256) -> np.ndarray:
    """Simulate ``dataflow`` on ``inputs`` and assert the outputs equal ``expected`` exactly; returns them."""
    if not isinstance(dataflow, ModelWrapper):
        from bnnflow.pipeline.onnx_files import load_model

        dataflow = load_model(Path(dataflow), "compile")
    got = Simulator(dataflow).run(inputs, batch)
    result = compare(np.asarray(expected), got)
    if result["mismatches"]:
        raise AssertionError(f"accelerator output mismatch: {describe_mismatch(result)}")
    return got
