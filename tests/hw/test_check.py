"""The dataflow contract: real compiles pass, and each corruption of one is refused in one line naming the node,
by ``check_dataflow``, by the simulator, by the RTL generator and by ``bnnflow simulate``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.boards import ECP5
from bnnflow.hw.check import check_dataflow
from bnnflow.hw.folding import fold_for_fps
from bnnflow.hw.ops.base import DOMAIN
from bnnflow.hw.rtl.generate import generate_rtl
from bnnflow.hw.simulator import Simulator
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.onnx_files import save_model
from tests.hw.conftest import build_dataflow, fresh, graph_of, hw_node, residual_dag


@pytest.fixture(scope="module")
def graphs() -> dict[str, ModelWrapper]:
    """digits (a multi-bit input layer, XNOR layers, an accumulator output) and CNV (windows, pools, a reshape)."""
    return {"digits": build_dataflow("digits_mlp", (1, 8, 8)), "cnv": build_dataflow("cnv", (3, 32, 32))}


def _node(model: ModelWrapper, name: str):
    return next(node for node in model.graph.node if node.name == name)


def _set(model: ModelWrapper, name: str, **attrs) -> None:
    for key, value in attrs.items():
        getCustomOp(_node(model, name)).set_nodeattr(key, value)


def _edit(tensor: str, edit: Callable[[np.ndarray], np.ndarray]) -> Callable[[ModelWrapper], None]:
    return lambda m: m.set_initializer(tensor, edit(m.get_initializer(tensor).copy()).astype(np.float32))


def _at(index: tuple, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def put(array: np.ndarray) -> np.ndarray:
        array[index] = value
        return array
    return put


def _drop_initializer(name: str) -> Callable[[ModelWrapper], None]:
    def drop(model: ModelWrapper) -> None:
        model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == name))
    return drop


def _insert_relu(model: ModelWrapper) -> None:
    node = _node(model, "MVTU_2")
    relu = helper.make_node("Relu", [node.output[0]], ["relu_out"], name="Relu_0")
    _node(model, "MVTU_3").input[0] = "relu_out"
    model.graph.node.insert(3, relu)


def _rename(old: str, new: str) -> Callable[[ModelWrapper], None]:
    def rename(model: ModelWrapper) -> None:
        _node(model, old).name = new
    return rename


def _skip_mvtu_1(model: ModelWrapper) -> None:
    _node(model, "MVTU_2").input[0] = _node(model, "MVTU_0").output[0]


def _set_type(model: ModelWrapper, node: str, dtype: str) -> None:
    _set(model, node, outputDataType=dtype)
    model.set_tensor_datatype(_node(model, node).output[0], DataType[dtype])


def _reshape_to_3d(model: ModelWrapper) -> None:
    reshape = next(node for node in model.graph.node if node.op_type == "Reshape")
    model.set_initializer(reshape.input[1], np.asarray([-1, 128, 2], dtype=np.int64))
    model.set_tensor_shape(reshape.output[0], [1, 128, 2])


# (graph, corruption, text of the one-line error); node names are those `bnnflow compile` gives
BAD_GRAPHS = {
    "xnor-weight-not-a-bit": ("digits", _edit("MVTU_1_weights", _at((3, 7), 5)), "MVTU_1 (MVTU) has weight 5 at [3, 7]"),
    "bipolar-weight-zero": ("digits", _edit("MVTU_0_weights", _at((0, 0), 0)), "BIPOLAR weights are -1 or +1"),
    "weight-shape": ("digits", _edit("MVTU_3_weights", lambda w: w[:127]), "shape [127, 10], not MW x MH = [128, 10]"),
    "missing-weights": ("digits", _drop_initializer("MVTU_3_weights"), "MVTU_3_weights, which is not an initializer"),
    "fractional-threshold": ("digits", _edit("MVTU_1_thresholds", _at((2, 0), 64.5)), "threshold 64.5 at [2, 0]"),
    "infinite-threshold": ("digits", _edit("MVTU_2_thresholds", _at((5, 0), np.inf)), "threshold inf at [5, 0]"),
    "thresholds-beyond-output": ("digits", _edit("MVTU_1_thresholds", lambda t: np.concatenate([t, t + 1], axis=1)),
                                 "outputs 0 .. 2 (2 thresholds per channel from 0), which outputDataType BINARY cannot "
                                 "hold"),
    "threshold-shape": ("digits", _edit("MVTU_1_thresholds", lambda t: t[:64]), "not (128, T) or (1, T)"),
    "pe-not-dividing-mh": ("digits", lambda m: _set(m, "MVTU_1", PE=3), "PE = 3, which does not divide MH = 128"),
    "simd-not-dividing-mw": ("digits", lambda m: _set(m, "MVTU_0", SIMD=5), "SIMD = 5, which does not divide MW = 64"),
    "mw-not-the-input": ("digits", lambda m: _set(m, "MVTU_1", MW=64), "attributes make frames of shape [64]"),
    "xnor-on-codes": ("digits", lambda m: _set(m, "MVTU_0", binaryXnorMode=1), "XNOR mode with UINT8 inputs"),
    "unknown-datatype": ("digits", lambda m: _set(m, "MVTU_1", accDataType="UINT"), "accDataType = 'UINT', not an"),
    "missing-attribute": ("digits", lambda m: _node(m, "MVTU_2").attribute.remove(
        next(a for a in _node(m, "MVTU_2").attribute if a.name == "MH")), "lacks the required attribute MH"),
    "accumulator-beyond-output": ("digits", lambda m: _set_type(m, "MVTU_3", "UINT4"),
                                  "accumulators in [-128, 128], which outputDataType UINT4 cannot hold"),
    "annotation-disagrees": ("digits", lambda m: m.set_tensor_datatype(_node(m, "MVTU_1").output[0], DataType["UINT2"]),
                             "is annotated UINT2"),
    "unknown-op": ("digits", lambda m: setattr(_node(m, "MVTU_3"), "op_type", "MVAU"), "MVTU_3 (MVAU) is not a hardware"),
    "standard-op": ("digits", _insert_relu, "Relu_0 (Relu) is not a hardware op"),
    "unnamed-node": ("digits", _rename("MVTU_1", ""), "MVTU #1 (no name) needs a name"),
    "duplicate-name": ("digits", _rename("MVTU_2", "mvtu_1"), "the name of an earlier node"),
    "skipped-layer": ("digits", _skip_mvtu_1, "the stream act_0 has 2 readers; every stream has one"),
    "window-output-size": ("cnv", lambda m: _set(m, "SlidingWindow_1", OFMDim=[29, 29]),
                           "OFMDim = [29, 29], but IFMDim [30, 30], ConvKernelDim [3, 3] and Stride [1, 1] make [28, 28]"),
    "window-simd": ("cnv", lambda m: _set(m, "SlidingWindow_2", SIMD=5), "SIMD = 5, which does not divide IFMChannels"),
    "pool-larger-than-map": ("cnv", lambda m: _set(m, "StreamingMaxPool_1", PoolDim=[12, 12]), "larger than ImgDim"),
    "pool-pe": ("cnv", lambda m: _set(m, "StreamingMaxPool_0", PE=3), "PE = 3, which does not divide NumChannels = 64"),
    "reshape-not-a-flatten": ("cnv", _reshape_to_3d, "only a flatten (N, ...) -> (N, K) is free"),
}


def _corrupted(graphs: dict[str, ModelWrapper], case: str) -> tuple[ModelWrapper, str]:
    graph, corrupt, needle = BAD_GRAPHS[case]
    model = fresh(graphs[graph])
    corrupt(model)
    return model, needle


@pytest.mark.parametrize("case", list(BAD_GRAPHS))
def test_check_refuses_corrupted_graph_in_one_line(graphs, case: str) -> None:
    model, needle = _corrupted(graphs, case)
    with pytest.raises(UnsupportedGraphError) as refused:
        check_dataflow(model)
    message = str(refused.value)
    assert needle in message and "\n" not in message
    assert message.startswith("dataflow graph: ") and message.endswith("recompile the model with `bnnflow compile`")
    with pytest.raises(UnsupportedGraphError, match="^dataflow graph: "):
        Simulator(model)


@pytest.mark.parametrize("case", [case for case in BAD_GRAPHS if case != "missing-weights"])
def test_cli_simulate_refuses_corrupted_graph(cli, graphs, tmp_path: Path, case: str) -> None:
    model, needle = _corrupted(graphs, case)
    save_model(model, tmp_path / "bad.onnx")
    shape = model.get_tensor_shape(model.graph.input[0].name)[1:]
    np.save(tmp_path / "x.npy", np.zeros((2, *shape), dtype=np.int64))
    result = cli("simulate", str(tmp_path / "bad.onnx"), "--inputs", str(tmp_path / "x.npy"))
    assert result.returncode == 3 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0]


def test_cli_refuses_graph_without_its_weights(cli, graphs, tmp_path: Path) -> None:
    """ONNX's own checker refuses a node reading a tensor nothing defines, as it loads the file (its exit code is
    the loader's), before the contract is checked."""
    model, _ = _corrupted(graphs, "missing-weights")
    save_model(model, tmp_path / "bad.onnx")
    np.save(tmp_path / "x.npy", np.zeros((2, 64), dtype=np.int64))
    result = cli("simulate", str(tmp_path / "bad.onnx"), "--inputs", str(tmp_path / "x.npy"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "MVTU_3_weights" in errors[0]


def test_rtl_generator_refuses_before_writing(graphs, tmp_path: Path) -> None:
    model, needle = _corrupted(graphs, "xnor-weight-not-a-bit")
    with pytest.raises(UnsupportedGraphError, match=re.escape(needle)):
        generate_rtl(model, tmp_path / "rtl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("graph", ["digits", "cnv"])
def test_compiled_graphs_pass_unfolded_and_folded(graphs, graph: str) -> None:
    model = fresh(graphs[graph])
    counts = model.analysis(check_dataflow)
    assert counts["hw_ops"] == sum(node.domain == DOMAIN for node in model.graph.node)
    fold_for_fps(model, 1e5 if graph == "digits" else 2000, 100.0, ECP5)
    assert any(getCustomOp(n).get_nodeattr("SIMD") > 1 for n in model.graph.node if n.op_type == "MVTU")
    check_dataflow(model)


def test_verify_node_is_the_per_node_hook(graphs) -> None:
    model = fresh(graphs["digits"])
    op = getCustomOp(_node(model, "MVTU_1"))
    assert op.verify_node() == [] and op.verify_in_graph(model) == []
    op.set_nodeattr("PE", 3)
    assert op.verify_node() == ["has PE = 3, which does not divide MH = 128"]


def test_thresholds_outside_the_accumulator_range_pass_and_simulate_exactly(graphs) -> None:
    """The RTL clips thresholds to the reachable accumulators, which changes no count: not a rule to enforce."""
    model = fresh(graphs["digits"])
    _edit("MVTU_1_thresholds", lambda t: np.where(np.arange(128)[:, None] % 2, -1000.0, 1e6))(model)
    x = np.random.default_rng(0).integers(0, 256, (16, 64))
    expected = execute(model, x)[model.graph.output[0].name]
    np.testing.assert_array_equal(Simulator(model).run(x), expected)


def test_unsorted_thresholds_count_the_same_and_pass() -> None:
    """Each output counts the thresholds at or below its input, in kernels, simulator and RTL alike, so a row's
    order changes nothing and is not refused."""
    rng = np.random.default_rng(1)
    thresholds = np.sort(rng.integers(-20, 20, (4, 3)), axis=1)
    outputs = []
    for t in (thresholds, thresholds[:, ::-1]):
        node = helper.make_node("Thresholding", ["x", "t"], ["y"], domain=DOMAIN, name="Thresholding_0",
                                NumChannels=4, PE=2, numInputVectors=[3], inputDataType="INT6", outputDataType="UINT2")
        graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])])
        model = ModelWrapper(helper.make_model(graph, opset_imports=[helper.make_opsetid(DOMAIN, 1)]))
        model.set_initializer("t", t.astype(np.float32))
        model.set_tensor_datatype("x", DataType["INT6"])
        model.set_tensor_datatype("y", DataType["UINT2"])
        outputs.append(Simulator(model).run(np.arange(-30, 30).reshape(5, 3, 4)))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert len(np.unique(outputs[0])) > 2


