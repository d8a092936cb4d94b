"""FINN build of a bnnflow accelerator. Run it with a Python that has FINN, e.g. inside the bnnflow image:

    python build.py              # everything dataflow_build_config.json asks for (Vivado needed past estimates)
    python build.py --estimate   # FINN's analytical estimates only; no Vivado or Vitis HLS needed

The folder holds what FINN's ``build_dataflow`` directory holds (``model.onnx``, ``dataflow_build_config.json``)
plus the verification vectors bnnflow's simulator wrote (``input.npy``, ``expected_output.npy``) and
``bnnflow.json``. This script adds three steps to FINN's own list:

- ``step_bnnflow_qonnx_to_finn`` replaces ``step_qonnx_to_finn``: FINN's step only converts a model that has
  "Quant", "Trunc" or "BinaryQuant" nodes, so a model whose quantizers are all BipolarQuant (Brevitas's TFC)
  would reach streamlining unconverted; this one converts any QONNX quantizer, and appends TopK when the bnnflow
  accelerator ends in a label select.
- ``step_bnnflow_check_hw`` runs after ``step_convert_to_hw``: when FINN left nodes in software between its
  hardware layers (a pattern no FINN layer takes), it stops in one line naming them; FINN's own partitioning
  would stop on them with an assertion that names nothing.
- ``step_bnnflow_folding`` runs before ``step_apply_folding_config``: it matches FINN's hardware layers (their
  names and kinds as FINN's graph has them) to bnnflow's layers in order, stops in one line when one of
  bnnflow's has no FINN layer, and writes ``output/folding_config.json``: bnnflow's PE / SIMD under FINN's
  names, and for the layers FINN adds around bnnflow's (the input quantizer, the float tail, which bnnflow
  leaves to the host) the folding FINN's SetFolding picks for bnnflow's slowest layer's cycles.

After a build that made the deployment package, it writes ``deploy/driver/bnnflow_input.npy`` and
``bnnflow_expected.npy``: the accelerator's own input and output for the verification inputs, computed by FINN's
executor, which ``bnnflow finn --check-on-board`` compares with what the board returns.

This file runs in FINN's environment, not bnnflow's: it imports only FINN, qonnx, onnx and numpy.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: FINN's folding attributes, read off SetFolding's choice for the layers bnnflow has none for
FOLDING_ATTRS = ("PE", "SIMD", "parallel_window")


class BnnflowError(Exception):
    """A network this FINN cannot build as bnnflow laid it out; bnnflow shows the message as its one line."""


def settings() -> dict:
    return json.loads((HERE / "bnnflow.json").read_text())


def layer_kind(op_type: str) -> str:
    """FINN's layer kind: the op type without the implementation style step_specialize_layers appended."""
    for style in ("_hls", "_rtl"):
        if op_type.endswith(style):
            return op_type[: -len(style)]
    return op_type


def match_layers(finn: list[tuple[str, str]], layers: list[dict]) -> tuple[dict[str, dict], list[str]]:
    """FINN's layers (name, op type, in graph order) matched by position and kind to bnnflow's ``layers``
    (bnnflow.json's): the attributes to give each matched FINN layer, and the FINN layers before bnnflow's first
    and after its last that bnnflow has none for (of kinds bnnflow's layers never become, so that nothing can
    shift). Anything else is a ``BnnflowError`` naming the missing layer."""
    kinds = [layer_kind(op) for _, op in finn]
    ours = {node["op"] for layer in layers for sequence in layer["finn"] for node in sequence}
    furthest = (-1, 0, 0)  # (bnnflow layers matched, where FINN's graph stopped matching, leading FINN layers)
    for lead in range(len(finn) + 1):
        at, folding = lead, {}
        for index, layer in enumerate(layers):
            sequence = next((s for s in layer["finn"] if kinds[at:at + len(s)] == [n["op"] for n in s]), None)
            if sequence is None:
                furthest = max(furthest, (index, at, lead))
                break
            for (name, _), node in zip(finn[at:at + len(sequence)], sequence):
                folding[name] = {k: v for k, v in node.items() if k != "op"}
            at += len(sequence)
        else:
            extra = finn[:lead] + finn[at:]
            alike = [name for name, op in extra if layer_kind(op) in ours]
            if alike:
                raise BnnflowError(f"FINN's graph has {', '.join(alike)} beyond bnnflow's layers, of a kind bnnflow's "
                                   "layers become, so bnnflow cannot tell which FINN layer is which; FINN's layers: "
                                   f"{', '.join(name for name, _ in finn)}")
            return folding, [name for name, _ in extra]
    index, at, _ = furthest
    layer = layers[index]
    wanted = " or ".join(" + ".join(n["op"] for n in s) for s in layer["finn"])
    where = "anywhere" if index == 0 else f"after {finn[at - 1][0]} (there: {finn[at][0] if at < len(finn) else 'none'})"
    raise BnnflowError(f"FINN's graph has no {wanted} for bnnflow's {layer['bnnflow']} ({layer['op']}) {where}; "
                       f"FINN's layers: {', '.join(name for name, _ in finn) or 'none'}")


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
    if settings()["label_select"]:
        model = model.transform(InsertTopK(k=1))
    if VerificationStepType.QONNX_TO_FINN_PYTHON in cfg._resolve_verification_steps():
        verify_step(model, cfg, "qonnx_to_finn_python", need_parent=False)
    return model


