"""Small graph helpers shared by the streamlining transformations."""

from __future__ import annotations

import numpy as np
from onnx import NodeProto, TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper


def constant(model: ModelWrapper, name: str) -> np.ndarray | None:
    """The initializer behind a tensor name, or None when the tensor is computed."""
    return model.get_initializer(name)


def only_consumer(model: ModelWrapper, tensor: str) -> NodeProto | None:
    """The single node reading ``tensor``; None when there are none, several, or it is a graph output."""
    if tensor in (o.name for o in model.graph.output):
        return None
    consumers = model.find_consumers(tensor)
    return consumers[0] if len(consumers) == 1 else None


def new_tensor(model: ModelWrapper, shape: list[int] | None = None) -> str:
    """A fresh float tensor name, with its shape recorded when known."""
    name = model.make_new_valueinfo_name()
    if shape is not None:
        model.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    return name


def set_constant(model: ModelWrapper, value: np.ndarray) -> str:
    """A fresh initializer holding ``value`` as float32."""
    name = model.make_new_valueinfo_name()
    model.set_initializer(name, np.asarray(value, dtype=np.float32))
    return name


def bypass(model: ModelWrapper, node: NodeProto) -> None:
    """Remove a single-input, single-output node, wiring its consumers to its input."""
    src, dst = node.input[0], node.output[0]
    graph_outputs = [o.name for o in model.graph.output]
    if dst in graph_outputs:
        producer = model.find_producer(src)
        if producer is None:  # input straight to output: keep the tensor, as an Identity
            index = list(model.graph.node).index(node)
            model.graph.node.remove(node)
            model.graph.node.insert(index, helper.make_node("Identity", [src], [dst]))
            return
        producer.output[list(producer.output).index(src)] = dst
        for consumer in model.find_consumers(src):
            consumer.input[list(consumer.input).index(src)] = dst
    else:
        for consumer in model.find_consumers(dst):
            for i, name in enumerate(consumer.input):
                if name == dst:
                    consumer.input[i] = src
    model.graph.node.remove(node)
