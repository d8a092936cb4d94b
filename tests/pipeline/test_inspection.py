"""``bnnflow inspect``: a one-screen summary of each form of QONNX (or JSON), the compiler's refusal for a model
it cannot compile, one error line for a broken file, and no file written or changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper

from tests.pipeline.test_qonnx_import import _brevitas_export, _mlp, _with_input_normalisation, _zoo_form

SCREEN_LINES = 40


def _renamed(op_type: str):
    def form(tmp_path: Path) -> onnx.ModelProto:
        proto = onnx.ModelProto.FromString(_mlp(seed=3).model.SerializeToString())
        if op_type == "Quant":
            proto.graph.initializer.extend([numpy_helper.from_array(np.asarray(0.0, dtype=np.float32), "zp"),
                                            numpy_helper.from_array(np.asarray(1.0, dtype=np.float32), "bw")])
        for node in proto.graph.node:
            if node.op_type == "BipolarQuant":
                node.op_type = op_type
                if op_type == "Quant":
                    node.input.extend(["zp", "bw"])
                    node.attribute.extend([helper.make_attribute("signed", 1), helper.make_attribute("narrow", 1)])
        return proto
    return form


def _channels_last(tmp_path: Path) -> onnx.ModelProto:
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.util.cleanup import cleanup_model

    model = cleanup_model(ModelWrapper(_brevitas_export(tmp_path, dynamo=False)))
    return model.transform(ConvertToChannelsLastAndClean()).model


#: (name, form builder, layers, the line that says what the file is, an import change)
FORMS = [
    ("zoo", lambda tmp: _zoo_form(_with_input_normalisation(_mlp(seed=1))), 3, "no import for onnx.brevitas",
     "moved from domain onnx.brevitas"),
    ("torchscript", lambda tmp: _brevitas_export(tmp, dynamo=False), 3, "qonnx.custom_op.general 2", ""),
    ("dynamo", lambda tmp: _brevitas_export(tmp, dynamo=True), 3, "qonnx.custom_op.general 2", "Gemm nodes"),
    ("channels-last", _channels_last, 3, "qonnx.custom_op.channels_last", "channels-last nodes"),
    ("binary-quant", _renamed("BinaryQuant"), 3, "qonnx.custom_op.general", "BinaryQuant nodes"),
    ("one-bit-quant", _renamed("Quant"), 3, "qonnx.custom_op.general", "signed 1-bit Quant nodes"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name,build,layers,what,change", FORMS, ids=[f[0] for f in FORMS])
def test_inspect_summarises_each_form(cli, tmp_path, name, build, layers, what, change) -> None:
    path = tmp_path / f"{name}.onnx"
    onnx.save(build(tmp_path), str(path))
    before = _snapshot(tmp_path)
    result = cli("inspect", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) <= SCREEN_LINES
    assert any(what in line for line in lines if line.strip().startswith(("opsets", "domains"))), result.stdout
    assert f"layers      {layers}" in result.stdout
    assert "compiles    yes" in result.stdout and "weights 1 bit" in result.stdout
    assert change in result.stdout
    facts = json.loads(cli("inspect", str(path), "--json").stdout)
    assert facts["compiles"] is True and len(facts["layers"]) == layers
    assert all(layer["weight_bits"] == 1 for layer in facts["layers"])
    assert facts["inputs"][0]["shape"][1:] in ([1, 8, 8], [1, 10, 10])
    assert _snapshot(tmp_path) == before, "inspect must not write or change a file"


def test_inspect_with_board_gives_the_estimate(cli, tmp_path) -> None:
    path = tmp_path / "zoo.onnx"
    onnx.save(_zoo_form(_with_input_normalisation(_mlp(seed=1))), str(path))
    facts = json.loads(cli("inspect", str(path), "--board", "ulx3s", "--json").stdout)
    estimate = facts["estimate"]
    assert estimate["board"] == "ulx3s" and estimate["fits"] and estimate["frames_per_second"] > 0
    assert 0 < estimate["luts"] <= estimate["board_luts"]
    text = cli("inspect", str(path), "--board", "ulx3s").stdout
    assert f"{estimate['luts']:,} of {estimate['board_luts']:,} LUTs" in text


def test_inspect_names_the_node_that_stops_compile(cli, tmp_path) -> None:
    path = tmp_path / "w2a1.onnx"
    onnx.save(_mlp(weight_bits=2, act_bits=1, seed=4).model, str(path))
    result = cli("inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert "compiles    no" in result.stdout and "weights 2 bit  inputs 1 bit" in result.stdout
    stops = next(line for line in result.stdout.splitlines() if line.strip().startswith("stops at"))
    facts_layers = json.loads(cli("inspect", str(path), "--json").stdout)
    second = facts_layers["layers"][1]["name"]  # the first layer with binary inputs, by its name in the file
    assert f"node {second} (MatMul)" in stops and "INT2 weights (2-bit)" in stops and "weight_bits=1" in stops
    assert facts_layers["compiles"] is False and facts_layers["stops_at"] in stops


BROKEN = [("garbage", b"\x08\x07\x12\xff\xff not a protobuf", "is not an ONNX file"),
          ("empty-graph", onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])).SerializeToString(),
           "holds no ONNX graph"),
          ("missing", None, "does not exist")]


@pytest.mark.parametrize("name,content,needle", BROKEN, ids=[b[0] for b in BROKEN])
def test_inspect_broken_file_is_one_line(cli, tmp_path, name, content, needle) -> None:
    path = tmp_path / f"{name}.onnx"
    if content is not None:
        path.write_bytes(content)
    result = cli("inspect", str(path))
    assert result.returncode == 2 and not result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "rerun" not in result.stderr


def test_inspect_unknown_board_is_one_line(cli, tmp_path) -> None:
    path = tmp_path / "zoo.onnx"
    onnx.save(_mlp(seed=1).model, str(path))
    result = cli("inspect", str(path), "--board", "de10-nano")
    assert result.returncode == 2 and "unknown board 'de10-nano'" in result.stderr and not result.stdout