def _fork_join(outputs: int = 2, fork: bool = True) -> ModelWrapper:
    """x -> DuplicateStreams -> (a, b[, c]) -> AddStreams(a, b) -> y; without the fork the join reads x twice."""
    names = ["a", "b", "c"][:outputs]
    nodes = [hw_node("AddStreams", names[:2] if fork else ["x", "x"], ["y"], NumChannels=4, numInputVectors=[3],
                     inputDataType="INT3", input2DataType="INT3", outputDataType="INT4")]
    if fork:
        nodes.insert(0, hw_node("DuplicateStreams", ["x"], names, NumChannels=4, NumOutputStreams=outputs,
                                numInputVectors=[3], inputDataType="INT3", outputDataType="INT3"))
    tensors = {"x": ([3, 4], "INT3"), **{name: ([3, 4], "INT3") for name in names}, "y": ([3, 4], "INT4")}
    return graph_of(nodes, tensors, ["x"], ["y"])


def test_a_fork_and_a_join_pass_and_simulate():
    model = _fork_join()
    assert check_dataflow(model) == {"hw_ops": 2, "reshapes": 0}
    x = np.random.default_rng(3).integers(-4, 4, (10, 3, 4))
    np.testing.assert_array_equal(Simulator(model).run(x), 2 * x)


@pytest.mark.parametrize(("model", "needle"), [
    (lambda: _fork_join(fork=False), "the stream x has 2 readers; every stream has one (a fork is a DuplicateStreams)"),
    (lambda: _fork_join(outputs=3), "the stream c has 0 readers; every stream has one"),
], ids=["two-readers", "no-reader"])
def test_check_refuses_a_stream_without_exactly_one_reader(model, needle) -> None:
    with pytest.raises(UnsupportedGraphError) as refused:
        check_dataflow(model())
    message = str(refused.value)
    assert needle in message and "\n" not in message and message.startswith("dataflow graph: ")


def test_check_refuses_a_node_before_the_nodes_it_reads() -> None:
    model = residual_dag()
    join = next(node for node in model.graph.node if node.op_type == "AddStreams")
    model.graph.node.remove(join)
    model.graph.node.insert(0, join)
    with pytest.raises(UnsupportedGraphError, match="AddStreams_0 .* reads c before any node writes it"):
        check_dataflow(model)
