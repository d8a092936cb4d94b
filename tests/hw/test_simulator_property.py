"""Property test: on randomly generated small binary networks the simulator equals qonnx's executor exactly.

Each example builds a QONNX graph by hand (an 8-bit or binary input quantizer, 1-3 binary layers with
BatchNorm whose scales may be negative or zero and whose means sit exactly on reachable accumulators or far
outside the range, so thresholds land on the edges; or a small CNN with max-pooling), names its nodes as export's
cleanup does, compiles it, folds it at random, and compares the simulator with qonnx's executor on the dataflow
graph, that with the streamlined graph's boundary tensors mapped to the accelerator's layout (NHWC codes, +-1 as
bits: ``to_accelerator`` / ``output_to_accelerator``) and back (``from_accelerator``), and the streamlined graph
with the original. Examples are derandomized (seeded), so CI
sees the same 250 networks every run.
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import GiveUniqueNodeNames
from qonnx.transformation.infer_shapes import InferShapes

from bnnflow.hw.convert import from_accelerator, output_to_accelerator, to_accelerator, to_dataflow
from bnnflow.hw.folding import _units
from bnnflow.hw.simulator import Simulator
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.execute import execute

QONNX = "qonnx.custom_op.general"


def _const(inits: list, name: str, value) -> str:
    inits.append(helper.make_tensor(name, TensorProto.FLOAT, np.shape(value), np.asarray(value, np.float32).ravel()))
    return name


def _named(model) -> ModelWrapper:
    """The hand-built graph with shapes and unique node names, as export's qonnx cleanup leaves every model."""
    return ModelWrapper(model).transform(InferShapes()).transform(GiveUniqueNodeNames())


