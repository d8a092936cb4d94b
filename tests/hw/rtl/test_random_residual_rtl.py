"""Random small residual, padded and multi-bit networks (the compiler suite's generator), compiled, folded at
random, and their Verilog cosimulated against the simulator under random back-pressure: exact, no deadlock, and
cycles per frame as the timing model says (``check_design``).

The generator is the one ``tests/pipeline/compile/test_random_networks.py`` draws 200 networks from; here each
drawn network must hold at least one residual unit, zero or one padding of a binary map, or a multi-bit
activation, so every example exercises what plain chains do not: forks, joins and their FIFOs, padding with its
correction, many-threshold requantization, sum pooling.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bnnflow.hw.folding import _units
from bnnflow.pipeline.compile.stage import compile_model
from bnnflow.pipeline.config import CompileConfig
from bnnflow.pipeline.export import export_model
from tests.hw.rtl.test_rtl import check_design
from tests.pipeline.compile.test_random_networks import build, network_specs

NETWORKS = 20


def interesting(spec: dict) -> bool:
    """A residual unit, a padded binary conv, or a multi-bit activation somewhere."""
    for step in spec["steps"]:
        if step["op"] == "residual" or (step["op"] == "conv" and step["padding"]):
            return True
        if step["op"] == "conv" and step["quant"][0] == "act" and step["quant"][1] > 1:
            return True
    return spec["stem_padding"] == 1 and spec["stem_quant"][0] == "act" and spec["stem_quant"][1] > 1


@st.composite
def residual_networks(draw) -> tuple[dict, int]:
    spec = draw(network_specs().filter(interesting))
    return spec, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=NETWORKS, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
@given(residual_networks())
def test_random_residual_networks_cosimulate_exactly(tmp_path: Path, example) -> None:
    spec, fold_seed = example
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, dataflow, _ = compile_model(export_model(build(spec), spec["input"]), CompileConfig(board="ulx3s",
                                                                                            target_fps=1000))
    chooser = random.Random(fold_seed)
    for unit in _units(dataflow):
        unit.apply(chooser.choice(unit.options))
    check_design(dataflow, tmp_path / f"net{fold_seed}", frames=12, seed=fold_seed % 1000)
