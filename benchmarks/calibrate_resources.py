"""Calibrate the ECP5 resource model of the generated RTL (``bnnflow.hw.rtl.resources``) against yosys and nextpnr.

    python benchmarks/calibrate_resources.py collect [--designs cnv@3000,...] [--out runs/bench/calibration]
    python benchmarks/calibrate_resources.py placed RUN [RUN ...]
    python benchmarks/calibrate_resources.py fit

``collect`` builds each design of the sweep (the registry's networks at 32x32x3, 28x28 or 8x8, random weights and
BatchNorms whose statistics are measured on random inputs, so thresholds fall where trained ones do; folded for a
frame rate or for the ULX3S; the MLPs end in a label select), generates its RTL, synthesizes it with the board
wrapper with yosys ``synth_ecp5``, each layer, stream module and the UART bridge kept a module of its own and
flattened inside (``_script``), moves the registers after block RAMs into them as the build does
(``bnnflow.hw.block_ram_registers``), and records each instance's LUT4s
(nextpnr's count: a carry cell two, a LUT RAM cell six) and flip-flops with its module, parameters and the bits
of its memories that go to LUTs, in ``hw/rtl/calibration/ecp5_samples.jsonl`` (a design's rows are replaced when
it is collected again; a design whose Verilog is unchanged since its last synthesis in --out is not synthesized
again). ``placed`` records what nextpnr placed (TRELLIS_COMB, TRELLIS_FF) for run folders that built a bitstream,
with the instances' features, in ``hw/rtl/calibration/ecp5_placed.jsonl``; for a build from before that move,
the flip-flops it moves are taken off (nextpnr places every flip-flop of the netlist).

``fit`` fits each module's coefficients for LUT4s and for flip-flops (non-negative least squares over its
instances), then the factors from the models' sums to placed figures (least squares through the origin over the
placed designs), writes ``hw/rtl/calibration/ecp5.json`` and prints each module's error and each placed design's
estimate against nextpnr. Rerun ``collect`` and ``fit`` when the Verilog library changes.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import hashlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn

from bnnflow.hw.block_ram_registers import absorb_output_registers
from bnnflow.hw.boards import ECP5, get_board
from bnnflow.hw.convert import to_dataflow
from bnnflow.hw.estimates import hw_ops, lut_memory_bits
from bnnflow.hw.folding import fold_for_board, fold_for_fps
from bnnflow.hw.rtl.fifos import stream_fifo_memories
from bnnflow.hw.rtl.generate import edges_of, fifo_bank, generate_rtl
from bnnflow.hw.rtl.layers import layers_of, stream_of
from bnnflow.hw.rtl.resources import FEATURES, LUT4_WEIGHTS, calibration_file, features
from bnnflow.hw.toolchain import _tool_path, generate_board, run_tool
from bnnflow.models import create_model
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.export import export_model

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "hw" / "rtl" / "calibration" / "ecp5_samples.jsonl"  #: one row per synthesized instance
PLACED = ROOT / "hw" / "rtl" / "calibration" / "ecp5_placed.jsonl"  #: one row per placed design
#: network -> (registry name, input shape, model arguments); the MLPs are built with a label select
NETWORKS = {
    "digits": ("digits_mlp", (1, 8, 8), {}),
    "tfc": ("tfc", (1, 28, 28), {}),
    "sfc": ("sfc", (1, 28, 28), {}),
    "lfc": ("lfc", (1, 28, 28), {}),
    "cnv": ("cnv", (3, 32, 32), {}),
    "cnv_a2": ("cnv", (3, 32, 32), {"act_bits": 2}),
    "resnet20": ("resnet20", (3, 32, 32), {"hw": True}),
    "resnet20_pm1": ("resnet20", (3, 32, 32), {"hw": True, "pad_value": -1}),
    "resnet20_bireal": ("resnet20_bireal", (3, 32, 32), {"hw": True}),
}
#: the networks that end in a label select (the class index), as a classifier on a board would
LABEL_SELECT = {"digits", "tfc", "sfc", "lfc"}
#: the sweep: network@frames-per-second at 100 MHz, or network@board (the fastest folding that fits the ULX3S)
SWEEP = ["digits@20000", "digits@250000", "digits@12500000", "tfc@50000", "tfc@250000", "tfc@1000000", "sfc@200000",
         "lfc@50000", "cnv@500", "cnv@1500", "cnv@3000", "cnv@6000", "cnv_a2@1000", "resnet20@300", "resnet20@1300",
         "resnet20_pm1@600", "resnet20_bireal@600"]


def _measured_batchnorm(model: nn.Module, shape: tuple[int, ...], seed: int) -> nn.Module:
    """Statistics of random inputs, then random scales (some negative) and shifts: thresholds where trained ones
    are (inside the accumulator's range, all different) rather than at an untrained network's single value."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.rand(64, *shape, generator=gen))
        for norm in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            norm.weight.copy_(torch.randn(norm.num_features, generator=gen))
            norm.bias.copy_(torch.randn(norm.num_features, generator=gen) * 0.5)
    return model.eval()


def design(spec: str):
    """The folded dataflow graph of ``network@target``."""
    network, target = spec.split("@")
    name, shape, args = NETWORKS[network]
    torch.manual_seed(0)
    model = _measured_batchnorm(create_model(name, input_shape=shape, num_classes=10, **args), shape, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataflow = to_dataflow(streamline_model(export_model(model, shape)), label_select=network in LABEL_SELECT)
    if target == "board":
        fold_for_board(dataflow, get_board("ulx3s"), 100.0)
    else:
        fold_for_fps(dataflow, float(target), 100.0, ECP5)
    return dataflow


def instances(dataflow) -> dict[str, dict[str, Any]]:
    """Every instance the RTL of ``dataflow`` has (by its name in ``bnnflow_accel``, and the UART bridge), with its
    module, parameters and the bits of its memories in LUTs."""
    layers = layers_of(dataflow, None)
    ops = {node.name: op for node, op in hw_ops(dataflow)}
    found = {f"u_{layer.name.lower()}": {"module": layer.module, "params": layer.params,
                                         "lut_memory_bits": lut_memory_bits(ops[layer.name].memories(dataflow), ECP5)}
             for layer in layers}
    for (name, port), edge in edges_of(dataflow, layers).items():
        tag = f"{name.lower()}_in{port}"
        if edge.source.lanes != edge.target.lanes:
            found[f"u_dwc_{tag}"] = {"module": "bnn_dwc", "lut_memory_bits": 0, "params": {
                "IN_L": edge.source.lanes, "OUT_L": edge.target.lanes, "EB": edge.target.elem_bits}}
        if edge.fifo_depth:
            memories = stream_fifo_memories(edge.target.width, edge.fifo_depth)
            found[f"u_fifo_{tag}"] = {"module": "bnn_stream_fifo", "lut_memory_bits": lut_memory_bits(memories, ECP5),
                                      "params": {"WIDTH": edge.target.width, "DEPTH": edge.fifo_depth,
                                                 "BANK": fifo_bank(edge)}}
    last = next(layer for layer in layers if stream_of(dataflow, dataflow.graph.output[0].name) in layer.outputs)
    found["u_uart"] = {"module": "uart_bridge", "lut_memory_bits": 0,
                       "params": {"IN_W": layers[0].input.width, "OUT_W": last.output.width}}
    return found


def _base(module: str) -> str:
    """The library module a yosys module is: ``$paramod$HASH\\name`` or ``$paramod\\name\\P=V`` is ``name``."""
    parts = module.split("\\")
    return parts[1] if parts[0].startswith("$paramod") and len(parts) > 1 else module


def hierarchy_cells(netlist: Path) -> dict[str, dict[str, int]]:
    """LUT4s and flip-flops of every instance in ``bnnflow_accel`` and of the UART bridge, from a netlist that keeps
    them as modules, once the registers after block RAMs have moved into them as the build moves them."""
    data = json.loads(netlist.read_text())
    absorb_output_registers(data)
    modules = data["modules"]
    memo: dict[str, collections.Counter] = {}

    def count(name: str) -> collections.Counter:
        if name not in memo:
            total: collections.Counter = collections.Counter()
            for cell in modules[name]["cells"].values():
                kind = cell["type"]
                if kind in modules and modules[kind]["cells"] and not modules[kind]["attributes"].get("blackbox"):
                    total += count(kind)
                else:
                    total["lut4"] += LUT4_WEIGHTS.get(kind, 0)
                    total["ff"] += kind == "TRELLIS_FF"
            memo[name] = total
        return memo[name]

    def cells_of(suffix: str) -> dict[str, str]:
        module = next(name for name in modules if _base(name) == suffix)
        return {cell: info["type"] for cell, info in modules[module]["cells"].items()}

    found = {name: count(kind) for name, kind in cells_of("bnnflow_accel").items() if kind in modules}
    found["u_uart"] = count(cells_of("bnnflow_system")["u_uart"])
    return {name: {"lut4": counts["lut4"], "ff": counts["ff"]} for name, counts in found.items()}


def _script(netlist: str) -> str:
    """yosys's script: ``synth_ecp5`` of the board design with each layer, stream module and the UART bridge kept
    as a module of its own (so each instance's cells can be counted) and everything inside them flattened (so each
    is optimized as in a flat build: an MVTU's XNOR gates merge into its popcount's first adders)."""
    kept = " ".join(f"*{name}*" for name in [*FEATURES, "bnnflow_accel", "bnnflow_system"])  # and their $paramods
    return (f'hierarchy -top bnnflow_board; setattr -mod -set keep_hierarchy 1 {kept}; '
            f'synth_ecp5 -top bnnflow_board -json "{netlist}"')


def _digest(sources: list[Path], script: str) -> str:
    """What decides a netlist: the Verilog, the memory files it reads and yosys's script."""
    digest = hashlib.sha256(script.encode())
    for path in sorted({*sources, *sources[0].parent.glob("*.hex")}):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _synthesize(spec: str, folder: Path, sources: list[Path]) -> Path:
    """``folder/hier.json``, yosys's netlist of ``sources`` with each instance a module (``_script``); kept from an
    earlier call when the Verilog, the memory files and the script are the same."""
    netlist, stamp, partial = folder / "hier.json", folder / "hier.sha256", folder / "hier.json.partial"
    script = _script(_tool_path(partial, sources[0].parent))
    digest = _digest(sources, script)
    if netlist.is_file() and stamp.is_file() and stamp.read_text() == digest:
        print(f"{spec}: the Verilog is unchanged since {netlist} was synthesized", flush=True)
        return netlist
    print(f"{spec}: yosys synth_ecp5, each instance a module", flush=True)
    run_tool("yosys", ["-p", script, *sources], folder / "yosys.log", sources[0].parent)
    partial.replace(netlist)
    stamp.write_text(digest)
    return netlist


def collect(specs: list[str], out: Path, jobs: int = 1) -> None:
    """Generate every design's RTL, synthesize them ``jobs`` at a time, and record their instances."""
    designs = {}
    for spec in specs:
        print(f"{spec}: compiling, folding and generating the RTL", flush=True)
        dataflow = design(spec)
        folder = out / spec.replace("@", "_")
        generate_rtl(dataflow, folder / "rtl")
        rtl = json.loads((folder / "rtl" / "interface.json").read_text())
        board = generate_board("ulx3s", 100.0, folder / "board")
        sources = [folder / "rtl" / name for name in rtl["system_sources"]] + board.verilog
        designs[spec] = dataflow, folder, sources
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:  # yosys runs as a process of its own
        netlists = dict(zip(designs, pool.map(lambda spec: _synthesize(spec, *designs[spec][1:]), designs)))
    rows = _rows(SAMPLES)
    for spec, (dataflow, _, _) in designs.items():
        measured = hierarchy_cells(netlists[spec])
        known = instances(dataflow)
        missing = sorted(set(measured) ^ set(known))
        if missing:
            raise SystemExit(f"{spec}: instances of the netlist and of the RTL differ: {missing[:5]}")
        rows = [row for row in rows if row["design"] != spec]
        rows += [{"design": spec, "instance": name, **known[name], **measured[name]} for name in sorted(known)]
        print(f"{spec}: {len(known)} instances, {sum(m['lut4'] for m in measured.values()):,} LUT4, "
              f"{sum(m['ff'] for m in measured.values()):,} FF", flush=True)
    SAMPLES.parent.mkdir(parents=True, exist_ok=True)
    SAMPLES.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def placed(runs: list[Path]) -> None:
    """Record placed TRELLIS_COMB and TRELLIS_FF with the features of the instances of the design's
    ``dataflow.onnx``: of run folders (``fpga/ulx3s/report.json``) or of ``benchmarks/fpga.py``'s builds
    (``ulx3s/report.json``)."""
    from bnnflow.pipeline.onnx_files import load_model

    rows = _rows(PLACED)
    for run in runs:
        report_path = next((path for path in (run / "fpga" / "ulx3s" / "report.json", run / "ulx3s" / "report.json")
                            if path.is_file()), None)
        if report_path is None:
            raise SystemExit(f"{run}: no ULX3S build (fpga/ulx3s/report.json or ulx3s/report.json)")
        report = json.loads(report_path.read_text())
        name = run.resolve().name
        placed_ff = report["utilization"]["ff"]["used"]
        if "block_ram_output_registers" not in report:
            # built before the registers after block RAMs moved into them: nextpnr places every flip-flop of the
            # netlist, so the build would now place those the pass moves fewer
            moved = absorb_output_registers(json.loads((report_path.parent / report["files"]["netlist"]).read_text()))
            placed_ff -= moved.flip_flops
            print(f"{name}: built before block RAM output registers; {moved.flip_flops:,} of its flip-flops move")
        rows = [row for row in rows if row["design"] != name]
        rows.append({"design": name, "placed_lut4": report["utilization"]["lut4"]["used"], "placed_ff": placed_ff,
                     "instances": list(instances(load_model(run / "dataflow.onnx", "compile")).values())})
        print(f"{name}: {rows[-1]['placed_lut4']:,} TRELLIS_COMB, {rows[-1]['placed_ff']:,} TRELLIS_FF")
    PLACED.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _fit_modules(rows: list[dict[str, Any]], measure: str) -> dict[str, dict[str, float]]:
    """Each module's non-negative coefficients for ``measure`` (lut4 or ff) over its instances in ``rows``."""
    by_module = collections.defaultdict(list)
    for row in rows:
        by_module[row["module"]].append(row)
    coefficients = {}
    print(f"{measure:18}{'samples':>8}{'yosys':>10}{'model':>10}{'mean |err|':>12}")
    for module in sorted(FEATURES):
        samples = by_module.get(module, [])
        if not samples:
            print(f"{module:18}{0:>8}  no samples: keeps no model")
            continue
        names = sorted(features(module, samples[0]["params"], 0))
        a = np.array([[features(module, s["params"], s["lut_memory_bits"])[n] for n in names] for s in samples], float)
        b = np.array([s[measure] for s in samples], float)
        x, _ = nnls(a, b)
        coefficients[module] = {n: round(float(v), 4) for n, v in zip(names, x) if v > 0}
        error = np.mean(np.abs(a @ x - b) / np.maximum(b, 1))
        print(f"{module:18}{len(samples):>8}{int(b.sum()):>10,}{int((a @ x).sum()):>10,}{error:>11.1%}")
    return coefficients


def _placed_factor(placed_rows: list[dict[str, Any]], measure: str, model) -> float:
    """The least-squares factor (through the origin) from the model's sums to the placed figures."""
    predicted = np.array([sum(model(i["module"], i["params"], i["lut_memory_bits"]) for i in row["instances"])
                          for row in placed_rows])
    measured = np.array([row[f"placed_{measure}"] for row in placed_rows], float)
    factor = float(predicted @ measured / (predicted @ predicted))
    for row, p, m in zip(placed_rows, predicted * factor, measured):
        print(f"{row['design']:40} placed {measure} {int(m):>8,}  model {int(p):>8,}  {p / m - 1:+.1%}")
    return factor


def fit(samples: Path = SAMPLES, designs: Path = PLACED, target: Path | None = None) -> dict[str, Any]:
    """Fit the model to the instance ``samples`` and the placed ``designs``; writes it to ``target`` (the
    package's calibration file by default)."""
    from bnnflow.hw.rtl.resources import Calibration

    rows = _rows(samples)
    coefficients, ff_coefficients = _fit_modules(rows, "lut4"), _fit_modules(rows, "ff")
    unplaced = Calibration("ecp5", coefficients, 1.0, ff_coefficients, 1.0)
    placed_rows = _rows(designs)
    if not placed_rows:
        raise SystemExit(f"no placed designs in {designs}: record some with `placed RUN...`")
    lut_factor = _placed_factor(placed_rows, "lut4", unplaced.luts)
    ff_factor = _placed_factor(placed_rows, "ff", unplaced.flip_flops)
    result = {"family": "ecp5", "placed_per_lut4": round(lut_factor, 4), "coefficients": coefficients,
              "placed_per_ff": round(ff_factor, 4), "ff_coefficients": ff_coefficients}
    target = target or Path(str(calibration_file("ecp5")))
    target.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {target} (placed per modelled LUT4: {lut_factor:.3f}; per modelled flip-flop: {ff_factor:.3f})")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="synthesize the sweep and record every instance's LUT4s and flip-flops")
    c.add_argument("--designs", default=",".join(SWEEP), help="comma-separated network@fps or network@board")
    c.add_argument("--out", type=Path, default=Path("runs/bench/calibration"))
    c.add_argument("--jobs", type=int, default=1, help="designs synthesized at once (yosys takes a core and GBs each)")
    p = sub.add_parser("placed", help="record run folders' placed LUTs and flip-flops")
    p.add_argument("runs", type=Path, nargs="+")
    sub.add_parser("fit", help="fit the model to the recorded samples")
    args = parser.parse_args(argv)
    if args.command == "collect":
        collect(args.designs.split(","), args.out, args.jobs)
    elif args.command == "placed":
        placed(args.runs)
    else:
        fit()


if __name__ == "__main__":
    sys.exit(main())
