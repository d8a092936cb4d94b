"""FINN build of a bnnflow accelerator. Run it with a Python that has FINN, e.g. inside the bnnflow image:

    python build.py              # everything dataflow_build_config.json asks for (Vivado needed past estimates)
    python build.py --estimate   # FINN's analytical estimates only; no Vivado or Vitis HLS needed

The folder holds what FINN's ``build_dataflow`` directory holds (``model.onnx``, ``dataflow_build_config.json``)
plus ``folding_config.json``, the verification vectors bnnflow's simulator wrote (``input.npy``,
``expected_output.npy``) and ``bnnflow.json``. This script adds two steps to FINN's own list:

- ``step_bnnflow_qonnx_to_finn`` replaces ``step_qonnx_to_finn``: FINN's step only converts a model that has
  "Quant", "Trunc" or "BinaryQuant" nodes, so a model whose quantizers are all BipolarQuant would reach
  streamlining unconverted; this one converts any QONNX quantizer, and appends TopK when the bnnflow accelerator
  ends in a label select.
- ``step_bnnflow_check_folding`` runs before ``step_apply_folding_config``: every layer name in
  folding_config.json must name a layer of FINN's graph (ApplyConfig would skip an unknown one silently).

After a build that made the deployment package, it writes ``deploy/driver/bnnflow_input.npy`` and
``bnnflow_expected.npy``: the accelerator's own input and output for the verification inputs, computed by FINN's
executor, which ``bnnflow finn --check-on-board`` compares with what the board returns.

This file runs in FINN's environment, not bnnflow's: it imports only FINN, qonnx, onnx and numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = json.loads((HERE / "bnnflow.json").read_text())

ESTIMATE_STEPS_END = "step_generate_estimate_reports"


def step_bnnflow_qonnx_to_finn(model, cfg):
    """QONNX to FINN-ONNX for any QONNX quantizer (BipolarQuant included), then TopK if the accelerator has one."""
    from finn.builder.build_dataflow_config import VerificationStepType
    from finn.builder.build_dataflow_steps import verify_step
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from finn.transformation.qonnx.quant_act_to_multithreshold import default_filter_function_generator
    from qonnx.transformation.insert_topk import InsertTopK
    from qonnx.util.cleanup import cleanup_model

    if {n.op_type for n in model.graph.node} & {"Quant", "BipolarQuant", "BinaryQuant", "Trunc"}:
        model = cleanup_model(model)
        model = model.transform(ConvertQONNXtoFINN(filter_function=default_filter_function_generator(
            max_multithreshold_bit_width=cfg.max_multithreshold_bit_width)))
    if SETTINGS["label_select"]:
        model = model.transform(InsertTopK(k=1))
    if VerificationStepType.QONNX_TO_FINN_PYTHON in cfg._resolve_verification_steps():
        verify_step(model, cfg, "qonnx_to_finn_python", need_parent=False)
    return model


def step_bnnflow_check_folding(model, cfg):
    """Stop with a clear message when folding_config.json names layers FINN's graph does not have."""
    from qonnx.transformation.general import GiveUniqueNodeNames

    if cfg.folding_config_file is None:
        return model
    model = model.transform(GiveUniqueNodeNames())
    config = json.loads(Path(cfg.folding_config_file).read_text())
    named = {k for k in config if k != "Defaults"}
    nodes = [n.name for n in model.graph.node]
    unknown = sorted(named - set(nodes))
    if unknown:
        sys.exit(f"build.py: folding_config.json names layers FINN's graph does not have: {', '.join(unknown)} "
                 f"(FINN's layers: {', '.join(nodes)}); rewrite it with `bnnflow finn RUN --target-fps N` "
                 "to let FINN fold, or fix the names")
    return model


def build_steps(estimate_only: bool) -> list:
    from finn.builder.build_dataflow_config import default_build_dataflow_steps, estimate_only_dataflow_steps

    names = estimate_only_dataflow_steps if estimate_only else default_build_dataflow_steps
    steps: list = []
    for name in names:
        if name == "step_qonnx_to_finn":
            steps.append(step_bnnflow_qonnx_to_finn)
            continue
        if name == "step_apply_folding_config":
            steps.append(step_bnnflow_check_folding)
        steps.append(name)
    return steps


def write_board_vectors(cfg) -> None:
    """The accelerator's input and expected output for the verification inputs, next to FINN's PYNQ driver."""
    import numpy as np
    from finn.util.test import execute_parent
    from qonnx.core.modelwrapper import ModelWrapper

    out = Path(cfg.output_dir)
    driver = out / "deploy" / "driver"
    parent_path = out / "intermediate_models" / "dataflow_parent.onnx"
    child_path = out / "intermediate_models" / "step_minimize_bit_width.onnx"
    if not (driver.is_dir() and parent_path.is_file() and child_path.is_file()):
        return
    parent = ModelWrapper(str(parent_path))
    partition = parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]
    ishape = parent.get_tensor_shape(parent.graph.input[0].name)
    inputs, outputs = [], []
    for x in np.load(HERE / "input.npy"):
        ctx = execute_parent(str(parent_path), str(child_path), x.reshape(ishape), return_full_ctx=True)
        inputs.append(ctx[partition.input[0]])
        outputs.append(ctx[partition.output[0]])
    np.save(driver / "bnnflow_input.npy", np.concatenate(inputs))
    np.save(driver / "bnnflow_expected.npy", np.concatenate(outputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--estimate", action="store_true", help="FINN's estimate reports only (no Vivado)")
    args = parser.parse_args()
    try:
        from finn.builder.build_dataflow import build_dataflow_cfg
        from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType
    except ImportError as err:
        sys.exit(f"build.py: FINN is not importable here ({err}); run this inside the bnnflow image or a FINN "
                 "environment (FINN_ROOT set, FINN's src on the path)")
    os.chdir(HERE)  # the config's paths are relative to this folder, as in FINN's build_dataflow -d
    cfg = DataflowBuildConfig.from_json((HERE / "dataflow_build_config.json").read_text())
    if args.estimate:
        cfg.generate_outputs = [DataflowOutputType.ESTIMATE_REPORTS]
        cfg.verify_steps = [s for s in cfg.verify_steps or [] if str(getattr(s, "value", s)).endswith("_python")]
    cfg.steps = build_steps(args.estimate)
    status = build_dataflow_cfg(str(HERE / "model.onnx"), cfg)
    if status == 0 and DataflowOutputType.DEPLOYMENT_PACKAGE in cfg.generate_outputs:
        write_board_vectors(cfg)
    sys.exit(status)


if __name__ == "__main__":
    main()
