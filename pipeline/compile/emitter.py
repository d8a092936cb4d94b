"""The graph the compiler writes: nodes, constants, shapes and datatypes, collected and turned into a model."""

from __future__ import annotations

import numpy as np
from onnx import AttributeProto, TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

QONNX_DOMAIN = "qonnx.custom_op.general"


class Emitter:
    """Collects a new graph; every tensor name it hands out is fresh."""

    def __init__(self, taken: set[str]) -> None:
        self.nodes: list = []
        self.initializers: dict[str, np.ndarray] = {}
        self.datatypes: dict[str, DataType] = {}
        self.shapes: dict[str, list[int]] = {}
        self.taken = set(taken)
        self.counts: dict[str, int] = {}

    def fresh(self, hint: str) -> str:
        index = self.counts.get(hint, 0)
        while f"{hint}_{index}" in self.taken:
            index += 1
        self.counts[hint] = index + 1
        self.taken.add(f"{hint}_{index}")
        return f"{hint}_{index}"

    def const(self, value: np.ndarray, hint: str = "const", dtype: DataType | None = None,
              numpy_dtype: type = np.float32) -> str:
        name = self.fresh(hint)
        self.initializers[name] = np.asarray(value, dtype=numpy_dtype)
        if dtype is not None:
            self.datatypes[name] = dtype
        return name

    def node(self, op: str, inputs: list[str], hint: str, *, domain: str = "", output: str | None = None,
             shape: list[int] | tuple[int, ...] | None = None, dtype: DataType | None = None, name: str | None = None,
             **attrs) -> str:
        """Add a node with one output (``output``, or a fresh name); returns the output's name."""
        out = output or self.fresh(hint)
        self.taken.add(out)
        node = helper.make_node(op, inputs, [out], name=name or self.fresh(f"{op}"), domain=domain)
        for key, value in attrs.items():  # explicit type: onnx cannot infer one from an empty list
            kind = AttributeProto.INTS if isinstance(value, list) and all(isinstance(v, int) for v in value) else None
            node.attribute.append(helper.make_attribute(key, value, attr_type=kind))
        self.nodes.append(node)
        if shape is not None:
            self.shapes[out] = [int(d) for d in shape]
        if dtype is not None:
            self.datatypes[out] = dtype
        return out

    def copy(self, node, source: ModelWrapper) -> None:
        """Replay a node of model.qonnx as it is, with the constants it reads."""
        self.nodes.append(node)
        self.taken.update(node.output)
        for name in node.input:
            value = source.get_initializer(name) if name else None
            if value is not None:
                self.initializers[name] = value
        for name in node.output:
            shape = source.get_tensor_shape(name)
            if shape is not None:
                self.shapes[name] = list(shape)

    def model(self, source: ModelWrapper, inputs: list, outputs: list) -> ModelWrapper:
        """The collected graph, reading ``inputs`` and writing ``outputs`` (value infos of model.qonnx)."""
        graph = helper.make_graph(self.nodes, "bnnflow_streamlined", inputs, outputs)
        onnx_model = helper.make_model(graph, producer_name="bnnflow", opset_imports=list(source.model.opset_import))
        onnx_model.ir_version = source.model.ir_version
        if not any(o.domain == QONNX_DOMAIN for o in onnx_model.opset_import):
            onnx_model.opset_import.append(helper.make_opsetid(QONNX_DOMAIN, 1))
        model = ModelWrapper(onnx_model)
        for name, value in self.initializers.items():
            model.set_initializer(name, value)
        declared = {i.name for i in [*inputs, *outputs]}
        for name, shape in self.shapes.items():
            if model.get_initializer(name) is None and name not in declared:
                model.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        for name, dtype in self.datatypes.items():
            model.set_tensor_datatype(name, dtype)
        return model
