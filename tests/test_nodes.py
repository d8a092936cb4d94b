"""How messages name ONNX nodes, with and without a name."""

from __future__ import annotations

import copy

from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.nodes import node_ref


def _graph():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"), helper.make_node("Clip", ["a"], ["b"]),
             helper.make_node("Clip", ["b"], ["y"])]
    return helper.make_graph(nodes, "g", [], [])


def test_named_node_is_name_and_op() -> None:
    graph = _graph()
    assert node_ref(graph, graph.node[0]) == "first (Relu)"


def test_unnamed_node_is_op_and_index_in_graph_or_model() -> None:
    graph = _graph()
    assert node_ref(graph, graph.node[2]) == "Clip #2 (no name)"
    model = ModelWrapper(helper.make_model(graph))
    assert node_ref(model, model.graph.node[1]) == "Clip #1 (no name)"
    assert node_ref(model, copy.deepcopy(model.graph.node[2])) == "Clip #2 (no name)"  # a copy: found by content


def test_node_outside_the_graph_is_named_by_op() -> None:
    assert node_ref(_graph(), helper.make_node("Add", ["p", "q"], ["r"])) == "Add (no name)"