def software_between(nodes: list[tuple[str, str, bool, list[str], list[str]]]) -> list[tuple[str, str]]:
    """The nodes (name, op type) FINN left in software between two of its hardware layers, given each node as
    (name, op type, is a hardware layer, inputs, outputs) in graph order (topologically sorted)."""
    producer = {t: i for i, (*_, outs) in enumerate(nodes) for t in outs}
    after_hw = [False] * len(nodes)  # a hardware layer feeds it (directly or not)
    for i, (_, _, _, ins, _) in enumerate(nodes):
        after_hw[i] = any(nodes[producer[t]][2] or after_hw[producer[t]] for t in ins if t in producer)
    consumers: dict[str, list[int]] = {}
    for i, (_, _, _, ins, _) in enumerate(nodes):
        for t in ins:
            consumers.setdefault(t, []).append(i)
    before_hw = [False] * len(nodes)  # it feeds a hardware layer
    for i in reversed(range(len(nodes))):
        before_hw[i] = any(nodes[j][2] or before_hw[j] for t in nodes[i][4] for j in consumers.get(t, []))
    return [(name, op) for (name, op, hw, _, _), a, b in zip(nodes, after_hw, before_hw) if not hw and a and b]


def step_bnnflow_check_hw(model, cfg):
    """Stop in one line when FINN's step_convert_to_hw left nodes in software between its hardware layers: FINN
    makes one dataflow partition of consecutive hardware layers, and on such a graph its partitioning stops with
    an assertion ("cycle-free graph violated") that names nothing."""
    from qonnx.transformation.general import GiveUniqueNodeNames

    model = model.transform(GiveUniqueNodeNames())
    nodes = [(n.name, n.op_type, n.domain.startswith("finn.custom_op.fpgadataflow"), list(n.input), list(n.output))
             for n in model.graph.node]
    left = software_between(nodes)
    if left:
        kinds = sorted({op for _, op in left})
        raise BnnflowError(f"FINN has no hardware layer for {', '.join(kinds)} here: its step_convert_to_hw left "
                           f"{len(left)} node(s) in software between its hardware layers "
                           f"({', '.join(name for name, _ in left[:6])}{', ...' if len(left) > 6 else ''})")
    return model


def step_bnnflow_folding(model, cfg):
    """Match FINN's layers to bnnflow's and, unless FINN folds for target_fps, write bnnflow's folding under
    FINN's names as the folding config step_apply_folding_config applies."""
    from qonnx.transformation.general import GiveUniqueNodeNames

    model = model.transform(GiveUniqueNodeNames())  # the names step_apply_folding_config gives
    folding, extra = match_layers([(n.name, n.op_type) for n in model.graph.node], settings()["layers"])
    if cfg.target_fps:
        return model
    path = Path(cfg.output_dir) / "folding_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"Defaults": {}, **folding, **fold_extra(model, folding, extra)}
    path.write_text(json.dumps(config, indent=2) + "\n")
    cfg.folding_config_file = str(path)
    return model


def fold_extra(model, folding: dict[str, dict], extra: list[str]) -> dict[str, dict]:
    """The folding FINN's SetFolding gives the ``extra`` layers when every layer may take as many cycles as
    bnnflow's slowest, so FINN's additions do not slow bnnflow's accelerator down."""
    if not extra:
        return {}
    from finn.transformation.fpgadataflow.set_folding import SetFolding
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    trial = ModelWrapper(copy.deepcopy(model.model))
    for node in trial.graph.node:
        for attr, value in folding.get(node.name, {}).items():
            getCustomOp(node).set_nodeattr(attr, value)
    cycles = max(getCustomOp(n).get_exp_cycles() for n in trial.graph.node if n.name in folding)
    trial = trial.transform(SetFolding(target_cycles_per_frame=cycles + 1, two_pass_relaxation=False))
    chosen = {}
    for node in trial.graph.node:
        if node.name in extra:
            op = getCustomOp(node)
            chosen[node.name] = {a: op.get_nodeattr(a) for a in FOLDING_ATTRS if a in op.get_nodeattr_types()}
    return chosen


def build_steps(estimate_only: bool) -> list:
    from finn.builder.build_dataflow_config import default_build_dataflow_steps, estimate_only_dataflow_steps

    names = estimate_only_dataflow_steps if estimate_only else default_build_dataflow_steps
    steps: list = []
    for name in names:
        if name == "step_qonnx_to_finn":
            steps.append(step_bnnflow_qonnx_to_finn)
            continue
        if name == "step_apply_folding_config":
            steps.append(step_bnnflow_folding)
        steps.append(name)
        if name == "step_convert_to_hw":
            steps.append(step_bnnflow_check_hw)
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