@st.composite
def networks(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    widths = [draw(st.integers(2, 40))] + [draw(st.integers(1, 24)) for _ in range(draw(st.integers(1, 3)))]
    binary_input = draw(st.booleans())
    nodes, inits = [], []
    x = "x"
    if binary_input:
        nodes.append(helper.make_node("BipolarQuant", [x, _const(inits, "in_s", 1.0)], ["q0"], domain=QONNX))
    else:
        consts = [_const(inits, "in_s", 1 / 255), _const(inits, "in_z", 0.0), _const(inits, "in_b", 8.0)]
        nodes.append(helper.make_node("Quant", [x, *consts], ["q0"], domain=QONNX, signed=0, narrow=0,
                                      rounding_mode="ROUND"))
    act = "q0"
    input_range = 1.0 if binary_input else 255 / 255
    for i, (k, n) in enumerate(zip(widths, widths[1:])):
        w = _const(inits, f"w{i}", rng.uniform(-1, 1, (k, n)))
        nodes.append(helper.make_node("BipolarQuant", [w, _const(inits, f"ws{i}", 1.0)], [f"wq{i}"], domain=QONNX))
        nodes.append(helper.make_node("MatMul", [act, f"wq{i}"], [f"mm{i}"]))
        if i == len(widths) - 2:
            act = f"mm{i}"
            break
        reach = k * input_range if i == 0 else k
        gamma = rng.choice([-1.0, 1.0], n) * rng.uniform(0.2, 2.0, n) * (rng.random(n) > 0.1)  # some scales are 0
        # Ties (a mean exactly on a reachable accumulator) only after the first layer: an 8-bit first layer of the
        # float QONNX graph sums float products, so at an exact tie its sign is decided by rounding.
        on_edge = (rng.random(n) < 0.5) & (i > 0 or binary_input)
        mean = np.where(on_edge, rng.integers(-k, k + 1, n), rng.uniform(-2 * reach, 2 * reach, n))
        beta = np.where(on_edge, 0.0, rng.normal(0, 1, n))
        bn = [_const(inits, f"{p}{i}", v) for p, v in (("g", gamma), ("b", beta), ("m", mean),
                                                        ("v", rng.uniform(0.5, 4.0, n)))]
        nodes.append(helper.make_node("BatchNormalization", [f"mm{i}", *bn], [f"bn{i}"], epsilon=1e-5))
        nodes.append(helper.make_node("BipolarQuant", [f"bn{i}", _const(inits, f"as{i}", 1.0)], [f"a{i}"],
                                      domain=QONNX))
        act = f"a{i}"
    graph = helper.make_graph(nodes, "random_bnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, widths[0]])],
                              [helper.make_tensor_value_info(act, TensorProto.FLOAT, [1, widths[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)])
    model.ir_version = 9
    inputs = rng.integers(0, 256, (24, widths[0])) / 255.0
    if binary_input:
        inputs = rng.choice([-1.0, 0.0, 1.0], (24, widths[0]))  # exact zeros: sign(0) = +1
    return _named(model), inputs.astype(np.float32), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks())
def test_simulator_equals_qonnx_on_random_networks(example) -> None:
    model, inputs, fold_seed = example
    streamlined = streamline_model(model)
    if not in_hardware(streamlined):
        return _check_streamlined(model, streamlined, inputs)
    dataflow = to_dataflow(streamlined)
    chooser = random.Random(fold_seed)
    for unit in _units(dataflow):
        unit.apply(chooser.choice(unit.options))
    hw_in = dataflow.get_metadata_prop("bnnflow.streamlined_input")
    hw_out = dataflow.get_metadata_prop("bnnflow.streamlined_output")
    levels = execute(streamlined, inputs, [hw_in, hw_out])
    frames = to_accelerator(dataflow, levels[hw_in])
    in_type = dataflow.get_tensor_datatype(dataflow.graph.input[0].name)
    assert frames.min() >= in_type.min() and frames.max() <= in_type.max()  # codes of the input datatype
    reference = execute(dataflow, frames)[dataflow.graph.output[0].name]
    np.testing.assert_array_equal(reference, output_to_accelerator(dataflow, levels[hw_out]))
    np.testing.assert_array_equal(from_accelerator(dataflow, reference), levels[hw_out])
    np.testing.assert_array_equal(Simulator(dataflow).run(frames), reference.astype(np.int64))
    _check_streamlined(model, streamlined, inputs)


def in_hardware(streamlined: ModelWrapper) -> bool:
    """Whether the compiler put any layer in hardware: a network of one 8-bit layer with a float output does not
    (its float sum of codes times 1/255 is not reproducible from the integer sum), and stays on the host."""
    return streamlined.get_metadata_prop("bnnflow.streamlined_input") != \
        streamlined.get_metadata_prop("bnnflow.streamlined_output")


def _check_streamlined(model: ModelWrapper, streamlined: ModelWrapper, inputs: np.ndarray) -> None:
    """The streamlined graph equals the hand-built QONNX graph it came from: bit for bit when the last layer reads
    binary activations (integer accumulators of +-1 products); when the only layer is the 8-bit input layer, the
    original sums float products (codes times 1/255) and may differ in the last bits from the integer sum times
    1/255."""
    got = execute(streamlined, inputs)[streamlined.graph.output[0].name]
    want = execute(model, inputs)[model.graph.output[0].name]
    last = [n for n in streamlined.graph.node if n.op_type in ("MatMul", "Conv")][-1]
    if streamlined.get_tensor_datatype(last.input[0]).bitwidth() == 1:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

@st.composite
def conv_networks(draw):
    """A random small binary CNN: input quantizer, 1-2 unpadded convs (BatchNorm, sign, optional 2x2 max-pool),
    then a binary fully connected class layer."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    channels = [draw(st.integers(1, 4))] + [draw(st.integers(1, 6)) for _ in range(draw(st.integers(1, 2)))]
    size = draw(st.integers(5, 8))
    nodes, inits, act, side = [], [], "q0", size
    consts = [_const(inits, "in_s", 1 / 255), _const(inits, "in_z", 0.0), _const(inits, "in_b", 8.0)]
    nodes.append(helper.make_node("Quant", ["x", *consts], ["q0"], domain=QONNX, signed=0, narrow=0,
                                  rounding_mode="ROUND"))
    for i, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
        k = draw(st.integers(1, min(3, side)))
        w = _const(inits, f"w{i}", rng.uniform(-1, 1, (c_out, c_in, k, k)))
        nodes.append(helper.make_node("BipolarQuant", [w, _const(inits, f"ws{i}", 1.0)], [f"wq{i}"], domain=QONNX))
        nodes.append(helper.make_node("Conv", [act, f"wq{i}"], [f"c{i}"], kernel_shape=[k, k], pads=[0, 0, 0, 0],
                                      strides=[1, 1]))
        side = side - k + 1
        reach = c_in * k * k
        # Ties (a mean exactly on a reachable accumulator) only after the first layer: the 8-bit layer of the
        # float QONNX graph sums float products, so at an exact tie its sign is decided by rounding.
        on_edge = (rng.random(c_out) < 0.5) & (i > 0)
        mean = np.where(on_edge, np.round(rng.uniform(-reach, reach, c_out)), rng.uniform(-reach, reach, c_out))
        bn = [_const(inits, f"{p}{i}", v) for p, v in (
            ("g", rng.choice([-1.0, 1.0], c_out) * rng.uniform(0.2, 2.0, c_out)), ("b", np.zeros(c_out)),
            ("m", mean), ("v", rng.uniform(0.5, 4.0, c_out)))]
        nodes.append(helper.make_node("BatchNormalization", [f"c{i}", *bn], [f"bn{i}"], epsilon=1e-5))
        nodes.append(helper.make_node("BipolarQuant", [f"bn{i}", _const(inits, f"as{i}", 1.0)], [f"a{i}"],
                                      domain=QONNX))
        act = f"a{i}"
        if side >= 2 and draw(st.booleans()):
            nodes.append(helper.make_node("MaxPool", [act], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            act, side = f"p{i}", side // 2
    flat = channels[-1] * side * side
    nodes.append(helper.make_node("Flatten", [act], ["flat"], axis=1))
    w = _const(inits, "wfc", rng.uniform(-1, 1, (flat, 3)))
    nodes.append(helper.make_node("BipolarQuant", [w, _const(inits, "wsfc", 1.0)], ["wqfc"], domain=QONNX))
    nodes.append(helper.make_node("MatMul", ["flat", "wqfc"], ["y"]))
    graph = helper.make_graph(nodes, "random_bcnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels[0], size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)])
    model.ir_version = 9
    inputs = (rng.integers(0, 256, (12, channels[0], size, size)) / 255.0).astype(np.float32)
    return _named(model), inputs, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(conv_networks())
def test_simulator_equals_qonnx_on_random_conv_networks(example) -> None:
    test_simulator_equals_qonnx_on_random_networks.hypothesis.inner_test(example)
