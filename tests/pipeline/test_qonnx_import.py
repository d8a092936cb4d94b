"""QONNX made elsewhere: each form other tools write, synthesised from a bnnflow or Brevitas export with
onnx.helper, is imported, compiled, and checked against qonnx's executor exactly.

The reference of each form is qonnx's execution of the graph the form was made from (the form itself where
qonnx runs it); the imported model must give the same floats, and the compiled levels (streamlined.onnx,
dataflow.onnx, the simulator) must match it exactly too.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_shapes import InferShapes
from torch import nn

from bnnflow.errors import InputError, UnsupportedGraphError
from bnnflow.hw.simulator import Simulator
from bnnflow.models import create_model
from bnnflow.pipeline.compile.emitter import QONNX_DOMAIN
from bnnflow.pipeline.compile.stage import compile_model, verify_compile
from bnnflow.pipeline.config import CompileConfig
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import export_model
from bnnflow.pipeline.qonnx_import import import_qonnx, normalise_qonnx
from tests.pipeline.test_compile_zoo import randomise_batchnorm

SAMPLES = 64
MLP_SHAPE = (1, 8, 8)
CONV_SHAPE = (1, 10, 10)


def _mlp(weight_bits: int = 1, act_bits: int = 1, seed: int = 0) -> ModelWrapper:
    """A small digits MLP exported by bnnflow (cleaned QONNX, BipolarQuant / Quant)."""
    torch.manual_seed(seed)
    model = create_model("digits_mlp", input_shape=MLP_SHAPE, num_classes=10, hidden=32, depth=2,
                         weight_bits=weight_bits, act_bits=act_bits)
    for module in model.modules():  # weights across the whole grid, not only the codes around 0
        if isinstance(module, nn.Linear):
            module.weight.data.uniform_(-1.0, 1.0)
    return export_model(randomise_batchnorm(model, MLP_SHAPE, seed), MLP_SHAPE)


class _ConvNet(nn.Module):
    """Conv, BatchNorm, a 2-bit activation, Brevitas's TruncAvgPool2d (a real truncation: 4-bit sums to 2 bits),
    a sign, a second binary conv, and a binary classifier."""

    def __init__(self) -> None:
        import brevitas.nn as qnn

        from bnnflow.models.quantizers import BinaryActQuant, BinaryWeightQuant, InputQuant, act_quant

        super().__init__()
        self.inp = qnn.QuantReLU(act_quant=InputQuant, bit_width=4)
        self.conv1 = qnn.QuantConv2d(1, 8, 3, weight_quant=BinaryWeightQuant, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = qnn.QuantIdentity(act_quant=act_quant(2), bit_width=2, return_quant_tensor=True)
        self.pool = qnn.TruncAvgPool2d(2, bit_width=2)
        self.act2 = qnn.QuantIdentity(act_quant=BinaryActQuant)
        self.conv2 = qnn.QuantConv2d(8, 8, 3, weight_quant=BinaryWeightQuant, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.act3 = qnn.QuantIdentity(act_quant=BinaryActQuant)
        self.fc = qnn.QuantLinear(8 * 2 * 2, 10, weight_quant=BinaryWeightQuant, bias=False)

    def forward(self, x):
        x = self.pool(self.act1(self.bn1(self.conv1(self.inp(x)))))
        x = self.act3(self.bn2(self.conv2(self.act2(x))))
        return self.fc(x.flatten(1))


def _brevitas_export(tmp_path, dynamo: bool) -> onnx.ModelProto:
    """The conv net through Brevitas's export_qonnx, as written (not cleaned)."""
    from brevitas.export import export_qonnx

    torch.manual_seed(5)
    model = randomise_batchnorm(_ConvNet(), CONV_SHAPE, seed=5)
    path = tmp_path / ("dynamo.onnx" if dynamo else "torchscript.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, input_t=torch.zeros(1, *CONV_SHAPE), export_path=str(path), dynamo=dynamo)
    return onnx.load(str(path))


def _run(model: ModelWrapper | onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """qonnx's executor on ``model`` as it is (shapes inferred, which the executor needs)."""
    wrapper = model if isinstance(model, ModelWrapper) else ModelWrapper(model)
    wrapper = wrapper.transform(InferShapes())
    return execute(wrapper, images)[wrapper.graph.output[0].name]


def _check_form(form: onnx.ModelProto, reference: ModelWrapper | onnx.ModelProto, shape: tuple[int, ...],
                expected_change: str) -> ModelWrapper:
    """Import ``form``, compare it with qonnx's execution of ``reference``, compile it and check every level."""
    onnx.checker.check_model(reference.model if isinstance(reference, ModelWrapper) else reference)
    model, changes = normalise_qonnx(form)
    assert any(expected_change in change for change in changes), changes
    images = np.random.default_rng(1).random((SAMPLES, *shape), dtype=np.float32)
    expected = _run(reference, images)
    np.testing.assert_array_equal(_run(model, images), expected)
    streamlined, dataflow, _ = compile_model(model, CompileConfig(board="u250"))
    figures, arrays = verify_compile(model, streamlined, dataflow, images)
    assert figures["streamlined_mismatches"] == 0 and figures["dataflow_mismatches"] == 0
    np.testing.assert_array_equal(arrays["qonnx"], expected)
    np.testing.assert_array_equal(Simulator(dataflow).run(arrays["hw_input"]), arrays["hw_output"])
    assert len(np.unique(arrays["hw_output"])) > 1, "a constant output would make the comparison vacuous"
    return model


# -- the qonnx model zoo's form ------------------------------------------------------------------------------------


def _with_input_normalisation(model: ModelWrapper) -> ModelWrapper:
    """Div / Sub / Mul / Add on the graph input, in front of everything, as the zoo's models normalise inputs."""
    model = ModelWrapper(onnx.ModelProto.FromString(model.model.SerializeToString()))
    graph = model.graph
    x = graph.input[0].name
    steps = [("Div", 1.25), ("Sub", 0.1), ("Mul", 2.0), ("Add", 0.05)]
    nodes, current = [], x
    for op, value in steps:
        const, out = f"norm_{op.lower()}_c", f"norm_{op.lower()}"
        model.set_initializer(const, np.asarray(value, dtype=np.float32))
        nodes.append(helper.make_node(op, [current, const], [out], name=f"norm_{op}"))
        current = out
    for node in graph.node:
        node.input[:] = [current if name == x else name for name in node.input]
    for index, node in enumerate(nodes):
        graph.node.insert(index, node)
    return model.transform(InferShapes())


def _zoo_form(reference: ModelWrapper, domain: str = "onnx.brevitas") -> onnx.ModelProto:
    """The zoo's spelling of ``reference``: opset 9 with the opset-9 attributes only, IR version 6, custom ops
    in ``domain`` (``onnx.brevitas``; FINN's older files: ``finn.custom_op.general``) without an opset import,
    initializers listed as graph inputs, and the flatten written as Shape / Gather / Unsqueeze / Concat /
    Reshape (PyTorch 1.7's batch-size-generic reshape)."""
    proto = onnx.ModelProto.FromString(reference.model.SerializeToString())
    graph = proto.graph
    del proto.opset_import[:]
    proto.opset_import.append(helper.make_opsetid("", 9))
    proto.ir_version = 6
    for index, node in enumerate(list(graph.node)):
        if node.domain == QONNX_DOMAIN:
            node.domain = domain
        elif node.op_type == "Flatten":
            x, y = node.input[0], node.output[0]
            chain = [helper.make_node("Shape", [x], ["zoo_shape"]),
                     helper.make_node("Gather", ["zoo_shape", "zoo_zero"], ["zoo_batch"], axis=0),
                     helper.make_node("Unsqueeze", ["zoo_batch"], ["zoo_batch1"], axes=[0]),
                     helper.make_node("Concat", ["zoo_batch1", "zoo_minus_one"], ["zoo_target"], axis=0),
                     helper.make_node("Reshape", [x, "zoo_target"], [y])]
            graph.node.remove(node)
            for offset, new in enumerate(chain):
                graph.node.insert(index + offset, new)
            graph.initializer.extend([numpy_helper.from_array(np.asarray(0, dtype=np.int64), "zoo_zero"),
                                      numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "zoo_minus_one")])
        else:
            schema = onnx.defs.get_schema(node.op_type, 9)
            for attr in [a for a in node.attribute if a.name not in schema.attributes]:
                node.attribute.remove(attr)
    graph.input.extend(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
                       for init in graph.initializer)
    del graph.value_info[:]
    return proto


ZOO_FORMS = [(1, 1, "onnx.brevitas"), (1, 2, "onnx.brevitas"), (2, 2, "onnx.brevitas"),
             (1, 1, "finn.custom_op.general")]


@pytest.mark.parametrize("weight_bits,act_bits,domain", ZOO_FORMS, ids=[f"{w}w{a}a-{d}" for w, a, d in ZOO_FORMS])
def test_import_zoo_form_is_exact(weight_bits: int, act_bits: int, domain: str) -> None:
    reference = _with_input_normalisation(_mlp(weight_bits, act_bits, seed=weight_bits * 10 + act_bits))
    form = _zoo_form(reference, domain)
    with pytest.raises(onnx.checker.ValidationError, match=domain):
        onnx.checker.check_model(form)  # what the strict loader refused before the import
    model = _check_form(form, reference, MLP_SHAPE, f"moved from domain {domain}")
    assert model.model.opset_import[0].version >= 13
    assert {"Div", "Sub", "Mul", "Add"} <= {node.op_type for node in model.graph.node}


def test_compile_cli_imports_zoo_form_and_records_the_changes(cli, tmp_path) -> None:
    """``bnnflow compile FILE`` then ``simulate``: RUN/model.qonnx is the strict, normalised model, summary.json
    says what the import changed, and every level equals qonnx's execution of the model the form was made from."""
    import json

    reference = _with_input_normalisation(_mlp(seed=21))
    path = tmp_path / "zoo.onnx"
    onnx.save(_zoo_form(reference), str(path))
    result = cli("compile", str(path), "--out", "run")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    changes = json.loads((run / "summary.json").read_text())["stages"]["import"]["changes"]
    assert any("from domain onnx.brevitas" in c for c in changes) and any("opset 9 raised to 13" in c for c in changes)
    onnx.checker.check_model(onnx.load(str(run / "model.qonnx")))
    assert cli("simulate", "run").returncode == 0
    stages = json.loads((run / "summary.json").read_text())["stages"]
    assert stages["compile"]["verified_samples"] == 256 and stages["compile"]["dataflow_mismatches"] == 0
    assert stages["simulate"]["simulated_samples"] == 256 and stages["simulate"]["mismatches"] == 0
    images = np.load(run / "verify" / "inputs.npy")
    np.testing.assert_array_equal(np.load(run / "verify" / "compile.npz")["qonnx"], _run(reference, images))


# -- Brevitas's two exporters, channels-last, Trunc ---------------------------------------------------------------


def test_import_brevitas_torchscript_export_is_exact(tmp_path) -> None:
    form = _brevitas_export(tmp_path, dynamo=False)
    model = _check_form(form, form, CONV_SHAPE, "")
    trunc = model.get_nodes_by_op_type("Trunc")
    assert len(trunc) == 1, "the test must exercise Brevitas's TruncAvgPool2d"
    in_scale, out_scale = (model.get_initializer(trunc[0].input[i]) for i in (1, 4))
    assert out_scale / in_scale > 1, "the Trunc must drop bits"


def test_import_brevitas_dynamo_export_is_exact(tmp_path) -> None:
    form = _brevitas_export(tmp_path, dynamo=True)
    for node in form.graph.node:  # the dynamo form of torch < 2.13: a Conv without kernel_shape
        if node.op_type == "Conv":
            node.attribute.remove(next(a for a in node.attribute if a.name == "kernel_shape"))
    assert any(n.op_type == "Gemm" and len(n.input) == 2 for n in form.graph.node)
    model = _check_form(form, form, CONV_SHAPE, "Conv nodes given kernel_shape")
    assert all(any(a.name == "kernel_shape" for a in n.attribute) for n in model.get_nodes_by_op_type("Conv"))
    assert not model.get_nodes_by_op_type("Gemm")


@pytest.mark.parametrize("channels_last_input", [False, True], ids=["nchw-input", "nhwc-input"])
def test_import_channels_last_form_is_exact(tmp_path, channels_last_input: bool) -> None:
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.util.cleanup import cleanup_model

    form = cleanup_model(ModelWrapper(_brevitas_export(tmp_path, dynamo=False)))
    form = form.transform(ConvertToChannelsLastAndClean(make_input_channels_last=channels_last_input)).model
    assert any(node.domain == "qonnx.custom_op.channels_last" for node in form.graph.node)
    shape = (*CONV_SHAPE[1:], CONV_SHAPE[0]) if channels_last_input else CONV_SHAPE
    model = _check_form(form, form, shape, "channels-last nodes")
    assert not any(node.domain == "qonnx.custom_op.channels_last" for node in model.graph.node)
    # an NHWC input keeps one Transpose, on the graph input, in front of everything (host work)
    transposes = model.get_nodes_by_op_type("Transpose")
    assert [t.input[0] for t in transposes] == ([model.graph.input[0].name] if channels_last_input else [])


# -- other spellings of a bipolar quantizer -----------------------------------------------------------------------


def test_import_binary_quant_is_bipolar() -> None:
    reference = _mlp(seed=7)
    form = onnx.ModelProto.FromString(reference.model.SerializeToString())
    for node in form.graph.node:
        if node.op_type == "BipolarQuant":
            node.op_type = "BinaryQuant"
    _check_form(form, reference, MLP_SHAPE, "BinaryQuant nodes written as BipolarQuant")


def test_import_one_bit_signed_quant_is_bipolar() -> None:
    reference = _mlp(seed=8)
    form = onnx.ModelProto.FromString(reference.model.SerializeToString())
    form.graph.initializer.extend([numpy_helper.from_array(np.asarray(0.0, dtype=np.float32), "zero_point"),
                                   numpy_helper.from_array(np.asarray(1.0, dtype=np.float32), "one_bit")])
    for node in form.graph.node:
        if node.op_type == "BipolarQuant":
            node.op_type = "Quant"
            node.input.extend(["zero_point", "one_bit"])
            node.attribute.extend([helper.make_attribute("signed", 1), helper.make_attribute("narrow", 1),
                                   helper.make_attribute("rounding_mode", "ROUND")])
    # qonnx runs the 1-bit Quant form itself: it is the reference, and equals the BipolarQuant original
    images = np.random.default_rng(2).random((SAMPLES, *MLP_SHAPE), dtype=np.float32)
    np.testing.assert_array_equal(_run(form, images), _run(reference, images))
    _check_form(form, form, MLP_SHAPE, "signed 1-bit Quant nodes written as BipolarQuant")


def test_import_quantized_bias_is_folded() -> None:
    """QKeras's form (the zoo's jet-tagging model): a layer's bias added from a Quant of a constant."""
    form = _mlp(seed=13)
    matmul = form.get_nodes_by_op_type("MatMul")[1]
    channels = form.get_tensor_shape(matmul.output[0])[1]
    bias = np.random.default_rng(13).normal(0, 2, channels).astype(np.float32)
    for name, value in [("bias", bias), ("bias_scale", np.float32(0.0625)), ("bias_zero", np.float32(0.0)),
                        ("bias_bits", np.float32(8.0))]:
        form.set_initializer(name, np.asarray(value))
    graph = form.graph
    readers = form.find_consumers(matmul.output[0])
    position = list(graph.node).index(matmul) + 1
    graph.node.insert(position, helper.make_node("Quant", ["bias", "bias_scale", "bias_zero", "bias_bits"],
                                                 ["bias_q"], domain=QONNX_DOMAIN, signed=1, narrow=0,
                                                 rounding_mode="ROUND"))
    graph.node.insert(position + 1, helper.make_node("Add", [matmul.output[0], "bias_q"], ["biased"]))
    for reader in readers:
        reader.input[:] = ["biased" if name == matmul.output[0] else name for name in reader.input]
    form = form.transform(InferShapes())
    _check_form(form.model, form, MLP_SHAPE, "quantizers of constant biases folded")


# -- refusals ------------------------------------------------------------------------------------------------------


def test_import_refuses_broken_files_in_one_line(tmp_path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07\x12\xff\xff not a protobuf")
    lfs = tmp_path / "lfs.onnx"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    for path in (garbage, lfs, tmp_path / "missing.onnx"):
        with pytest.raises(InputError) as err:
            import_qonnx(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and "rerun" not in message


def test_import_refuses_invalid_graph_naming_the_checker() -> None:
    form = onnx.ModelProto.FromString(_mlp(seed=9).model.SerializeToString())
    form.graph.node[-1].input[0] = "no_such_tensor"
    with pytest.raises(InputError, match="not a valid ONNX model|cannot be read as QONNX") as err:
        normalise_qonnx(form, "broken.onnx")
    assert "\n" not in str(err.value) and "broken.onnx" in str(err.value)


def test_binary_activations_times_multi_bit_weights_refused_naming_layer_and_width() -> None:
    model, _ = normalise_qonnx(_mlp(weight_bits=2, act_bits=1, seed=11).model)
    with pytest.raises(UnsupportedGraphError) as err:
        compile_model(model, CompileConfig(board="u250"))
    message = str(err.value)
    # the first layer reads 8-bit input codes (integer mode); the second reads bits: that one is named
    second = model.get_nodes_by_op_type("MatMul")[1]
    assert "\n" not in message and message.startswith(f"node {second.name} (MatMul) ")
    assert "INT2 weights (2-bit)" in message and "weight_bits=1" in message


def test_weights_on_a_scale_that_is_not_a_power_of_two_are_refused_with_the_fix() -> None:
    """The zoo's kwsmlp_w3a3 form: 3-bit weights on per-channel scales like 0.0561, whose float32 products are not
    exact multiples of the scale, so no integer accumulator reproduces the float graph."""
    model, _ = normalise_qonnx(_mlp(weight_bits=3, act_bits=2, seed=12).model)
    weight_quants = [n for n in model.get_nodes_by_op_type("Quant") if model.get_initializer(n.input[0]) is not None]
    model.set_initializer(weight_quants[1].input[1], np.asarray(0.1, dtype=np.float32))  # 3 * 0.1 rounds in float32
    with pytest.raises(UnsupportedGraphError, match="power-of-two weight scales") as err:
        compile_model(model, CompileConfig(board="u250"))
    assert str(err.value).startswith(f"node {weight_quants[1].name} (Quant) ") and "\n" not in str(err.value)
