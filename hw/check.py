"""The contract of a dataflow graph, checked before anything uses one: ``check_dataflow``.

A ``dataflow.onnx`` that ``bnnflow compile`` did not write (edited by hand, by another tool, or corrupted) can
hold what no hardware computes: a 5 among XNOR weights, a fractional threshold, a PE that does not divide the
channels. The simulator, qonnx's executor and the RTL would each make something different of it, silently, so
the simulator and the RTL generator call this first and refuse such a graph in one line that names the node,
what is wrong and the fix.

The graph is a network of streams of ``bnnflow.hw`` ops and flattening ``Reshape``s from its one input to its
one output, its nodes in an order where each follows the nodes it reads (the simulator runs them in that order);
every stream has one writer and one reader (the output none): a fork is a ``DuplicateStreams``, a join an
``AddStreams``. Each op's own rules are its ``verify_node`` and ``verify_in_graph`` (``bnnflow.hw.ops``). The
check reads the graph only and its numeric tests are vectorised, so it costs
milliseconds even on CNV's 2304 x 256 weight matrices.
"""

from __future__ import annotations

import math
import re
from typing import NoReturn

from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.ops import custom_op
from bnnflow.hw.ops.base import DOMAIN, annotation, fits_int32, integer_type
from bnnflow.nodes import node_ref

FIX = "recompile the model with `bnnflow compile`"
#: hardware op names become Verilog instance names and ROM file names (case-insensitively distinct)
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_dataflow(model: ModelWrapper) -> dict[str, int]:
    """Raise ``UnsupportedGraphError`` (one line) at the first broken rule of the dataflow contract; else return
    the counts of checked nodes, as a qonnx analysis function (``model.analysis(check_dataflow)``)."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        _refuse(f"the graph has {len(graph.input)} inputs and {len(graph.output)} outputs; a dataflow graph streams "
                "one input to one output")
    names, hw_count = set(), 0
    written = {graph.input[0].name: None}  # in graph order, so the first stream with a wrong reader count is named
    readers: dict[str, int] = {}
    for node in graph.node:
        ref = node_ref(model, node)
        if node.domain == DOMAIN and node.op_type in custom_op:
            _check_name(node, ref, names)
            op = custom_op[node.op_type](node)
            problems = op.verify_node() or op.verify_in_graph(model)
            hw_count += 1
        elif node.domain == "" and node.op_type == "Reshape":
            problems = _reshape_problems(model, node)
        else:
            _refuse(f"node {ref} is not a hardware op; a dataflow graph holds only {', '.join(custom_op)} and "
                    "Reshape")
        if problems:
            _refuse(f"node {ref} {problems[0]}")
        for name in node.input:
            if model.get_initializer(name) is not None:
                continue
            if name not in written:
                _refuse(f"node {ref} reads {name} before any node writes it; each node must come after the nodes it "
                        "reads")
            readers[name] = readers.get(name, 0) + 1
        for name in node.output:
            if name in written:
                _refuse(f"node {ref} writes {name}, which another node writes too")
            written[name] = None
    if not hw_count:
        _refuse("the graph holds no hardware op")
    _check_input(model, graph.input[0].name)
    output = graph.output[0].name
    if output not in written or output == graph.input[0].name:
        _refuse(f"no node writes the graph's output {output}")
    for name in written:
        count = readers.get(name, 0)
        if name == output and count:
            _refuse(f"the graph's output {name} is also read inside the graph; copy it with a DuplicateStreams")
        if name != output and count != 1:
            _refuse(f"the stream {name} has {count} readers; every stream has one (a fork is a DuplicateStreams)")
    return {"hw_ops": hw_count, "reshapes": len(graph.node) - hw_count}


def _refuse(problem: str) -> NoReturn:
    raise UnsupportedGraphError(f"dataflow graph: {problem}; {FIX}")


def _check_input(model: ModelWrapper, name: str) -> None:
    """The simulator takes integer frames of the input's recorded shape, held in 32 bits."""
    dtype = integer_type(annotation(model, name))
    if dtype is None or not fits_int32(dtype):
        _refuse(f"the graph's input {name} is annotated {annotation(model, name)}, not an integer datatype of at "
                "most 32 bits")
    if not model.get_tensor_shape(name):
        _refuse(f"the graph's input {name} has no recorded shape")


def _check_name(node, ref: str, names: set[str]) -> None:
    """Names are the layers' names in the RTL, its ROM files and the reports: present, identifiers, distinct."""
    if not IDENTIFIER.fullmatch(node.name):
        _refuse(f"node {ref} needs a name that is an identifier (letters, digits, _): it names the layer's RTL "
                "instance and ROM files")
    if node.name.lower() in names:
        _refuse(f"node {ref} has the name of an earlier node (ignoring case); each layer's RTL instance needs its own")
    names.add(node.name.lower())


def _reshape_problems(model: ModelWrapper, node) -> list[str]:
    """A reshape between layers is a flatten (N, ...) -> (N, K): the simulator flattens, whatever the target."""
    if len(node.input) != 2 or len(node.output) != 1 or model.get_initializer(node.input[1]) is None:
        return ["is not a Reshape of its input by a constant shape"]
    before, after = model.get_tensor_shape(node.input[0]), model.get_tensor_shape(node.output[0])
    if not before or not after or list(after[1:]) != [math.prod(before[1:])]:
        return [f"reshapes {before} to {after}; between hardware layers only a flatten (N, ...) -> (N, K) is free"]
    if annotation(model, node.output[0]) != annotation(model, node.input[0]):
        return [f"turns {annotation(model, node.input[0])} into {annotation(model, node.output[0])}, but a reshape "
                "keeps its values"]
    return []
