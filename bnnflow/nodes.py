"""How user-facing messages name an ONNX node, so that a node without a name can still be found."""

from __future__ import annotations

from onnx import GraphProto, NodeProto
from qonnx.core.modelwrapper import ModelWrapper


def node_ref(graph: GraphProto | ModelWrapper, node: NodeProto) -> str:
    """``name (OpType)``, or ``OpType #i (no name)`` with the node's index in ``graph``: ONNX allows empty names,
    and other exporters (and graph transformations) leave them empty."""
    if node.name:
        return f"{node.name} ({node.op_type})"
    nodes = list(graph.graph.node if isinstance(graph, ModelWrapper) else graph.node)
    index = next((i for i, other in enumerate(nodes) if other is node), None)
    if index is None:  # a copy of the node: find it by content
        index = next((i for i, other in enumerate(nodes) if other == node), None)
    return f"{node.op_type} #{index} (no name)" if index is not None else f"{node.op_type} (no name)"
